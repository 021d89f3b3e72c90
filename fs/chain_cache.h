// ChainCache: resolved chains of pool volumes, revalidated on every use by
// re-stating each element (dev, ino, size, mtime, ctime), plus the documents
// rendered from them.
//
// The re-stat is skipped when a ChangeMonitor (the mount's inotify watcher)
// vouches that nothing changed: a snapshot validated by stat in quiet epoch
// E is reused without any stat for as long as the monitor still reports E.
// That is exact, not eventual: the kernel queues the inotify event of a
// change before the changing system call returns, and QuietEpoch() fails
// while any event is queued or being applied. It only applies to chains
// whose every element is a regular file with one link, not a symlink, in a
// directory watched on a local filesystem -- the cases where every change
// of the element raises an event in a watched directory; other chains are
// re-stat'ed on every use as before. A chain that stopped at a missing file
// counts that name like an element: absent from a watched directory, its
// creation raises an event there.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/chain/chain.h"
#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/pool/change_monitor.h"

namespace chainfs::fs {

// How revalidation checks one chain element.
enum class ElementCheck : uint8_t {
  kIdentity,  // opened (or refused the same way twice): it must keep its identity
  kAbsent,    // it did not exist (ENOENT/ENOTDIR): it must still not exist
  kIgnored,   // never opened (a network source, an unknown recorded format)
  kNever,     // it existed but failed to open for a reason that may pass (EIO):
              // the chain is resolved again on every use
};

// One resolved chain and what it was resolved from. The chain is immutable;
// rendered documents are memoized (thread-safe).
class ChainSnapshot {
 public:
  // `checks` empty: kIdentity where `ids` has a value, else kAbsent.
  ChainSnapshot(core::Chain chain, std::vector<std::optional<core::FileIdentity>> ids,
                std::vector<ElementCheck> checks = {});

  const core::Chain& chain() const { return chain_; }
  // Returns the identity each element had when resolved (nullopt: could not
  // be stat'ed, or a network source when `network` is set on the element).
  const std::vector<std::optional<core::FileIdentity>>& ids() const { return ids_; }
  // Returns how each element is revalidated.
  const std::vector<ElementCheck>& checks() const { return checks_; }
  // Returns the memoized result of render() for `name`, rendering it once.
  std::string Rendered(const std::string& name, const std::function<std::string()>& render) const;
  // Returns the change-monitor epoch in which this snapshot was last
  // validated (kNoEpoch: never; real epochs are even).
  uint64_t quiet_epoch() const { return quiet_epoch_.load(std::memory_order_acquire); }
  void set_quiet_epoch(uint64_t epoch) const {
    quiet_epoch_.store(epoch, std::memory_order_release);
  }
  static constexpr uint64_t kNoEpoch = 1;
  // Returns true once the snapshot was validated in a quiet epoch: every
  // element it checks is a plain file (or, where the chain stopped at a
  // missing file, a name absent) in a directory whose inotify events
  // report all its changes.
  bool watched() const { return quiet_epoch() != kNoEpoch; }

 private:
  core::Chain chain_;
  std::vector<std::optional<core::FileIdentity>> ids_;
  std::vector<ElementCheck> checks_;
  mutable std::atomic<uint64_t> quiet_epoch_{kNoEpoch};
  mutable std::mutex mu_;                                // guards rendered_
  mutable std::map<std::string, std::string> rendered_;  // guarded by mu_
};

// Counters for .chainfs/stats.
struct ChainCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t entries = 0;
};

// Thread-safe; lock order: mu_ only, never held during I/O or resolution.
// Bounded (least recently used entries are dropped).
class ChainCache {
 public:
  ChainCache(core::ImageInspector& inspector, core::VolumeLocator locate, size_t max_entries = 1024)
      : inspector_(inspector), locate_(std::move(locate)), max_entries_(max_entries) {}

