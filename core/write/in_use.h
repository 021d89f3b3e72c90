// In-use detection through QEMU's image locks (DESIGN section 2).
//
// QEMU's file driver takes open-file-description (OFD) byte-range locks on
// the image: one byte at 100 + bit for each permission it holds and one at
// 200 + bit for each permission it does not share; libvirt's virtlockd
// locks byte 0. Any lock on those bytes means a QEMU (or libvirt) holds the
// image, so the engine leaves it alone, exactly as qemu-img refuses to.
//
// Thread-safety: all functions are safe to call concurrently.
#pragma once

#include <string>
#include <vector>

#include "core/chain/chain.h"
#include "core/status.h"

namespace chainfs::core {

// Reports whether another open file description holds a lock on QEMU's or
// libvirt's lock bytes of the open file `fd` (F_OFD_GETLK with a write-lock
// probe). A file system without lock support counts as not in use, as QEMU
// then runs without locks too. kIo on other failures.
Result<bool> FdInUse(int fd);

// Reports whether the image at `path` is in use (see FdInUse). kNotFound /
// kPermissionDenied / kIo when it cannot be opened.
Result<bool> ImageInUse(const std::string& path);

// Reports whether another open file description holds the lock byte of
// QEMU's WRITE permission (101) or libvirt's byte 0 on the open file `fd`:
// a process that may change the image's content while it is read (a
// running domain's top). A QEMU that only reads the image (a backing file)
// does not count. Same conventions as FdInUse.
Result<bool> FdHeldForWriting(int fd);
// The same by path (opened read-only, non-blocking).
Result<bool> ImageHeldForWriting(const std::string& path);
// Returns the indexes of the elements of `chain`, from element `from`
// down, whose files are held for writing (local files that were opened;
// an element that cannot be checked is not listed).
std::vector<int> ElementsHeldForWriting(const Chain& chain, size_t from = 0);

// Returns kBusy naming `path` if the image is in use, its errors otherwise.
Status CheckNotInUse(const std::string& path);

// Takes OFD write locks on the lock bytes of `fd` for the duration of an
// update, so that a QEMU starting meanwhile fails to lock instead of opening
// a half-rewritten header. kBusy (naming `path`) if any of them is held by
// someone else. The locks go away when the descriptor is closed. No-op on
// file systems without lock support.
Status LockForUpdate(int fd, const std::string& path);

}  // namespace chainfs::core
