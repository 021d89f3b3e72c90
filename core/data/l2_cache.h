// A bounded LRU cache of L2-table slices (or any immutable byte blocks
// keyed by their host offset), shared by every reader of one image.
//
// Sizing follows qemu's defaults (docs/qcow2-cache.txt, qemu >= 4.0 on Linux):
// the L2 cache holds at most what is needed to cover the whole virtual disk,
// capped at 32 MiB, and never less than 2 entries; an entry is a whole L2
// table (one cluster) when every table fits under the cap, else a 4 KiB slice
// of a table (or a cluster, if clusters are smaller). qemu's
// cache-clean-interval (dropping idle entries after 600 s) is not modelled:
// the LRU bound is the memory bound.
//
// Thread-safety: all methods are safe for concurrent callers. The cache is
// split into shards, each with its own mutex (lock order: one shard mutex at a
// time, never held during I/O: callers load a missing entry themselves and
// Insert it).
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace chainfs::core {

// qemu's default maximum L2 cache size on Linux.
inline constexpr uint64_t kDefaultL2CacheMaxBytes = 32ull << 20;
// qemu's default L2 cache entry size when the cache cannot cover the disk.
inline constexpr uint64_t kDefaultL2SliceBytes = 4096;

// The geometry of an image's L2 cache.
struct L2CacheGeometry {
  uint64_t entry_bytes = 0;  // bytes per cached slice (power of two)
  size_t capacity = 0;       // number of slices kept
};

// Computes qemu's default L2 cache geometry for an image of `virtual_size`
// bytes with 2^cluster_bits clusters and `l2_entry_bytes` (8, or 16 with
// extended L2) per entry, capped at `max_bytes`.
L2CacheGeometry DefaultL2CacheGeometry(uint64_t virtual_size, uint32_t cluster_bits,
                                       uint32_t l2_entry_bytes,
                                       uint64_t max_bytes = kDefaultL2CacheMaxBytes);

// Counters of one cache.
struct L2CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
};

// The LRU cache itself. Values are immutable once inserted.
class L2Cache {
 public:
  using Block = std::shared_ptr<const std::vector<uint8_t>>;

  // Makes a cache holding at most `capacity` blocks (at least 1).
  explicit L2Cache(size_t capacity);
  L2Cache(const L2Cache&) = delete;
  L2Cache& operator=(const L2Cache&) = delete;

  // Returns the block stored under `key` (marking it most recently used), or
  // null on a miss.
  Block Find(uint64_t key);
  // Stores `block` under `key`, evicting the least recently used block of
  // the shard when full. If another thread inserted the key meanwhile, the
  // existing block is kept and returned; otherwise returns `block`.
  Block Insert(uint64_t key, Block block);
  // Returns the number of blocks held now.
  size_t size() const;
  // Returns the maximum number of blocks held.
  size_t capacity() const { return capacity_; }
  // Returns the hit, miss and eviction counters since construction.
  L2CacheStats stats() const;

 private:
  struct Shard {
    std::mutex mu;
    size_t capacity = 0;
    std::list<uint64_t> lru;  // most recent first; guarded by mu
    struct Entry {
      Block block;
      std::list<uint64_t>::iterator pos;
    };
    std::unordered_map<uint64_t, Entry> map;  // guarded by mu
  };
  Shard& ShardFor(uint64_t key);

  size_t capacity_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, evictions_{0};
};

}  // namespace chainfs::core
