// The one place where an engine Status becomes an errno (DESIGN section 5).
#pragma once

#include "core/status.h"

namespace chainfs::fs {

// Returns the positive errno that reports `status` to the kernel; 0 for ok.
// kIo carries its own saved errno (EIO when none was saved).
int ErrnoFromStatus(const core::Status& status);

// Names an errno for the log ("ENOENT"); "ok" for 0.
const char* ErrnoName(int err);

}  // namespace chainfs::fs
