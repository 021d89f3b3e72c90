#include "core/render/render_util.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

#include "core/chain/backing_ref.h"
#include "core/util/escape.h"

namespace chainfs::core::render_internal {

std::string FormatSize(uint64_t bytes) {
  static constexpr std::array<const char*, 7> kSuffixes = {"B",   "KiB", "MiB", "GiB",
                                                           "TiB", "PiB", "EiB"};
  // Switch to the next unit once the value would print as 1000 or more
  // (qemu-img shows "1000 B" as "0.977 KiB").
  size_t unit = 0;
  const double value = double(bytes);
  while (unit + 1 < kSuffixes.size() && value >= 1000.0 * std::ldexp(1.0, int(10 * unit))) {
    ++unit;
  }
  double scaled = std::ldexp(value, -int(10 * unit));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3g %s", scaled, kSuffixes[unit]);
  return buf;
}

namespace {

// Rewrites names and values of `node` and everything below it with XmlSafe.
// Iterative: a pool definition's <source> may nest deeply.
void SanitizeTree(pugi::xml_node root) {
  std::vector<pugi::xml_node> stack{root};
  auto fix_name = [](auto& n) {
    std::string safe = XmlSafe(n.name());
    if (safe != n.name()) n.set_name(safe.c_str());
  };
  while (!stack.empty()) {
    pugi::xml_node node = stack.back();
    stack.pop_back();
    if (node.type() == pugi::node_element) {
      fix_name(node);
      for (pugi::xml_attribute a = node.first_attribute(); a; a = a.next_attribute()) {
        fix_name(a);
        std::string safe = XmlSafe(a.value());
        if (safe != a.value()) a.set_value(safe.c_str());
      }
    } else if (node.type() == pugi::node_pcdata || node.type() == pugi::node_cdata) {
      // Layout text added on purpose (an empty <source> spelled on two
      // lines) is whitespace only; keep it.
      std::string_view v = node.value();
      if (v.find_first_not_of(" \n") != std::string_view::npos) {
        std::string safe = XmlSafe(v);
        if (safe != v) node.set_value(safe.c_str());
      }
    }
    for (pugi::xml_node child = node.first_child(); child; child = child.next_sibling()) {
      stack.push_back(child);
    }
  }
}

}  // namespace

std::string SaveXml(pugi::xml_document& doc) {
  SanitizeTree(doc);
  std::ostringstream out;
  doc.save(out, "  ",
           pugi::format_indent | pugi::format_attribute_single_quote | pugi::format_no_declaration,
           pugi::encoding_utf8);
  std::string text = out.str();
  // pugixml ends empty elements with " />"; libvirt writes "/>". With
  // format_indent every element ends its own line, and pugixml escapes
  // newlines inside attribute values and '>' in text, so " />\n" only ever
  // occurs at the end of an empty-element tag.
  static constexpr std::string_view kPugi = " />\n";
  std::string result;
  result.reserve(text.size());
  size_t pos = 0;
  while (true) {
    size_t hit = text.find(kPugi, pos);
    if (hit == std::string::npos) {
      result.append(text, pos, std::string::npos);
      break;
    }
    result.append(text, pos, hit - pos);
    result += "/>\n";
    pos = hit + kPugi.size();
  }
  return result;
}

std::string FullBackingFilename(const Chain& chain, size_t i) {
  if (i >= chain.elements.size()) return "";
  const ChainElement& element = chain.elements[i];
  if (!element.meta || !element.meta->backing) return "";
  const std::string& raw = *element.meta->backing;
  if (i + 1 < chain.elements.size()) {
    const ChainElement& next = chain.elements[i + 1];
    if (!next.path.empty()) return next.path;
    if (next.ref && !next.ref->resolved_path.empty()) return next.ref->resolved_path;
    return raw;
  }
  // The chain stopped before the backing was added as an element: classify
  // the string the same way the resolver would, without opening anything.
  if (!raw.empty() && !element.path.empty() && element.path[0] == '/') {
    Result<BackingRef> ref = ClassifyBacking(raw, element.path);
    if (ref.ok() && !ref->resolved_path.empty()) return ref->resolved_path;
  }
  return raw;
}

bool IsLibvirtFormat(std::string_view format) {
  static constexpr std::array<std::string_view, 17> kFormats = {
      "raw", "dir",  "bochs", "cloop", "dmg",  "iso", "vpc", "vdi",  "fat",
      "vhd", "ploop", "luks", "cow",   "qcow", "qcow2", "qed", "vmdk"};
  for (std::string_view f : kFormats) {
    if (f == format) return true;
  }
  return false;
}

std::string ElementFormat(const ChainElement& element) {
  if (!element.format.empty()) return element.format;
  if (element.meta) return element.meta->format;
  return "";
}

}  // namespace chainfs::core::render_internal
