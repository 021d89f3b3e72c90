#include "fs/chain_nodes.h"

#include <charconv>

namespace chainfs::fs::chain_nodes {

std::optional<int> ParseIndex(const std::string& name) {
  if (name.empty() || name.size() > 4 || (name.size() > 1 && name[0] == '0')) return std::nullopt;
  int value = 0;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), value);
  if (ec != std::errc() || ptr != name.data() + name.size() || value < 0) return std::nullopt;
  return value;
}

std::optional<NodeKey> LookupElement(const NodeKey& parent, const std::string& name,
                                     const core::Chain& chain, const Kinds& kinds) {
  std::optional<int> index = ParseIndex(name);
  if (!index || *index >= int(chain.elements.size())) return std::nullopt;
  return NodeKey{kinds.element_dir, parent.pool, parent.volume, *index};
}

std::optional<NodeKey> LookupInElement(const NodeKey& parent, const std::string& name,
                                       const core::Chain& chain, const Kinds& kinds,
                                       const std::function<bool(const NodeKey&)>& has_link) {
  if (parent.index < 0 || parent.index >= int(chain.elements.size())) return std::nullopt;
  if (name == kVolumeLinkName) {
    NodeKey key{kinds.element_link, parent.pool, parent.volume, parent.index};
    if (!has_link(key)) return std::nullopt;
    return key;
  }
  if (!Contains(*kinds.files, name)) return std::nullopt;
  NodeKey key{kinds.element_file, parent.pool, parent.volume, parent.index};
  key.file = name;
  return key;
}

std::vector<DirEntry> ListElements(const NodeKey& key, const core::Chain& chain,
                                   const Kinds& kinds) {
  std::vector<DirEntry> out;
  for (size_t i = 0; i < chain.elements.size(); ++i) {
    out.push_back({std::to_string(i), NodeKey{kinds.element_dir, key.pool, key.volume, int(i)}});
  }
  return out;
}

std::vector<DirEntry> ListElement(const NodeKey& key, const core::Chain& chain, const Kinds& kinds,
                                  const std::function<bool(const NodeKey&)>& has_link) {
  std::vector<DirEntry> out;
  if (key.index < 0 || key.index >= int(chain.elements.size())) return out;
  for (const std::string& name : *kinds.files) {
    NodeKey f{kinds.element_file, key.pool, key.volume, key.index};
    f.file = name;
    out.push_back({name, f});
  }
  NodeKey link{kinds.element_link, key.pool, key.volume, key.index};
  if (has_link(link)) out.push_back({kVolumeLinkName, link});
  return out;
}

}  // namespace chainfs::fs::chain_nodes
