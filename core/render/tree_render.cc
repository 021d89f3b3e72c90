#include "core/render/tree_render.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "core/render/render_util.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

// A node of a pool's forest: a volume, or a backing that is none.
struct Node {
  std::string label;                      // volume name, or the backing's path
  const TreeVolume* volume = nullptr;     // null for an outside backing
  bool missing = false;                   // an outside backing that could not be opened
  std::vector<std::string> codes;         // problem codes marked on the node
  std::vector<size_t> children;           // in label order
};

struct Forest {
  std::vector<Node> nodes;
  std::vector<size_t> roots;  // bases by name, then outside backings by path
  std::vector<std::optional<size_t>> parent;
};

// The codes of the problems `v`'s line shows (see RenderPoolTree).
std::vector<std::string> Codes(const Chain& chain, bool backing_outside) {
  std::vector<std::string> out;
  for (const Problem& p : chain.problems) {
    if (p.index > 1 && !backing_outside) continue;
    std::string code(ProblemCode(p.kind));
    if (std::find(out.begin(), out.end(), code) == out.end()) out.push_back(code);
  }
  return out;
}

Forest Build(const TreePool& pool) {
  Forest f;
  std::map<std::pair<uint64_t, uint64_t>, size_t> by_id;
  std::map<std::string, size_t> by_path;
  for (const TreeVolume& v : pool.volumes) {
    Node n;
    n.label = v.name;
    n.volume = &v;
    const ChainElement& top = v.chain->elements.front();
    if (top.stat) by_id[{top.stat->id.dev, top.stat->id.ino}] = f.nodes.size();
    by_path[top.path] = f.nodes.size();
    f.nodes.push_back(std::move(n));
  }
  const size_t volumes = f.nodes.size();
  f.parent.assign(volumes, std::nullopt);
  std::map<std::string, size_t> outside;
  for (size_t i = 0; i < volumes; ++i) {
    const Chain& chain = *f.nodes[i].volume->chain;
    bool backing_outside = false;
    if (chain.elements.size() >= 2) {
      const ChainElement& b = chain.elements[1];
      std::optional<size_t> p;
      if (b.stat) {
        if (auto it = by_id.find({b.stat->id.dev, b.stat->id.ino}); it != by_id.end()) p = it->second;
      }
      if (!p && !b.network) {
        if (auto it = by_path.find(b.path); it != by_path.end()) p = it->second;
      }
      if (!p) {
        backing_outside = true;
        auto [it, added] = outside.try_emplace(b.path, f.nodes.size());
        if (added) {
          Node n;
          n.label = b.path;
          n.missing = !b.stat && !b.network;
          f.nodes.push_back(std::move(n));
        }
        p = it->second;
      }
      f.parent.resize(f.nodes.size(), std::nullopt);
      f.parent[i] = p;
    }
    f.nodes[i].codes = Codes(chain, backing_outside);
  }
  f.parent.resize(f.nodes.size(), std::nullopt);
  // Volumes in a loop have a parent but no root above them: cut each loop
  // at its first volume by name (volumes come in name order).
  std::vector<std::vector<size_t>> below(f.nodes.size());
  for (size_t i = 0; i < f.nodes.size(); ++i) {
    if (f.parent[i]) below[*f.parent[i]].push_back(i);
  }
  std::vector<bool> reached(f.nodes.size(), false);
  auto reach = [&](size_t start) {  // marks `start` and everything below it
    std::vector<size_t> stack{start};
    while (!stack.empty()) {
      size_t n = stack.back();
      stack.pop_back();
      if (reached[n]) continue;
      reached[n] = true;
      for (size_t c : below[n]) stack.push_back(c);
    }
  };
  for (size_t i = 0; i < f.nodes.size(); ++i) {
    if (!f.parent[i]) reach(i);
  }
  for (size_t i = 0; i < volumes; ++i) {
    if (reached[i]) continue;
    f.parent[i].reset();
    reach(i);
  }
  for (size_t i = 0; i < f.nodes.size(); ++i) {
    if (f.parent[i]) f.nodes[*f.parent[i]].children.push_back(i);
    if (!f.parent[i]) f.roots.push_back(i);
  }
  // Bases by name (volumes come first, in name order), then the outside
  // backings by path.
  auto first_outside = std::partition_point(f.roots.begin(), f.roots.end(),
                                            [&](size_t r) { return r < volumes; });
  std::stable_sort(first_outside, f.roots.end(),
                   [&](size_t a, size_t b) { return f.nodes[a].label < f.nodes[b].label; });
  for (Node& n : f.nodes) {
    std::stable_sort(n.children.begin(), n.children.end(), [&](size_t a, size_t b) {
      return f.nodes[a].label < f.nodes[b].label;
    });
  }
  return f;
}

