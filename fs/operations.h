// The FUSE low-level callbacks, all in one place (STYLE.md "Boundaries").
// Each one maps the inode to a NodeKey, calls the Tree, and replies; every
// callback is guarded so that no exception reaches libfuse.
#pragma once

#include "fs/fuse_api.h"

namespace chainfs::fs {

// Returns the operations table; userdata must be a FsState*.
const struct fuse_lowlevel_ops& MakeOperations();

}  // namespace chainfs::fs
