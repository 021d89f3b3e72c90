// Renaming an image and every backing string that names it: the operation
// behind `mv POOL/A POOL/B` in the mount (DESIGN section 2).
//
// Crash-safe order: the new name is hard-linked to the image, the directory
// is fsync'ed, each dependent overlay's header is rewritten (one pwrite +
// fsync each), then the old name is unlinked and its directory fsync'ed. A
// crash at any point leaves every chain resolvable: before the unlink both
// names are the same inode, so an overlay pointing at either name sees the
// same bytes. On a file system without hard links the image is renamed
// first (renameat2 RENAME_NOREPLACE), which narrows but cannot close the
// window in which unrewritten overlays point at a missing name.
//
// Thread-safety: safe to call concurrently if the inspector is.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/status.h"
#include "core/write/remove.h"

namespace chainfs::core {

// One overlay whose backing string changes with the rename.
struct BackingRewrite {
  std::string path;                           // the overlay
  std::string old_backing;                    // as recorded before
  std::string new_backing;                    // to record
  std::optional<std::string> backing_format;  // kept as recorded
  FileStat stat;                              // the overlay's stat when planned
};

// Everything a rename will do, checked before anything changes.
struct RenamePlan {
  std::string old_path;
  std::string new_path;
  std::vector<BackingRewrite> rewrites;
  // When the image moves to another directory and records a relative
  // backing, its own string changes too: first to the absolute path of its
  // backing (valid under both names, so every step stays resolvable), and
  // after the old name is gone to the path relative to the new directory.
  std::optional<BackingRewrite> own_absolute;  // path = old_path
  std::optional<BackingRewrite> own_relative;  // path = new_path
};

// Returns `path` with "." and ".." components and repeated slashes resolved
// lexically ("/a/./b/../c" -> "/a/c"); a ".." above the root stays at the
// root. Pure.
std::string NormalizeDots(std::string_view path);

// Returns the relative path that leads from directory `from_dir` to `to`
// (both absolute; compared lexically after NormalizeDots). Pure.
std::string RelativePath(const std::string& from_dir, const std::string& to);

// Returns the backing string an overlay at `overlay_path` should record after
// the image it names with `old_backing` moves from `old_path` to `new_path`,
// keeping the style: an absolute string stays absolute and a relative one
// relative. When the string spells the old path plainly (lexically), only
// its last component changes if the directory stays the same; otherwise an
// absolute string becomes `new_path` and a relative one the relative path
// from the overlay's directory. A relative result whose first component
// contains ':' gets a "./" prefix so it cannot read as a protocol.
// kInvalidArgument if the result is not a string qemu can record. Pure.
Result<std::string> RenamedBackingString(const std::string& overlay_path,
                                         const std::string& old_backing,
                                         const std::string& old_path, const std::string& new_path);

// Checks a rename of the image `old_path` to `new_path` (absolute paths) and
// plans the rewrites of the dependents among `candidates` (absolute paths of
// every volume of the mounted pools). Errors: kNotFound if `old_path` is
// missing or the new directory is; kExists if `new_path` exists; kCrossDevice
// if the two directories are on different file systems; kBusy if the image
// or a dependent is in use, or a chain reaches the image through an overlay
// that is not among the candidates (it could not be rewritten);
// kUnsupported if a dependent is not qcow2 or names the image in a json:
// string; LoopError (ELOOP) if the image's own chain ends at a missing file
// that `new_path` would be (the chain would come back to the image).
// Changes nothing.
Result<RenamePlan> PlanRename(ImageInspector& inspector, const std::string& old_path,
                              const std::string& new_path,
                              const std::vector<std::string>& candidates);

// Carries out a plan in the crash-safe order above (with the image's own
// backing string made absolute first and relative last, see RenamePlan). If a rewrite fails, the
// rewrites already done are undone and the new name removed, so the error
// leaves things as they were (kExists, kCrossDevice, kBusy and the writer's
// errors). Clears the inspector's cache.
Status ExecuteRename(ImageInspector& inspector, const RenamePlan& plan);

// Plans and executes in one call.
Status RenameImage(ImageInspector& inspector, const std::string& old_path,
                   const std::string& new_path, const std::vector<std::string>& candidates);

}  // namespace chainfs::core
