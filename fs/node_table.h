// NodeTable: inode numbers for NodeKeys, with the kernel's lookup counts.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/node.h"

namespace chainfs::fs {

// Fixed inode numbers of the nodes that always exist.
inline constexpr uint64_t kRootIno = 1;  // FUSE_ROOT_ID
inline constexpr uint64_t kControlDirIno = 2;
inline constexpr uint64_t kFirstDynamicIno = 16;

// Maps inode numbers to NodeKeys and back. An inode number is derived from a
// hash of the key, so a node keeps its number across forget/lookup cycles
// (collisions are resolved by probing and are the only exception). Nodes
// live while the kernel holds lookups on them; fixed nodes live forever.
//
// Thread-safe. Lock order: mu_ only.
class NodeTable {
 public:
  NodeTable();

  // Returns the inode for `key`, adding one kernel lookup reference.
  uint64_t Ref(const NodeKey& key);
  // Returns the key of `ino`, or nullopt if the kernel forgot it.
  std::optional<NodeKey> Get(uint64_t ino) const;
  // Drops `n` kernel lookup references; erases the node at zero and then
  // returns true.
  bool Forget(uint64_t ino, uint64_t n);
  // After a volume was renamed through the mount: the kernel moved its
  // dentry, so the inodes it holds under pool `from_pool`, volume
  // `from_volume` now stand for `to_pool`/`to_volume` (same numbers). A
  // node the kernel still held under the new name (a volume removed
  // earlier) is retired: its number no longer resolves.
  void Rename(const std::string& from_pool, const std::string& from_volume,
              const std::string& to_pool, const std::string& to_volume);
  // Returns the inode number `key` has or would have (for readdir), without
  // taking a reference.
  uint64_t PeekIno(const NodeKey& key) const;
  // Returns the inode of `key` if the kernel knows it.
  std::optional<uint64_t> Find(const NodeKey& key) const;
  // Returns the inodes and keys of every known node whose Encode() starts
  // with `prefix` (see EncodePrefix; "" = all).
  std::vector<std::pair<uint64_t, NodeKey>> FindByPrefix(const std::string& prefix) const;
  // Returns the number of known nodes.
  size_t size() const;

 private:
  // A node keeps its key only in encoded form (the by_key_ map key, whose
  // address is stable), decoded on demand: a big pool means ~10 nodes per
  // volume, and this halves their memory.
  struct Node {
    const std::string* encoded = nullptr;  // points at the by_key_ key
    uint64_t lookups = 0;
    uint16_t pool_len = 0;    // NodeKey::pool.size(), to split `encoded`
    uint16_t volume_len = 0;  // NodeKey::volume.size()
    bool fixed = false;
  };
  static uint64_t HashIno(const std::string& encoded);
  static NodeKey Decode(const Node& node);
  void AddFixed(uint64_t ino, const NodeKey& key);
  // Inserts `key` under `ino` (mu_ held).
  Node& Insert(uint64_t ino, const NodeKey& key, std::string encoded);

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Node> by_ino_;   // guarded by mu_
  std::map<std::string, uint64_t> by_key_;      // guarded by mu_; ordered for prefix scans
};

}  // namespace chainfs::fs
