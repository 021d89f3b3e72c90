// KernelCache: the daemon's record of what the kernel may cache, so that the
// kernel can keep entries, attributes, file pages and directory listings for
// as long as nothing changes, and be told exactly which ones to drop when
// something does.
//
// The mount runs without OPEN, OPENDIR and FLUSH requests (the kernel's
// "no open" mode): a warm `cat` is served entirely by the kernel. What makes
// that correct:
//  - Versions. Every file node's attribute reply is built from content the
//    daemon keeps per inode (Update): its size is the content's length, and
//    its mtime changes whenever the content does, so the kernel (auto_inval_
//    data) drops stale pages at the next attribute refresh; READ serves the
//    kept bytes, which are the ones whose length the kernel holds.
//  - A byte budget. The kept bytes of all inodes together stay under
//    kContentBudget: past it, the least recently used content is dropped
//    and only its length, digest and mtime stay. A READ of such an inode
//    renders it again (Tree), and Update finds it equal by digest and keeps
//    its mtime, so the kernel's copy stays valid; a walk over a big pool
//    (find, ls -l -R) costs no more daemon memory than the budget.
//  - Invalidation. Images map to the volumes whose chains run through them
//    (RecordChain); a change of an image (inotify, or the mount's own write
//    side) invalidates the inodes of exactly those volumes
//    (InvalidateKernelImages).
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/tree.h"

namespace chainfs::fs {

class FsState;

// Thread-safe. Lock order: mu_ only; never held while calling the kernel.
class KernelCache {
 public:
  struct Version {
    std::string bytes;
    struct timespec mtime {};
  };
  // How long the content a read from offset 0 got stays the one later
  // reads of the same file continue (see Pin).
  static constexpr std::chrono::milliseconds kPinFor{2000};
  // Bytes of content kept in all (VmHWM stays bounded on walks of big pools).
  static constexpr size_t kContentBudget = size_t(8) << 20;

  explicit KernelCache(size_t budget = kContentBudget) : budget_(budget) {}

  // Records `content` as what `ino` now holds and returns it with the mtime
  // to report: `natural` the first time; after that, the same time while the
  // content stays the same, and a new one, later than every time handed out
  // before, when it changed.
  Version Update(uint64_t ino, std::string content, struct timespec natural);
  // Returns the content last recorded for `ino`, if it is still kept (see
  // kContentBudget; a dropped one is rendered again and given to Update).
  std::optional<Version> Current(uint64_t ino) const;
  // Returns the bytes of content kept in all.
  size_t content_bytes() const;
  // Drops what is kept for `ino` (the kernel forgot it).
  void Forget(uint64_t ino);

  // The listing of directory `ino` taken by its last READDIR at offset 0
  // that did not fit in one reply; later offsets continue it (READDIR
  // comes without open handles). A null listing forgets it.
  void SetListing(uint64_t ino, std::shared_ptr<const std::vector<DirEntry>> listing);
  std::shared_ptr<const std::vector<DirEntry>> Listing(uint64_t ino) const;

  // Records that the nodes under `volume_prefix` (EncodePrefix(pool, vol))
  // were described from a chain with these elements (normalized paths).
  // `snapshot` identifies the chain: a repeated call for the same one is a
  // cheap no-op.
  void RecordChain(const std::string& volume_prefix, const void* snapshot,
                   const std::function<std::vector<std::string>()>& paths);
  // Returns the volume prefixes whose recorded chain has `normalized_path`.
  std::vector<std::string> VolumesUsing(const std::string& normalized_path) const;
  // Returns how many inodes have recorded content.
  size_t size() const;

