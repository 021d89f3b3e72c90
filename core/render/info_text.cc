// `info`: qemu-img info --backing-chain's human format (qemu 7.2), then the
// problems.
#include <fmt/format.h>

#include <string>

#include "core/format/driver.h"
#include "core/render/render.h"
#include "core/render/render_util.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

using render_internal::ElementFormat;
using render_internal::FormatSize;
using render_internal::FullBackingFilename;

void DumpValue(std::string& out, int indent, const Json& value);

bool IsComposite(const Json& v) { return v.is_object() || v.is_array(); }

// Writes a scalar as qemu's human dump does: strings bare, booleans as
// true/false, numbers in decimal.
std::string ScalarText(const Json& v) {
  if (v.is_string()) return OneLine(v.as_string());
  if (v.is_bool()) return v.as_bool() ? "true" : "false";
  return v.Dump();
}

// Writes one "name: value" line, or "name:" and the indented members of a
// composite value.
void DumpMember(std::string& out, int indent, const std::string& label, const Json& value) {
  out.append(size_t(indent) * 4, ' ');
  out += OneLine(label);
  if (IsComposite(value)) {
    out += ":\n";
    DumpValue(out, indent + 1, value);
  } else {
    out += ": ";
    out += ScalarText(value);
    out += '\n';
  }
}

void DumpValue(std::string& out, int indent, const Json& value) {
  if (indent > 64) return;  // Json::Parse caps depth; guard hand-built values too
  if (value.is_object()) {
    for (const auto& [key, member] : value.as_object()) {
      // qemu shows QAPI member names with dashes turned into spaces.
      std::string label = key;
      for (char& c : label) {
        if (c == '-') c = ' ';
      }
      DumpMember(out, indent, label, member);
    }
  } else if (value.is_array()) {
    const Json::Array& items = value.as_array();
    for (size_t i = 0; i < items.size(); ++i) {
      DumpMember(out, indent, fmt::format("[{}]", i), items[i]);
    }
  } else {
    out.append(size_t(indent) * 4, ' ');
    out += ScalarText(value);
    out += '\n';
  }
}

void RenderElement(std::string& out, const Chain& chain, size_t i) {
  const ChainElement& element = chain.elements[i];
  const std::string format = ElementFormat(element);
  out += fmt::format("image: {}\n", OneLine(element.path));
  if (!element.meta) {
    // Not opened (missing, unreadable, network, stopped by a problem):
    // show what is known without pretending to know the rest.
    if (!format.empty()) out += fmt::format("file format: {}\n", OneLine(format));
    if (element.stat) out += fmt::format("disk size: {}\n", FormatSize(element.stat->allocation));
    return;
  }
  const ImageMeta& meta = *element.meta;
  out += fmt::format("file format: {}\n", OneLine(format));
  out += fmt::format("virtual size: {} ({} bytes)\n", FormatSize(meta.virtual_size),
                     meta.virtual_size);
  out += fmt::format("disk size: {}\n",
                     element.stat ? FormatSize(QemuActualSize(element.stat->allocation, &meta))
                                  : "unavailable");
  if (meta.encrypted) out += "encrypted: yes\n";
  if (meta.cluster_size) out += fmt::format("cluster_size: {}\n", *meta.cluster_size);
  if (meta.dirty) out += "cleanly shut down: no\n";
  if (meta.backing) {
    out += fmt::format("backing file: {}", OneLine(*meta.backing));
    std::string full = FullBackingFilename(chain, i);
    if (full != *meta.backing) out += fmt::format(" (actual path: {})", OneLine(full));
    out += '\n';
  }
  if (meta.backing_format) {
    out += fmt::format("backing file format: {}\n", OneLine(*meta.backing_format));
  }
  if (!meta.format_specific.is_null()) {
    out += "Format specific information:\n";
    const Json* data = meta.format_specific.Find("data");
    DumpValue(out, 1, data ? *data : meta.format_specific);
  }
}

}  // namespace

std::string RenderInfoText(const Chain& chain) {
  std::string out;
  for (size_t i = 0; i < chain.elements.size(); ++i) {
    if (i) out += '\n';
    RenderElement(out, chain, i);
  }
  if (!chain.problems.empty()) {
    if (!out.empty()) out += '\n';
    out += "Problems:\n";
    out += RenderProblems(chain);
  }
  return out;
}

}  // namespace chainfs::core
