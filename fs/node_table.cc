#include "fs/node_table.h"

namespace chainfs::fs {

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
  Node node{key, 0, true};
  by_key_[key.Encode()] = ino;
  by_ino_.emplace(ino, std::move(node));
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
  by_ino_.emplace(ino, Node{key, 1, false});
  by_key_.emplace(std::move(encoded), ino);
  return ino;
}

std::optional<NodeKey> NodeTable::Get(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end()) return std::nullopt;
  return it->second.key;
}

void NodeTable::Forget(uint64_t ino, uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end() || it->second.fixed) return;
  if (it->second.lookups > n) {
    it->second.lookups -= n;
    return;
  }
  by_key_.erase(it->second.key.Encode());
  by_ino_.erase(it);
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
    out.emplace_back(it->second, by_ino_.at(it->second).key);
  }
  return out;
}

size_t NodeTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_key_.size();
}

}  // namespace chainfs::fs