  // A reader (cat, a script's read loop) reads a file from offset 0 on,
  // then on until a read returns nothing; a file that changes between its
  // reads (VOL/rebase, .chainfs/stats) would give it the head of one
  // content and the tail of another. Pin records what a read from offset 0
  // served: its length when it reached the end (the next read is the one
  // that must find the end), else the content, for the reads that go on;
  // Pinned returns it while it is younger than kPinFor.
  struct PinnedRead {
    std::optional<Version> version;  // the content, when the first read did not reach its end
    size_t length = 0;
    std::chrono::steady_clock::time_point at;
  };
  void Pin(uint64_t ino, const Version& v, bool reached_end);
  std::optional<PinnedRead> Pinned(uint64_t ino) const;

 private:
  // Paths are kept as 64-bit hashes: a big pool has tens of thousands, and a
  // collision only invalidates a few nodes more than needed.
  struct Recorded {
    const void* snapshot = nullptr;
    std::vector<uint64_t> paths;
  };
  static uint64_t Fnv1a(const std::string& bytes);
  struct timespec NextTime(const struct timespec& after);
  // What is recorded of an inode's content: the bytes while they are kept
  // (`kept`), and always their length and digest, to recognize them.
  struct Entry {
    Version version;
    bool kept = false;
    size_t length = 0;
    uint64_t digest = 0;
    std::list<uint64_t>::iterator lru;  // valid while kept
  };
  // Keeps `e`'s bytes as the most recently used, then drops the least
  // recently used ones until the budget holds. Needs mu_.
  void Keep(uint64_t ino, Entry& e);
  void Drop(Entry& e);

  const size_t budget_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> versions_;                                     // guarded by mu_
  std::list<uint64_t> lru_;  // kept inodes, most recent first; guarded by mu_
  size_t kept_bytes_ = 0;    // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<const std::vector<DirEntry>>> listings_;  // guarded by mu_
  std::unordered_map<uint64_t, PinnedRead> pins_;  // guarded by mu_
  // Keys of chains_ are never moved (node-based map), so users_ points at them.
  std::unordered_map<std::string, Recorded> chains_;                                 // guarded by mu_
  std::unordered_map<uint64_t, std::vector<const std::string*>> users_;              // guarded by mu_
  struct timespec last_ {};                                                          // guarded by mu_
};

// Marks the inode the calling thread's request is about (a WRITE or
// SETATTR holds its page locked in the kernel): invalidations issued while
// it is set drop only that inode's attributes, never its pages.
class ScopedRequestInode {
 public:
  explicit ScopedRequestInode(uint64_t ino);
  ~ScopedRequestInode();
  ScopedRequestInode(const ScopedRequestInode&) = delete;
  ScopedRequestInode& operator=(const ScopedRequestInode&) = delete;

 private:
  uint64_t saved_;
};

// Puts `v`'s bytes into the kernel's page cache of `ino`
// (fuse_lowlevel_notify_store), so that the read that follows a lookup or
// an attribute refresh costs no READ request, and no attribute refresh
// after it (a READ the daemon answers makes the kernel ask for the atime
// again at the next stat). Called by a request handler after its reply:
// the inode may still be on its way into the kernel, so an unknown inode is
// tried again for up to `retry_for`. If the content changed meanwhile, the
// pages pushed are dropped again. Returns whether the kernel took them.
bool PushPages(FsState& fs, uint64_t ino, const KernelCache::Version& v,
               std::chrono::microseconds retry_for);

// Tells the kernel to drop its attributes and pages of every node that
// describes one of the images at `paths` (absolute host paths): the
// volume of that name in a pool folder, every volume whose chain runs
// through it, and the listing and .pool.xml of the pool directory holding
// it. Never drops directory entries (that needs the parent's lock, which a
// request handler may be running under). No-op before the session exists.
void InvalidateKernelImages(FsState& fs, const std::vector<std::string>& paths);
// The same for every node of the mount but the root and .chainfs.
void InvalidateKernelAll(FsState& fs);
// Drops the kernel's attributes, pages and listings of every node under
// MOUNT/.domains (a domain or status file changed), and the attributes
// and pages of every VOL/problems and data node: a domain that started or
// stopped took or released its images' locks (Tree: "held for writing").
void InvalidateKernelDomains(FsState& fs);

}  // namespace chainfs::fs