// "qcow2, 64 MiB virtual, 196 KiB allocated" for a volume.
std::string Facts(const TreeVolume& v) {
  const ChainElement& e = v.chain->elements.front();
  std::string format = render_internal::ElementFormat(e);
  std::string out = format.empty() ? "?" : OneLine(format);
  if (e.meta) out += ", " + render_internal::FormatSize(e.meta->virtual_size) + " virtual";
  if (e.stat) out += ", " + render_internal::FormatSize(e.stat->allocation) + " allocated";
  return out;
}

std::string TextLine(const Node& n) {
  if (!n.volume) return OneLine(n.label) + (n.missing ? "  (missing)" : "  (outside the pool)");
  std::string line = OneLine(n.label) + "  " + Facts(*n.volume);
  if (!n.codes.empty()) {
    line += "  !";
    for (size_t k = 0; k < n.codes.size(); ++k) line += (k ? "," : " ") + n.codes[k];
  }
  return line;
}

void DrawBelow(const Forest& f, size_t node, const std::string& indent, std::string& out) {
  const std::vector<size_t>& kids = f.nodes[node].children;
  for (size_t k = 0; k < kids.size(); ++k) {
    const bool last = k + 1 == kids.size();
    out += indent + (last ? "└── " : "├── ") + TextLine(f.nodes[kids[k]]) + "\n";
    DrawBelow(f, kids[k], indent + (last ? "    " : "│   "), out);
  }
}

// A DOT double-quoted string: one line (EscapeOneLine), then `"` and `\`
// escaped, so no name can end the string or start a DOT escape.
std::string DotQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : OneLine(s)) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string RenderPoolTree(const TreePool& pool) {
  Forest f = Build(pool);
  std::string out;
  for (size_t r : f.roots) {
    out += TextLine(f.nodes[r]) + "\n";
    DrawBelow(f, r, "", out);
  }
  return out;
}

std::string RenderTreeDot(const std::vector<TreePool>& pools) {
  std::string out =
      "digraph chainfs {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n";
  for (size_t p = 0; p < pools.size(); ++p) {
    Forest f = Build(pools[p]);
    auto id = [&](size_t n) { return DotQuote(fmt::format("{}/{}", pools[p].name, f.nodes[n].label)); };
    out += fmt::format("  subgraph \"cluster_{}\" {{\n    label={};\n", p, DotQuote(pools[p].name));
    for (size_t n = 0; n < f.nodes.size(); ++n) {
      const Node& node = f.nodes[n];
      std::string label = node.label + "\n" +
                          (node.volume ? Facts(*node.volume)
                                       : std::string(node.missing ? "missing" : "outside the pool"));
      if (!node.codes.empty()) {
        label += "\n!";
        for (size_t k = 0; k < node.codes.size(); ++k) label += (k ? "," : " ") + node.codes[k];
      }
      // The label's line breaks are DOT's \n escapes, made after quoting.
      std::string quoted;
      for (size_t pos = 0; pos <= label.size();) {
        size_t nl = label.find('\n', pos);
        if (nl == std::string::npos) nl = label.size();
        std::string part = DotQuote(label.substr(pos, nl - pos));
        quoted += (pos ? "\\n" : "") + part.substr(1, part.size() - 2);
        pos = nl + 1;
      }
      const bool red = !node.codes.empty() || node.missing;
      out += fmt::format("    {} [label=\"{}\"{}{}];\n", id(n), quoted,
                         node.volume ? "" : ", style=dashed",
                         red ? ", color=red, fontcolor=red" : "");
    }
    out += "  }\n";
    for (size_t n = 0; n < f.nodes.size(); ++n) {
      if (f.parent[n]) out += fmt::format("  {} -> {};\n", id(n), id(*f.parent[n]));
    }
  }
  return out + "}\n";
}

}  // namespace chainfs::core
