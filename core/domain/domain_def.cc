#include "core/domain/domain_def.h"

#include <pugixml.hpp>

#include <algorithm>
#include <charconv>
#include <sstream>

namespace chainfs::core {
namespace {

// Prints a node as it was written (attributes single-quoted, as libvirt).
std::string NodeText(const pugi::xml_node& node) {
  std::ostringstream out;
  node.print(out, "  ", pugi::format_indent | pugi::format_attribute_single_quote,
             pugi::encoding_utf8);
  return out.str();
}

std::optional<int> ParseIndexAttr(const pugi::xml_node& node) {
  pugi::xml_attribute a = node.attribute("index");
  if (!a) return std::nullopt;
  std::string_view v = a.value();
  int value = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
  if (ec != std::errc() || ptr != v.data() + v.size() || value < 0) return std::nullopt;
  return value;
}

// Reads the <source> child of `holder` (a <disk> or a <backingStore>) of
// storage type `type` into `out`.
void ReadSource(const pugi::xml_node& holder, const std::string& type, DiskSource& out) {
  out.type = type.empty() ? "file" : type;
  pugi::xml_node source = holder.child("source");
  if (!source) return;
  out.index = ParseIndexAttr(source);
  if (out.type == "file") {
    out.path = source.attribute("file").value();
  } else if (out.type == "block") {
    out.path = source.attribute("dev").value();
  } else if (out.type == "dir") {
    out.path = source.attribute("dir").value();
  } else if (out.type == "volume") {
    out.pool = source.attribute("pool").value();
    out.volume = source.attribute("volume").value();
  } else if (out.type == "network") {
    NetworkSource net;
    net.protocol = source.attribute("protocol").value();
    net.name = source.attribute("name").value();
    bool first = true;
    for (pugi::xml_node host : source.children("host")) {
      std::string transport = host.attribute("transport").value();
      std::string shown;
      if (transport == "unix") {
        shown = fmt::format("unix:{}", host.attribute("socket").value());
      } else {
        shown = host.attribute("name").value();
        if (host.attribute("port")) shown += fmt::format(":{}", host.attribute("port").value());
      }
      out.hosts.push_back(shown);
      if (first) {
        net.transport = transport;
        net.host = host.attribute("name").value();
        net.port = host.attribute("port").value();
        net.socket = host.attribute("socket").value();
        first = false;
      }
    }
    out.network = std::move(net);
  }
  // <auth> sits in the <disk> in older XML and in the <source> in newer.
  pugi::xml_node auth = source.child("auth");
  if (!auth) auth = holder.child("auth");
  if (auth) {
    out.auth_username = auth.attribute("username").value();
    pugi::xml_node secret = auth.child("secret");
    if (secret) {
      std::string id = secret.attribute("usage").value();
      if (id.empty()) id = secret.attribute("uuid").value();
      out.secret = fmt::format("{}:{}", secret.attribute("type").value(), id);
    }
  }
}

DiskDef ReadDisk(const pugi::xml_node& node) {
  DiskDef disk;
  disk.xml = NodeText(node);
  disk.device = node.attribute("device").value();
  if (disk.device.empty()) disk.device = "disk";
  disk.target = node.child("target").attribute("dev").value();
  disk.bus = node.child("target").attribute("bus").value();
  disk.read_only = bool(node.child("readonly"));
  ReadSource(node, node.attribute("type").value(), disk.top);
  disk.top.format = node.child("driver").attribute("type").value();
  // The explicit chain: each <backingStore> nests the next; an empty one
  // (no type attribute and no children) ends it.
  pugi::xml_node level = node;
  for (int depth = 0; depth < 1000; ++depth) {
    pugi::xml_node next = level.child("backingStore");
    if (!next) break;
    if (!next.attribute("type") && !next.first_child()) {
      disk.terminated = true;
      break;
    }
    DiskSource b;
    ReadSource(next, next.attribute("type").value(), b);
    if (!b.index) b.index = ParseIndexAttr(next);
    b.format = next.child("format").attribute("type").value();
    if (b.format.empty()) disk.errors.push_back("missing disk backing store format");
    disk.backing.push_back(std::move(b));
    level = next;
  }
  return disk;
}

Result<pugi::xml_node> LoadRoot(pugi::xml_document& doc, std::string_view xml,
                                std::string_view expected) {
  if (xml.size() > kMaxDomainXmlBytes) {
    return Error(Code::kInvalidArgument, "larger than {} bytes", kMaxDomainXmlBytes);
  }
  pugi::xml_parse_result parsed = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default);
  if (!parsed) {
    return Error(Code::kInvalidArgument, "not well-formed XML: {} at offset {}",
                 parsed.description(), parsed.offset);
  }
  pugi::xml_node root = doc.document_element();
  if (!root || std::string_view(root.name()) != expected) {
    return Error(Code::kInvalidArgument, "unexpected root element <{}>, expecting <{}>",
                 root ? root.name() : "", expected);
  }
  return root;
}

Result<DomainDef> ReadDomain(const pugi::xml_node& root, std::string_view origin) {
  DomainDef def;
  def.origin = std::string(origin);
  def.type = root.attribute("type").value();
  pugi::xml_node name = root.child("name");
  if (!name) return Error(Code::kInvalidArgument, "missing domain <name> element");
  def.name = name.child_value();
  if (!IsDirectoryName(def.name)) {
    return Error(Code::kInvalidArgument, "domain name cannot be a directory name");
  }
  def.uuid = root.child("uuid").child_value();
  for (pugi::xml_node disk : root.child("devices").children("disk")) {
    DiskDef d = ReadDisk(disk);
    if (!IsDirectoryName(d.target)) continue;
    bool duplicate = std::any_of(def.disks.begin(), def.disks.end(),
                                 [&](const DiskDef& other) { return other.target == d.target; });
    if (!duplicate) def.disks.push_back(std::move(d));
  }
  return def;
}

}  // namespace

