// The write side of the mount (DESIGN section 2) without FUSE: each file
// operation that changes images, as a plain call on NodeKeys that goes
// through the engine (core/write/*) and returns a Status. operations.cc only
// translates requests and replies.
//
// Every operation here logs one line to the event log (and so to the
// daemon's stderr in the foreground): "ok" with what was done, or the errno
// name with the one-line reason of the refusal. With -o ro every one
// returns EROFS. Changes made by the mount are serialised by one mutex
// (WriteState::change_mu_), so that, e.g., an `ln -s` onto an image cannot
// slip in between a rename's dependent scan and its unlink; kernel caches
// are refreshed by the watcher thread from the inotify events of the pool
// directories, never from a request handler.
//
// Writable virtual files: VOL/backing, VOL/backing_format, VOL/rebase (whose
// value starts a background rebase, fs/rebase_jobs.h) and the write-only
// POOL/.create. The mount has no open handles (the kernel opens files
// itself, see fs/kernel_cache.h), so a value is applied by the write(2)
// that carries it, and that write gets the errno -- which is what reaches
// `echo` and every other writer:
//  - backing, backing_format, rebase: each write(2) is one value, as in
//    sysfs; one trailing newline is stripped.
//  - .create: a document may take several writes (at increasing offsets; a
//    write at offset 0 starts a new one). Since no close is seen, every
//    write decides (core::ClassifyVolumeXmlPrefix): the write that
//    completes the document applies it; a write after which the bytes can
//    no longer become a <volume> document (not starting with '<', a root
//    element other than <volume>, an XML error before the last unfinished
//    construct, more than 1 MiB) fails with EINVAL and the parser's reason,
//    whatever the size; so does a short write (under 4 KiB: the last one a
//    tool makes) after which the document is still incomplete. The one case
//    left undetected is a well-formed start of a <volume> document cut
//    short whose last write had 4 KiB or more: it waits for bytes that
//    never come (nothing is created, and the next document replaces it).
// Truncation (O_TRUNC) is accepted and changes nothing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/status.h"
#include "fs/node.h"
#include "fs/tree.h"

namespace chainfs::fs {

class FsState;

// The name of the write-only file of each pool that creates volumes from XML.
inline constexpr const char* kCreateFileName = ".create";
// Chain index that marks the placeholder node replied to a symlink request.
inline constexpr int kPendingLinkIndex = -2;
// The most bytes one handle collects (a volume XML; backing strings are far
// shorter).
inline constexpr size_t kMaxWriteBytes = 1 << 20;

// Returns the key of POOL/.create.
NodeKey CreateFileKey(const std::string& pool);
// Returns true for POOL/.create.
bool IsCreateFileKey(const NodeKey& key);
// Returns true for the files that accept writes: VOL/backing,
// VOL/backing_format, VOL/rebase, POOL/.create.
bool IsWritableFile(const NodeKey& key);
// Returns true for the placeholder a symlink request is answered with: the
// kernel insists that the entry replied to symlink(2) be a symlink, while the
// name becomes a volume directory; the placeholder has its own inode and a
// zero timeout, so the next lookup finds the directory.
bool IsPendingLinkKey(const NodeKey& key);

// Documents being written to POOL/.create, and the lock that serialises
// the mount's changes. Thread-safe. Lock order: change_mu_, then mu_; no
// lock is held while replying to the kernel.
class WriteState {
 public:
  // The document being written to a .create file.
  struct Pending {
    std::string buf;
  };
  // Runs `fn(pending)` on the document of inode `ino` under the lock.
  template <typename Fn>
  auto WithPending(uint64_t ino, Fn&& fn) {
    std::lock_guard<std::mutex> lock(mu_);
    return fn(pending_[ino]);
  }
  // Forgets the document of `ino`.
  void Drop(uint64_t ino) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(ino);
  }

  // Serialises changes made through the mount (see top of file).
  std::mutex& change_mu() { return change_mu_; }

 private:
  std::mutex change_mu_;
  std::mutex mu_;
  std::unordered_map<uint64_t, Pending> pending_;  // guarded by mu_
};

// Returns the attributes of `key` as the mount shows them: the read side's
// (Tree::GetAttr) plus the write bits of the writable nodes (pool
// directories follow their folder, backing/backing_format their image),
// and those of POOL/.create and the symlink placeholder. A read-only mount
// shows the same bits: its refusals (EROFS) come from the daemon, logged.
core::Result<NodeAttr> AttrWithWrites(FsState& fs, const NodeKey& key);

// Returns the key of `name` in `parent` when it is a node of the write side
// (POOL/.create); nullopt to let the read side look it up.
std::optional<NodeKey> LookupWriteNode(const NodeKey& parent, const std::string& name);

// Checks that `caller` may write file `key` at all: EROFS on a read-only
// mount, EACCES for the files that take no writes and for callers who may
// not change the image (or, for .create, the pool folder). Logged.
core::Status CheckWritable(FsState& fs, const Caller& caller, const NodeKey& key);
// Takes `data` written at `offset` to file `key` (inode `ino`) and applies
// the value it carries or completes (see top of file). Returns the count of
// bytes taken; a refusal is returned (and logged) here.
core::Result<size_t> WriteFile(FsState& fs, const Caller& caller, uint64_t ino,
                               const NodeKey& key, std::string_view data, off_t offset);
// Truncation of file `key` (open with O_TRUNC, truncate(2)): to 0 it starts
// a new .create document and is otherwise accepted without effect; other
// sizes are EINVAL, read-only files EACCES, a read-only mount EROFS.
core::Status TruncateFile(FsState& fs, uint64_t ino, const NodeKey& key, uint64_t size);

// `ln -s TARGET POOL/NAME`: creates NAME as a qcow2 v3 overlay of TARGET (a
// volume of the same pool, ../POOL2/VOL, a path inside the mount, or an
// absolute host path). Returns the placeholder key to reply with.
core::Result<NodeKey> SymlinkOverlay(FsState& fs, const Caller& caller, const NodeKey& parent,
                                     const std::string& name, const std::string& target);
// `mv POOL/A POOL2/B`: renames the image and rewrites its dependents.
core::Status RenameVolume(FsState& fs, const Caller& caller, const NodeKey& parent,
                          const std::string& name, const NodeKey& new_parent,
                          const std::string& new_name, unsigned int flags);
// `rmdir POOL/VOL`: deletes the image when nothing depends on it.
core::Status RemoveVolume(FsState& fs, const Caller& caller, const NodeKey& parent,
                          const std::string& name);
// Refuses an operation the mount does not offer (mkdir, unlink, creating
// other files): EROFS on a read-only mount, else EPERM with `reason`;
// logged under `op`.
core::Status RefuseChange(FsState& fs, const char* op, const std::string& path,
                          const std::string& reason);

// Applies a complete value to a writable file: a retarget for backing, a
// backing format for backing_format, the start of a background rebase for
// rebase, a volume creation for .create. The trailing newline of a backing
// or rebase value is stripped. Logged.
core::Status ApplyValue(FsState& fs, const Caller& caller, const NodeKey& key,
                        std::string_view value);

// Returns true if `caller` may write a file with this owner and mode, by
// the owner/group/other rule (uid 0 always may).
bool CallerCanWrite(const Caller& caller, uint32_t uid, uint32_t gid, uint32_t mode);

}  // namespace chainfs::fs
