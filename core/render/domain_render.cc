#include "core/render/domain_render.h"

#include <pugixml.hpp>

#include "core/render/render_util.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

using render_internal::IsLibvirtFormat;

// Returns true if element `e` appears in disk.xml: given in the XML, or
// detected and opened with a format libvirt knows.
bool Shown(const ChainElement& e) {
  if (e.origin == ElementOrigin::kXml) return true;
  return (e.network || e.stat) && IsLibvirtFormat(e.format);
}

// libvirt's storage type of a detected element.
std::string DetectedType(const ChainElement& e) {
  if (e.network) return "network";
  return e.stat && e.stat->IsBlockDevice() ? "block" : "file";
}

void SetIndex(pugi::xml_node node, int index) {
  node.remove_attribute("index");
  node.append_attribute("index") = fmt::format("{}", index).c_str();
}

// Returns the explicit <backingStore> nodes of the definition, top down.
std::vector<pugi::xml_node> ExplicitNodes(pugi::xml_node disk) {
  std::vector<pugi::xml_node> out;
  pugi::xml_node level = disk;
  while (pugi::xml_node next = level.child("backingStore")) {
    if (!next.attribute("type") && !next.first_child()) break;
    out.push_back(next);
    level = next;
  }
  return out;
}

// Builds the <backingStore> of detected element `e` under `parent`.
pugi::xml_node AppendDetected(pugi::xml_node parent, const ChainElement& e, int index) {
  pugi::xml_node b = parent.append_child("backingStore");
  std::string type = DetectedType(e);
  b.append_attribute("type") = type.c_str();
  b.append_attribute("index") = fmt::format("{}", index).c_str();
  b.append_child("format").append_attribute("type") = e.format.c_str();
  pugi::xml_node source = b.append_child("source");
  source.append_attribute(type == "block" ? "dev" : "file") = e.path.c_str();
  return b;
}

// Copies an explicit <backingStore> without its nested chain, as libvirt
// prints it: <format> then <source>, then the rest.
pugi::xml_node AppendExplicit(pugi::xml_node parent, pugi::xml_node given, int index) {
  pugi::xml_node b = parent.append_child("backingStore");
  for (pugi::xml_attribute a : given.attributes()) {
    if (std::string_view(a.name()) != "index") b.append_copy(a);
  }
  b.append_attribute("index") = fmt::format("{}", index).c_str();
  if (pugi::xml_node f = given.child("format")) b.append_copy(f);
  if (pugi::xml_node s = given.child("source")) {
    pugi::xml_node copy = b.append_copy(s);
    copy.remove_attribute("index");
  }
  for (pugi::xml_node c : given.children()) {
    std::string_view n = c.name();
    if (n == "format" || n == "source" || n == "backingStore") continue;
    b.append_copy(c);
  }
  return b;
}

// Removes libvirt's private status data (<privateData>: node names, the
// relative path) wherever it sits: virsh dumpxml never shows it.
void StripPrivateData(pugi::xml_node node) {
  for (pugi::xml_node c = node.first_child(); c;) {
    pugi::xml_node next = c.next_sibling();
    if (std::string_view(c.name()) == "privateData") {
      node.remove_child(c);
    } else {
      StripPrivateData(c);
    }
    c = next;
  }
}

}  // namespace

std::string RenderDomainDiskXml(const DiskDef& disk, const Chain& chain) {
  pugi::xml_document in;
  if (!in.load_buffer(disk.xml.data(), disk.xml.size())) return "";
  pugi::xml_node given = in.document_element();
  if (!given || std::string_view(given.name()) != "disk") return "";

  pugi::xml_document doc;
  pugi::xml_node out = doc.append_child("disk");
  for (pugi::xml_attribute a : given.attributes()) out.append_copy(a);
  const std::vector<pugi::xml_node> explicit_nodes = ExplicitNodes(given);
  const bool live_indexes = !chain.elements.empty() && chain.elements[0].xml_index.has_value();
  auto index_of = [&](size_t i) {
    const ChainElement& e = chain.elements[i];
    return live_indexes && e.xml_index ? *e.xml_index : int(i) + 1;
  };

  bool placed = false;
  auto place_chain = [&]() {
    placed = true;
    pugi::xml_node source = given.child("source");
    if (!source) return;
    pugi::xml_node top = out.append_copy(source);
    if (!chain.elements.empty()) SetIndex(top, index_of(0));
    pugi::xml_node parent = out;
    bool all = true;
    for (size_t i = 1; i < chain.elements.size(); ++i) {
      const ChainElement& e = chain.elements[i];
      if (!Shown(e)) {
        all = false;
        break;
      }
      if (e.origin == ElementOrigin::kXml && i - 1 < explicit_nodes.size()) {
        parent = AppendExplicit(parent, explicit_nodes[i - 1], index_of(i));
      } else {
        parent = AppendDetected(parent, e, index_of(i));
      }
    }
    if (chain.complete && all) parent.append_child("backingStore");
  };
  for (pugi::xml_node c : given.children()) {
    std::string_view n = c.name();
    if (n == "backingStore") continue;
    if (n == "source") {
      place_chain();
      continue;
    }
    pugi::xml_node copy = out.append_copy(c);
    if (n == "driver" && !chain.elements.empty() && !copy.attribute("type") &&
        IsLibvirtFormat(chain.elements[0].format)) {
      copy.append_attribute("type") = chain.elements[0].format.c_str();
    }
  }
  if (!placed) place_chain();
  StripPrivateData(out);
  return render_internal::SaveXml(doc);
}

std::string RenderDiskField(const DiskDef& disk, const Chain& chain, std::string_view field) {
  auto line = [](std::string_view value) { return OneValue(value) + "\n"; };
  if (field == "source") {
    if (!disk.top.HasLocation()) return "";
    return line(disk.top.Describe());
  }
  if (field == "type") return line(disk.top.type);
  if (field == "format") {
    if (!chain.elements.empty() && !chain.elements[0].format.empty()) {
      return line(chain.elements[0].format);
    }
    return disk.top.format.empty() ? "" : line(disk.top.format);
  }
  return "";
}

std::string RenderElementOrigin(const ChainElement& element) {
  return element.origin == ElementOrigin::kXml ? "xml\n" : "metadata\n";
}

std::string RenderElementIndex(const Chain& chain, size_t i) {
  if (i >= chain.elements.size()) return "";
  const bool live = chain.elements[0].xml_index.has_value();
  const ChainElement& e = chain.elements[i];
  int index = live && e.xml_index ? *e.xml_index : int(i) + 1;
  return fmt::format("{}\n", index);
}

std::string RenderDomainLine(const DomainEntry& entry) {
  std::string disks;
  for (const DiskDef& d : entry.def.disks) {
    if (!disks.empty()) disks += ' ';
    disks += OneValue(d.target) + "=" + (d.top.HasLocation() ? OneValue(d.top.Describe()) : "-");
  }
  return fmt::format("{}\t{}\t{}\n", OneValue(entry.def.name), entry.State(), disks);
}

std::string RenderDomainState(const DomainEntry& entry) { return entry.State() + "\n"; }

std::string RenderDomainUuid(const DomainEntry& entry) {
  return entry.def.uuid.empty() ? "" : OneValue(entry.def.uuid) + "\n";
}

std::string RenderUsers(const std::vector<std::string>& users) {
  std::string out;
  for (const std::string& u : users) out += OneValue(u) + "\n";
  return out;
}

}  // namespace chainfs::core
