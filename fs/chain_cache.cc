#include "fs/chain_cache.h"

#include "core/io/file.h"

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

bool ChainCache::StillValid(const ChainSnapshot& snap) const {
  const core::Chain& chain = snap.chain();
  if (!chain.complete) return false;
  for (size_t i = 0; i < chain.elements.size(); ++i) {
    const core::ChainElement& e = chain.elements[i];
    if (e.network) continue;
    core::Result<core::FileStat> st = core::StatPath(e.path);
    const std::optional<core::FileIdentity>& then = snap.ids()[i];
    if (st.ok() != then.has_value()) return false;
    if (st.ok() && !(st->id == *then)) return false;
  }
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
  if (cached && StillValid(*cached)) {
    ++hits_;
    return cached;
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

void ChainCache::Clear() {
  std::unordered_map<std::string, Entry> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  dropped.swap(entries_);
  lru_.clear();
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
