// The chain/ and chain/N/ directories, which volumes (MOUNT/POOL/VOL/chain)
// and domain disks (MOUNT/.domains/DOM/TGT/chain) share: lookups and
// listings over a resolved chain, parametrised by the node kinds of each
// tree. Pure functions of their arguments (private to fs/tree*.cc).
#pragma once

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/chain/chain.h"
#include "fs/node.h"
#include "fs/tree.h"

namespace chainfs::fs::chain_nodes {

// The node kinds and file names of one tree's chain directories.
struct Kinds {
  NodeKind element_dir;
  NodeKind element_file;
  NodeKind element_link;
  const std::vector<std::string>* files;  // of chain/N/, besides the link
};

// Returns the element index a name of chain/ stands for ("0", "12"; no
// leading zeros, at most 4 digits).
std::optional<int> ParseIndex(const std::string& name);

// Returns true if `names` holds `name`.
inline bool Contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// Looks `name` up in chain/ of `parent` (its pool and volume name the
// owner); nullopt when there is no such element.
std::optional<NodeKey> LookupElement(const NodeKey& parent, const std::string& name,
                                     const core::Chain& chain, const Kinds& kinds);
// Looks `name` up in chain/N/ (`parent`); `has_link` says whether element
// N has a volume link. nullopt when there is no such entry.
std::optional<NodeKey> LookupInElement(const NodeKey& parent, const std::string& name,
                                       const core::Chain& chain, const Kinds& kinds,
                                       const std::function<bool(const NodeKey&)>& has_link);
// Lists chain/ of `key`.
std::vector<DirEntry> ListElements(const NodeKey& key, const core::Chain& chain, const Kinds& kinds);
// Lists chain/N/ (`key`); empty when N is past the end.
std::vector<DirEntry> ListElement(const NodeKey& key, const core::Chain& chain, const Kinds& kinds,
                                  const std::function<bool(const NodeKey&)>& has_link);

}  // namespace chainfs::fs::chain_nodes
