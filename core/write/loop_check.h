// Loop refusals for every write that sets a backing reference (DESIGN
// section 2): a retarget (`echo PATH > VOL/backing`, `chainctl rebase -u`),
// a safe rebase, a new overlay (`ln -s`, `.create`, `chainctl create`) and a
// rename that gives an image the name a dangling backing string spells.
// A loop left on disk makes `qemu-img check` spin at 100% CPU, so none of
// them may close one.
//
// Thread-safety: safe to call concurrently if the inspector is.
#pragma once

#include <optional>
#include <string>

#include "core/chain/inspector.h"
#include "core/io/file.h"
#include "core/status.h"

namespace chainfs::core {

// The image whose backing is being set, as CheckNoLoop sees it.
struct LoopSubject {
  std::string path;                        // as the caller names it (for messages)
  std::optional<FileIdentity> id;          // nullopt for an image not created yet
  std::optional<std::string> future_path;  // the name it will have (new image, rename)
};

// Builds the refusal of a loop: kIo carrying ELOOP (Code has no loop code),
// which the mount returns as ELOOP.
Status LoopError(std::string message);

// Returns true for a status built by LoopError.
bool IsLoopError(const Status& s);

// Walks the chain that the file `backing` (absolute), opened as `format`
// ("" probes it), gives the subject, the way QEMU opens it: each element's
// recorded backing format, or a probe where none is recorded (QEMU probes;
// the trust rule's stops do not apply, since a loop must be found wherever
// QEMU would run into it), up to raw, a missing file, a network source or
// an image without a backing. Refuses with LoopError, naming `shown` (the
// backing as the user gave it), when the walk reaches the subject (by
// device and inode, so any name, hard link or symlink counts), reaches a
// missing file that `future_path` would fill (the same directory and name,
// dangling symlinks followed), loops by itself, or is longer than
// kMaxLoopWalk (treated as a loop, as the kernel treats too many symlinks).
// Ok otherwise, including when an element cannot be opened (other checks
// report that).
Status CheckNoLoop(ImageInspector& inspector, const LoopSubject& subject, const std::string& shown,
                   const std::string& backing, const std::string& format);

// The longest walk CheckNoLoop makes (five times the depth QEMU and libvirt
// accept).
inline constexpr int kMaxLoopWalk = 1000;

}  // namespace chainfs::core
