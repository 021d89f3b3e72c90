// Pictures of a pool's chain forest (DESIGN section 11): POOL/.tree and
// `chainctl tree` as text, `chainctl tree --dot` as Graphviz DOT. Pure
// functions of chains resolved elsewhere; they open no file.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/chain/chain.h"

namespace chainfs::core {

// One volume of a pool with its resolved chain (element 0 is the volume).
struct TreeVolume {
  std::string name;
  std::shared_ptr<const Chain> chain;  // not null
};

// A pool's volumes, in name order.
struct TreePool {
  std::string name;
  std::vector<TreeVolume> volumes;
};

// The text tree: each base (a volume with no backing in the pool) at the
// left margin, its overlays beneath it drawn as tree(1) draws folders.
// Overlays whose backing is no volume of the pool hang under a line naming
// that backing, marked "(outside the pool)" or "(missing)". Each volume's
// line: name, format, virtual size, allocation, and " ! CODE,CODE" when its
// chain has problems at the volume or its link to its backing (all of them
// when that backing is outside the pool). Volumes in a backing loop are cut
// at the first by name, which becomes a root. "" for a pool without volumes.
std::string RenderPoolTree(const TreePool& pool);

// The same forests as a Graphviz digraph: one cluster per pool, an edge
// from each overlay to its backing, problems in red. Every name is quoted
// and escaped for DOT.
std::string RenderTreeDot(const std::vector<TreePool>& pools);

}  // namespace chainfs::core
