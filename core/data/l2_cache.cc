#include "core/data/l2_cache.h"

#include <algorithm>

namespace chainfs::core {

L2CacheGeometry DefaultL2CacheGeometry(uint64_t virtual_size, uint32_t cluster_bits,
                                       uint32_t l2_entry_bytes, uint64_t max_bytes) {
  const uint64_t cluster_size = uint64_t{1} << cluster_bits;
  // Guest bytes one L2 table maps, and how many tables the disk needs.
  const uint64_t table_covers = (cluster_size / l2_entry_bytes) * cluster_size;
  const uint64_t tables = std::max<uint64_t>(1, (virtual_size + table_covers - 1) / table_covers);
  const uint64_t needed = tables * cluster_size;
  L2CacheGeometry g;
  if (needed <= max_bytes) {
    g.entry_bytes = cluster_size;
    g.capacity = size_t(std::max<uint64_t>(2, tables));
  } else {
    g.entry_bytes = std::min(kDefaultL2SliceBytes, cluster_size);
    g.capacity = size_t(std::max<uint64_t>(2, max_bytes / g.entry_bytes));
  }
  return g;
}

L2Cache::L2Cache(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {
  // A handful of shards cuts contention between FUSE threads; tiny caches
  // keep one shard so that the LRU bound stays exact.
  size_t nshards = capacity_ >= 64 ? 16 : 1;
  for (size_t i = 0; i < nshards; ++i) {
    auto s = std::make_unique<Shard>();
    s->capacity = std::max<size_t>(1, capacity_ / nshards);
    shards_.push_back(std::move(s));
  }
}

L2Cache::Shard& L2Cache::ShardFor(uint64_t key) {
  // Keys are host offsets of slices (multiples of >= 512): mix the bits so
  // that neighbouring slices spread over shards.
  uint64_t h = key * 0x9e3779b97f4a7c15ull;
  return *shards_[(h >> 32) % shards_.size()];
}

L2Cache::Block L2Cache::Find(uint64_t key) {
  Shard& s = ShardFor(key);
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  s.lru.splice(s.lru.begin(), s.lru, it->second.pos);
  hits_.fetch_add(1, std::memory_order_relaxed);
  return it->second.block;
}

L2Cache::Block L2Cache::Insert(uint64_t key, Block block) {
  Shard& s = ShardFor(key);
  Block evicted;  // released after the lock is dropped
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.map.find(key);
  if (it != s.map.end()) {
    s.lru.splice(s.lru.begin(), s.lru, it->second.pos);
    return it->second.block;
  }
  if (s.map.size() >= s.capacity) {
    uint64_t victim = s.lru.back();
    s.lru.pop_back();
    auto vit = s.map.find(victim);
    evicted = std::move(vit->second.block);
    s.map.erase(vit);
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
  s.lru.push_front(key);
  s.map.emplace(key, Shard::Entry{block, s.lru.begin()});
  return block;
}

size_t L2Cache::size() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s->mu);
    n += s->map.size();
  }
  return n;
}

L2CacheStats L2Cache::stats() const { return {hits_.load(), misses_.load(), evictions_.load()}; }

}  // namespace chainfs::core
