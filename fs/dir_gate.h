// DirGate: the requests in flight on each directory and file inode, so that
// kernel invalidations never wait on a lock that a request the daemon is
// serving holds.
//
// libfuse documents that fuse_lowlevel_notify_inval_entry must not be called
// in the execution path of a related operation: the kernel takes the parent
// directory's inode lock for it, and LOOKUP, SYMLINK, RENAME, RMDIR, READDIR
// and the like are sent with that lock held. A notification sent then blocks
// until the request is answered; if the daemon is killed meanwhile, the
// notifying thread stays in uninterruptible sleep, the process never exits,
// /dev/fuse is never closed and the mount is wedged for good. Likewise an
// inode invalidation that drops pages waits for the page locks a READ in
// flight holds.
//
// So request handlers hold a Scope on the directory (or file) they are about
// until their reply has gone; the watcher defers an entry invalidation for
// a busy directory and sends it when the directory's last request has
// answered, and drops only attributes (not pages) of a file being read.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace chainfs::fs {

// Thread-safe. Lock order: mu_ only; the idle callback runs unlocked.
class DirGate {
 public:
  DirGate() = default;
  DirGate(const DirGate&) = delete;
  DirGate& operator=(const DirGate&) = delete;

  // Marks a request on `ino` as in flight for its lifetime; destroy it
  // after the reply. Holds nothing for ino 0.
  class Scope {
   public:
    Scope(DirGate& gate, uint64_t ino);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    DirGate& gate_;
    uint64_t ino_;
  };

  // Sets what runs (on the thread whose request ended) when a directory
  // with deferred entries becomes idle; it must only post work elsewhere.
  void SetIdleCallback(std::function<void()> callback);

  // Returns true if a request on `ino` is in flight.
  bool Busy(uint64_t ino) const;
  // If `dir` is busy, keeps (dir, name) for later and returns true.
  bool DeferIfBusy(uint64_t dir, const std::string& name);
  // Returns and forgets the deferred entries of directories now idle.
  std::vector<std::pair<uint64_t, std::string>> TakeIdleDeferred();
  // Returns how many entries wait for their directory.
  size_t deferred() const;

  // Records that the kernel dropped its entry `name` of `dir` itself (an
  // rmdir through the mount): no invalidation is needed for it until the
  // name is looked up again (ClearDropped).
  void NoteDropped(uint64_t dir, const std::string& name);
  // Forgets a NoteDropped mark (the kernel has a new entry for the name).
  void ClearDropped(uint64_t dir, const std::string& name);
  // Returns true if (dir, name) carries a NoteDropped mark.
  bool Dropped(uint64_t dir, const std::string& name) const;

 private:
  void Enter(uint64_t ino);
  void Leave(uint64_t ino);

  mutable std::mutex mu_;
  std::map<uint64_t, uint32_t> busy_;                    // guarded by mu_
  std::set<std::pair<uint64_t, std::string>> deferred_;  // guarded by mu_
  std::set<std::pair<uint64_t, std::string>> dropped_;   // guarded by mu_
  std::atomic<size_t> dropped_count_{0};                 // dropped_.size(), read unlocked
  std::function<void()> on_idle_;                        // guarded by mu_
};

}  // namespace chainfs::fs
