#include "fs/chain_cache.h"

#include <sys/stat.h>

#include "core/chain/backing_ref.h"
#include "core/io/file.h"
#include "core/pool/catalog.h"

namespace chainfs::fs {

std::string ChainSnapshot::Rendered(const std::string& name,
                                    const std::function<std::string()>& render) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = rendered_.find(name);
    if (it != rendered_.end()) return it->second;
  }
  std::string text = render();  // pure function of the immutable chain
  std::lock_guard<std::mutex> lock(mu_);
  return rendered_.emplace(name, std::move(text)).first->second;
}

bool ChainCache::Revalidate(const ChainSnapshot& snap) const {
  const core::Chain& chain = snap.chain();
  if (!chain.complete) return false;
  const core::ChangeMonitor* monitor = monitor_.load();
  // Whether the monitor covers every element is decided before its epoch
  // is taken, and the stats below come after it (change_monitor.h).
  bool covered = monitor != nullptr;
  for (size_t i = 0; covered && i < chain.elements.size(); ++i) {
    const core::ChainElement& e = chain.elements[i];
    if (!e.network && !monitor->Watches(core::DirName(core::NormalizePathLexically(e.path)))) {
      covered = false;
    }
  }
  std::optional<uint64_t> epoch = covered ? monitor->QuietEpoch() : std::nullopt;
  for (size_t i = 0; i < chain.elements.size(); ++i) {
    const core::ChainElement& e = chain.elements[i];
    if (e.network) continue;
    const std::optional<core::FileIdentity>& then = snap.ids()[i];
    // lstat first: for the usual plain file it is the stat we need, and it
    // tells whether inotify on the file's directory sees all its changes.
    struct stat lst;
    std::optional<core::FileIdentity> now;
    if (::lstat(e.path.c_str(), &lst) == 0 && !S_ISLNK(lst.st_mode)) {
      now = core::FromStat(lst).id;
      if (!S_ISREG(lst.st_mode) || lst.st_nlink != 1) epoch.reset();
    } else {
      epoch.reset();  // a symlink: its target's directory may not be watched
      core::Result<core::FileStat> st = core::StatPath(e.path);
      if (st.ok()) now = st->id;
    }
    if (now.has_value() != then.has_value()) return false;
    if (now && !(*now == *then)) return false;
  }
  if (epoch) snap.set_quiet_epoch(*epoch);
  return true;
}

std::shared_ptr<const ChainSnapshot> ChainCache::Get(const std::string& path) {
  std::shared_ptr<const ChainSnapshot> cached;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(path);
    if (it != entries_.end()) {
      cached = it->second.snap;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
  }
  if (cached) {
    // Fast path: validated in the monitor's current quiet epoch.
    const core::ChangeMonitor* monitor = monitor_.load();
    uint64_t validated = cached->quiet_epoch();
    if (monitor && validated != ChainSnapshot::kNoEpoch) {
      std::optional<uint64_t> now = monitor->QuietEpoch();
      if (now && *now == validated) {
        ++hits_;
        return cached;
      }
    }
    if (Revalidate(*cached)) {
      ++hits_;
      return cached;
    }
  }
  ++misses_;
  core::ResolveOptions options;
  options.locate = locate_;
  core::Chain chain = core::ResolveChain(inspector_, path, options);
  std::vector<std::optional<core::FileIdentity>> ids;
  ids.reserve(chain.elements.size());
  for (const core::ChainElement& e : chain.elements) {
    if (e.stat) {
      ids.push_back(e.stat->id);
    } else {
      ids.push_back(std::nullopt);
    }
  }
  auto snap = std::make_shared<const ChainSnapshot>(std::move(chain), std::move(ids));
  if (on_resolved_) on_resolved_(snap->chain());
  // Settles at once whether the monitor vouches for the new chain (the
  // mount lets the kernel keep what it describes when it does).
  if (monitor_.load() != nullptr && !Revalidate(*snap)) {
    // Changed while it was resolved: the next Get resolves it again.
    snap->set_quiet_epoch(ChainSnapshot::kNoEpoch);
  }
  std::vector<std::shared_ptr<const ChainSnapshot>> dropped;  // released after unlock
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(path);
    if (it != entries_.end()) {
      dropped.push_back(std::move(it->second.snap));
      it->second.snap = snap;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    } else {
      lru_.push_front(path);
      entries_.emplace(path, Entry{snap, lru_.begin()});
      while (entries_.size() > max_entries_ && !lru_.empty()) {
        auto victim = entries_.find(lru_.back());
        dropped.push_back(std::move(victim->second.snap));
        entries_.erase(victim);
        lru_.pop_back();
      }
    }
  }
  return snap;
}

void ChainCache::Invalidate(const std::string& path) {
  std::string norm = core::NormalizePathLexically(path);
  core::Result<core::FileStat> st = core::StatPath(path);
  std::vector<std::shared_ptr<const ChainSnapshot>> dropped;  // released after unlock
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    const ChainSnapshot& snap = *it->second.snap;
    bool uses = false;
    for (size_t i = 0; i < snap.chain().elements.size() && !uses; ++i) {
      const core::ChainElement& e = snap.chain().elements[i];
      if (e.network) continue;
      uses = core::NormalizePathLexically(e.path) == norm;
      const std::optional<core::FileIdentity>& id = snap.ids()[i];
      if (!uses && st.ok() && id) uses = id->dev == st->id.dev && id->ino == st->id.ino;
    }
    if (uses) {
      dropped.push_back(std::move(it->second.snap));
      lru_.erase(it->second.lru);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

void ChainCache::Clear() {
  std::unordered_map<std::string, Entry> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  dropped.swap(entries_);
  lru_.clear();
}

bool ChainCache::WatchesDir(const std::string& normalized_dir) const {
  const core::ChangeMonitor* monitor = monitor_.load();
  return monitor != nullptr && monitor->Watches(normalized_dir);
}

bool ChainCache::WatchesDirOf(const std::string& path) const {
  return WatchesDir(core::DirName(core::NormalizePathLexically(path)));
}

ChainCacheStats ChainCache::stats() const {
  ChainCacheStats s;
  s.hits = hits_.load();
  s.misses = misses_.load();
  std::lock_guard<std::mutex> lock(mu_);
  s.entries = entries_.size();
  return s;
}

}  // namespace chainfs::fs
