#include "fs/node_table.h"

#include <charconv>

namespace chainfs::fs {

NodeTable::Node& NodeTable::Insert(uint64_t ino, const NodeKey& key, std::string encoded) {
  auto [it, added] = by_key_.emplace(std::move(encoded), ino);
  it->second = ino;
  Node& node = by_ino_[ino];
  node.encoded = &it->first;
  node.pool_len = static_cast<uint16_t>(key.pool.size());
  node.volume_len = static_cast<uint16_t>(key.volume.size());
  return node;
}

// Encode() is "POOL/VOLUME/KIND/INDEX/FILE"; the lengths recorded at insert
// time split it even if a name held a '/'.
NodeKey NodeTable::Decode(const Node& node) {
  const std::string& e = *node.encoded;
  NodeKey key;
  size_t pos = 0;
  key.pool = e.substr(0, node.pool_len);
  pos = size_t(node.pool_len) + 1;
  key.volume = e.substr(pos, node.volume_len);
  pos += size_t(node.volume_len) + 1;
  int kind = 0;
  auto r = std::from_chars(e.data() + pos, e.data() + e.size(), kind);
  key.kind = static_cast<NodeKind>(kind);
  pos = size_t(r.ptr - e.data()) + 1;
  r = std::from_chars(e.data() + std::min(pos, e.size()), e.data() + e.size(), key.index);
  pos = size_t(r.ptr - e.data()) + 1;
  if (pos < e.size()) key.file = e.substr(pos);
  return key;
}

NodeTable::NodeTable() {
  AddFixed(kRootIno, NodeKey{NodeKind::kRoot});
  AddFixed(kControlDirIno, NodeKey{NodeKind::kControlDir});
  uint64_t ino = kControlDirIno + 1;
  for (const std::string& name : ControlFileNames()) {
    NodeKey key{NodeKind::kControlFile};
    key.file = name;
    AddFixed(ino++, key);
  }
}

void NodeTable::AddFixed(uint64_t ino, const NodeKey& key) {
  Insert(ino, key, key.Encode()).fixed = true;
}

uint64_t NodeTable::HashIno(const std::string& encoded) {
  // FNV-1a, 64 bit; folded away from the fixed range.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : encoded) {
    h ^= c;
    h *= 1099511628211ull;
  }
  if (h < kFirstDynamicIno) h += kFirstDynamicIno;
  return h;
}

uint64_t NodeTable::Ref(const NodeKey& key) {
  std::string encoded = key.Encode();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_key_.find(encoded);
  if (it != by_key_.end()) {
    ++by_ino_[it->second].lookups;
    return it->second;
  }
  uint64_t ino = HashIno(encoded);
  while (ino < kFirstDynamicIno || by_ino_.count(ino)) {
    ++ino;  // collision: probe
  }
  Insert(ino, key, std::move(encoded)).lookups = 1;
  return ino;
}

std::optional<NodeKey> NodeTable::Get(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end()) return std::nullopt;
  return Decode(it->second);
}

bool NodeTable::Forget(uint64_t ino, uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end() || it->second.fixed) return false;
  if (it->second.lookups > n) {
    it->second.lookups -= n;
    return false;
  }
  auto key_it = by_key_.find(*it->second.encoded);
  by_ino_.erase(it);
  if (key_it != by_key_.end()) by_key_.erase(key_it);
  return true;
}

void NodeTable::Rename(const std::string& from_pool, const std::string& from_volume,
                       const std::string& to_pool, const std::string& to_volume) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, NodeKey>> moved;
  std::string prefix = EncodePrefix(from_pool, from_volume);
  for (auto it = by_key_.lower_bound(prefix); it != by_key_.end();) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    Node& node = by_ino_.at(it->second);
    NodeKey key = Decode(node);
    if (key.pool != from_pool || key.volume != from_volume) {
      ++it;
      continue;
    }
    moved.emplace_back(it->second, std::move(key));
    it = by_key_.erase(it);
  }
  // Retire what is known under the new name: a pool name of "\x01" never
  // exists, so those numbers answer ENOENT until the kernel forgets them.
  std::string to_prefix = EncodePrefix(to_pool, to_volume);
  std::vector<std::pair<uint64_t, NodeKey>> retired;
  for (auto it = by_key_.lower_bound(to_prefix); it != by_key_.end();) {
    if (it->first.compare(0, to_prefix.size(), to_prefix) != 0) break;
    NodeKey key = Decode(by_ino_.at(it->second));
    if (key.pool != to_pool || key.volume != to_volume) {
      ++it;
      continue;
    }
    key.pool = "\x01";
    key.volume = std::to_string(it->second);
    retired.emplace_back(it->second, std::move(key));
    it = by_key_.erase(it);
  }
  for (auto& list : {&moved, &retired}) {
    for (auto& [ino, key] : *list) {
      if (list == &moved) {
        key.pool = to_pool;
        key.volume = to_volume;
      }
      Node& node = by_ino_.at(ino);
      std::string encoded = key.Encode();
      auto [kit, added] = by_key_.emplace(std::move(encoded), ino);
      kit->second = ino;
      node.encoded = &kit->first;
      node.pool_len = static_cast<uint16_t>(key.pool.size());
      node.volume_len = static_cast<uint16_t>(key.volume.size());
    }
  }
}

uint64_t NodeTable::PeekIno(const NodeKey& key) const {
  std::string encoded = key.Encode();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_key_.find(encoded);
  if (it != by_key_.end()) return it->second;
  return HashIno(encoded);
}

std::optional<uint64_t> NodeTable::Find(const NodeKey& key) const {
  std::string encoded = key.Encode();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_key_.find(encoded);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::pair<uint64_t, NodeKey>> NodeTable::FindByPrefix(const std::string& prefix) const {
  std::vector<std::pair<uint64_t, NodeKey>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = by_key_.lower_bound(prefix); it != by_key_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    out.emplace_back(it->second, Decode(by_ino_.at(it->second)));
  }
  return out;
}

size_t NodeTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_key_.size();
}

}  // namespace chainfs::fs
