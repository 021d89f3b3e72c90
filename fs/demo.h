// `chainfs --demo`: a small sample pool built with qemu-img.
#pragma once

#include <string>

#include "core/status.h"

namespace chainfs::fs {

// Creates a temporary folder (under $TMPDIR or /tmp) holding:
//   base.raw <- mid.qcow2 <- top.qcow2    a healthy 3-image chain
//   noformat.qcow2                         overlay of mid.qcow2 whose backing
//                                          format is not recorded
//   orphan.qcow2                           overlay of a missing gone.qcow2
// Returns its absolute path. Needs qemu-img in PATH; kIo / kNotFound with
// the reason otherwise (the folder is removed again on failure).
core::Result<std::string> MakeDemoPool();

// Removes a folder made by MakeDemoPool (its files, then itself).
void RemoveDemoPool(const std::string& dir);

// Removes the backing-format header extension of the qcow2 image at `path`
// (in place, one pwrite + fsync), making an image like those written before
// QEMU recorded backing formats. kCorrupt if the header is not a qcow2
// header this code understands, kNotFound if it has no such extension.
core::Status StripQcow2BackingFormat(const std::string& path);

}  // namespace chainfs::fs