  // Returns the current chain of the image at absolute `path`: the cached
  // one if every element still has the identity it had, else a new
  // resolution. A chain that stopped early is cached the same way: what
  // stopped it is an element that must keep its identity (a loop, a depth
  // limit, a bad header or backing string) or a missing file that must
  // still be missing. An element that exists but could not be opened keeps
  // the chain by its identity when a second look shows it fails the same
  // way (refused permission, not a regular file or block device); else the
  // chain is resolved again on every use. Never fails.
  std::shared_ptr<const ChainSnapshot> Get(const std::string& path);
  // The same for a chain resolved by `resolve` and cached under `key`
  // (domain disks: the key holds the disk's XML, so a new definition is a
  // new entry). Keys must not start with '/', which Get's paths do.
  std::shared_ptr<const ChainSnapshot> GetWith(const std::string& key,
                                               const std::function<core::Chain()>& resolve);
  // Drops every entry (pool definitions changed, so fixes may read differently).
  void Clear();
  // Drops every cached chain that has the image at absolute `path` as an
  // element (compared lexically and by (dev, ino) when it can be stat'ed),
  // so the next Get re-resolves it. For the write side, after it changed an
  // image; cheap enough to call after every change.
  void Invalidate(const std::string& path);
  // Sets (or clears, with nullptr) the monitor that lets snapshots be reused
  // without re-stating their elements. It must outlive its use.
  void set_change_monitor(const core::ChangeMonitor* monitor) { monitor_.store(monitor); }
  ChainCacheStats stats() const;
  // Returns how many chains the cache keeps at most.
  size_t capacity() const { return max_entries_; }
  // Returns the change monitor's current quiet epoch (nullopt without a
  // monitor, or while changes are being applied).
  std::optional<uint64_t> QuietEpoch() const {
    const core::ChangeMonitor* monitor = monitor_.load();
    return monitor ? monitor->QuietEpoch() : std::nullopt;
  }
  // Returns true if the change monitor reports every change in directory
  // `normalized_dir` (false without a monitor).
  bool WatchesDir(const std::string& normalized_dir) const;
  // The same for the directory holding the file at `path`.
  bool WatchesDirOf(const std::string& path) const;
  // Sets (or clears, with nullptr) a hook called with every newly resolved
  // chain, so the daemon can watch the directories of elements outside the
  // pools. Safe while other threads resolve (the watcher clears it when it
  // stops, while a rebase job may still resolve): a call in progress ends
  // before this returns, and none starts after a clear.
  void set_on_resolved(std::function<void(const core::Chain&)> hook) {
    std::unique_lock<std::shared_mutex> lock(hook_mu_);
    on_resolved_ = std::move(hook);
  }

 private:
  // Re-stats every element of `snap`; on success, records the epoch it is
  // valid in when the monitor can vouch for all its elements.
  bool Revalidate(const ChainSnapshot& snap) const;
  // Resolves the chain under `path` now, caches it and ends its pending entry.
  // `ticket` names the resolution in pending_.
  std::shared_ptr<const ChainSnapshot> Resolve(const std::string& path, uint64_t ticket,
                                               const std::function<core::Chain()>& resolve);
  // Removes the pending entry of `path` if it is still resolution `ticket`'s
  // (Invalidate and Clear drop pending entries, and a new resolution may
  // have taken the key since). Called with mu_ held.
  void EndPending(const std::string& path, uint64_t ticket);

  core::ImageInspector& inspector_;
  core::VolumeLocator locate_;
  size_t max_entries_;
  // Held shared while the hook runs (it never takes mu_), exclusive to set it.
  mutable std::shared_mutex hook_mu_;
  std::function<void(const core::Chain&)> on_resolved_;  // guarded by hook_mu_
  std::atomic<const core::ChangeMonitor*> monitor_{nullptr};

  mutable std::mutex mu_;
  using Lru = std::list<std::string>;
  struct Entry {
    std::shared_ptr<const ChainSnapshot> snap;
    Lru::iterator lru;
  };
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
  Lru lru_;                                         // guarded by mu_; front = newest
  // Keys being resolved now, with the result their resolver will publish.
  // Invalidate and Clear forget them all: a caller after a change must not
  // be handed a resolution that began before it.
  struct Pending {
    uint64_t ticket = 0;
    std::shared_future<std::shared_ptr<const ChainSnapshot>> result;
  };
  std::unordered_map<std::string, Pending> pending_;  // guarded by mu_
  uint64_t next_ticket_ = 0;                          // guarded by mu_
  std::atomic<uint64_t> hits_{0}, misses_{0};
};

}  // namespace chainfs::fs
