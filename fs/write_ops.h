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
// value starts a background job, fs/rebase_jobs.h) and the write-only
// POOL/.create. Their bytes are collected per open handle. A value is
// applied as soon as it is complete (a line ending in "\n" for backing and
// backing_format; a well-formed XML document for .create), so the write(2)
// that completes it gets the errno -- this is what reaches `echo`, a shell
// builtin whose own close of the redirection is silent. Whatever is still
// pending is applied at flush (close(2)), whose errno reaches tools that check
// close, such as cat; what is still pending at release is applied and only
// logged.
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

// Open files of the writable virtual files, and the lock that serialises the
// mount's changes. Thread-safe. Lock order: change_mu_, then mu_, then a
// handle's mu; no lock is held while replying to the kernel.
class WriteState {
 public:
  // Handle numbers have this bit set, so they never collide with the read
  // side's HandleTable numbers.
  static constexpr uint64_t kHandleBit = uint64_t{1} << 62;
  // Returns true if `fh` was handed out by this table.
  static bool Owns(uint64_t fh) { return (fh & kHandleBit) != 0; }

  // One open file.
  struct Handle {
    NodeKey key;
    Caller caller;           // who opened it: changes are made on their behalf
    std::mutex mu;           // guards the fields below
    std::string buf;         // bytes written since the last apply
    uint64_t base = 0;       // file offset of buf[0]
    bool dirty = false;      // buf holds bytes not yet applied
    bool truncated = false;  // opened with O_TRUNC
    bool wrote = false;      // received at least one write
  };

  // Stores a new handle; returns its number.
  uint64_t Add(const NodeKey& key, const Caller& caller, bool truncated);
  // Returns the handle, or null if unknown.
  std::shared_ptr<Handle> Get(uint64_t fh) const;
  // Forgets a handle and returns it (null if unknown).
  std::shared_ptr<Handle> Remove(uint64_t fh);
  // Returns how many handles are open.
  size_t size() const;

  // Serialises changes made through the mount (see top of file).
  std::mutex& change_mu() { return change_mu_; }

 private:
  std::mutex change_mu_;
  mutable std::mutex mu_;
  uint64_t next_ = 1;                                              // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_;  // guarded by mu_
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

// Opens a writable file for writing (`flags` as open(2) gives them).
// EROFS/EACCES/ENOENT as statuses. Returns the handle number.
core::Result<uint64_t> OpenForWrite(FsState& fs, const Caller& caller, const NodeKey& key,
                                    int flags);
// Stores `data` written at `offset` into handle `fh`, then applies a value
// that is now complete. Returns the count of bytes taken; an apply error is
// returned (and logged) here, and the value is consumed.
core::Result<size_t> WriteToHandle(FsState& fs, uint64_t fh, std::string_view data, off_t offset);
// Applies what handle `fh` still holds (close(2) of one descriptor).
core::Status FlushHandle(FsState& fs, uint64_t fh);
// Applies what is still pending and forgets the handle (errors are logged).
void ReleaseHandle(FsState& fs, uint64_t fh);
// Truncates a writable file to `size` (only 0 is meaningful: it empties
// the handle's buffer). `fh` is 0 when the truncation has no open file.
core::Status TruncateWritable(FsState& fs, const NodeKey& key, uint64_t fh, uint64_t size);

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