bool DiskSource::HasLocation() const {
  if (type == "volume") return !pool.empty() && !volume.empty();
  if (type == "network") return network && !network->protocol.empty();
  return !path.empty();
}

std::string DiskSource::Describe() const {
  if (type == "volume") return fmt::format("{}/{}", pool, volume);
  if (type == "network" && network) {
    const NetworkSource& n = *network;
    if (n.protocol == "rbd") return fmt::format("rbd:{}", n.name);
    std::string where;
    if (n.transport == "unix") {
      return fmt::format("{}+unix:///{}?socket={}", n.protocol, n.name, n.socket);
    }
    where = n.host;
    if (!n.port.empty()) where += ":" + n.port;
    return fmt::format("{}://{}/{}", n.protocol, where, n.name);
  }
  return path;
}

bool IsDirectoryName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    unsigned char u = static_cast<unsigned char>(c);
    return c == '/' || u < 0x20 || u == 0x7f;
  });
}

Result<DomainDef> ParseDomainXml(std::string_view xml, std::string_view origin) {
  pugi::xml_document doc;
  Result<pugi::xml_node> root = LoadRoot(doc, xml, "domain");
  if (!root.ok()) return root.status();
  Result<DomainDef> def = ReadDomain(*root, origin);
  if (def.ok()) def->xml = std::string(xml);
  return def;
}

Result<DomainStatus> ParseDomainStatus(std::string_view xml, std::string_view origin) {
  pugi::xml_document doc;
  Result<pugi::xml_node> root = LoadRoot(doc, xml, "domstatus");
  if (!root.ok()) return root.status();
  DomainStatus status;
  status.state = (*root).attribute("state").value();
  status.pid = (*root).attribute("pid").value();
  pugi::xml_node domain = (*root).child("domain");
  if (!domain) return Error(Code::kInvalidArgument, "<domstatus> holds no <domain>");
  Result<DomainDef> live = ReadDomain(domain, origin);
  if (!live.ok()) return live.status();
  status.live = std::move(live).value();
  status.live.xml = NodeText(domain);
  return status;
}

}  // namespace chainfs::core
