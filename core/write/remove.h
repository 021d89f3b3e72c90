// Who depends on an image, and deleting an image nobody depends on: the
// operation behind `rmdir POOL/VOL` in the mount (DESIGN section 2). The
// dependent search is shared with renames (core/write/rename.h).
//
// Thread-safety: safe to call concurrently if the inspector is
// (ImageInspector is). Nothing here holds a lock across calls, so a QEMU or
// another writer starting between the checks and the change is caught only
// by the OFD locks the writer takes (see in_use.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/io/file.h"
#include "core/status.h"

namespace chainfs::core {

// An image whose own header records, as its backing, the image in question.
struct Dependent {
  std::string path;                           // the overlay, as given in the candidates
  std::string backing;                        // its backing string, exactly as recorded
  std::optional<std::string> backing_format;  // as recorded (nullopt: none recorded)
  std::string format;                         // the overlay's own (probed) format
  bool local = false;                         // the string is a plain relative/absolute path
  FileStat stat;                              // the overlay's stat
};

// A candidate whose resolved chain passes through the image in question.
struct ChainUser {
  std::string volume;     // the candidate (top of the chain)
  int index = 0;          // chain index of the image in that chain (>= 1)
  std::string above;      // path of chain element index-1 (the image's direct overlay)
  FileIdentity above_id;  // its identity (dev and ino are what matter)
};

// Returns true if two identities name the same file (same dev and ino).
inline bool SameFile(const FileIdentity& a, const FileIdentity& b) {
  return a.dev == b.dev && a.ino == b.ino;
}

// Finds the candidates (absolute paths) whose header records a backing that
// is the file at `image_path` (compared by dev and ino, so any spelling of
// the path matches). Candidates that cannot be opened or parsed are skipped;
// so is the image itself. kNotFound if `image_path` does not exist.
Result<std::vector<Dependent>> FindDependents(ImageInspector& inspector,
                                              const std::string& image_path,
                                              const std::vector<std::string>& candidates);

// Resolves the chain of every candidate and returns one entry per candidate
// whose chain contains the file at `image_path` below its top. kNotFound if
// `image_path` does not exist.
Result<std::vector<ChainUser>> FindChainUsers(ImageInspector& inspector,
                                              const std::string& image_path,
                                              const std::vector<std::string>& candidates);

// The most dependents a refusal names one by one; the rest are counted.
inline constexpr size_t kMaxDependentsNamed = 10;

// Returns the reason a removal of `path` is refused, naming every
// dependent: the direct ones (`direct`, the image's overlays), then the
// other `users` (chains that reach it further down) with their chain index;
// at most kMaxDependentsNamed, then "and N more". Empty when both lists are
// empty. Pure.
std::string DependentsReason(const std::string& path, const std::vector<Dependent>& direct,
                             const std::vector<ChainUser>& users);

// Deletes the image at `path` (unlink, then fsync of its directory). kBusy if
// a QEMU holds its image locks or any candidate uses it as a backing (directly
// or further down its chain), naming them (DependentsReason); kNotFound if it
// does not exist; kIo with errno otherwise. Nothing changes on any error.
Status RemoveImage(ImageInspector& inspector, const std::string& path,
                   const std::vector<std::string>& candidates);

}  // namespace chainfs::core
