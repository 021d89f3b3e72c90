// `disk.xml`: a libvirt domain <disk> whose nested <backingStore> elements
// spell out the whole chain, so that libvirt does not have to probe
// anything (DESIGN section 4).
#include <fmt/format.h>

#include <array>
#include <cctype>
#include <string>

#include "core/render/render.h"
#include "core/render/render_util.h"

namespace chainfs::core {
namespace {

using render_internal::ElementFormat;
using render_internal::IsLibvirtFormat;

// Network protocols that libvirt's domain schema accepts with a name and one
// host. Others (rbd with monitors, ssh, vxhs, ...) are not spelled out.
bool IsExpressibleProtocol(std::string_view protocol) {
  static constexpr std::array<std::string_view, 8> kProtocols = {
      "nbd", "gluster", "iscsi", "http", "https", "ftp", "ftps", "tftp"};
  for (std::string_view p : kProtocols) {
    if (p == protocol) return true;
  }
  return false;
}

// Returns true if `host` fits libvirt's <host name=...>: a DNS name or an
// IPv4/IPv6 address (schema types dnsName and ipAddr).
bool IsSchemaHost(std::string_view host) {
  if (host.empty()) return false;
  bool ipv6 = host.find(':') != std::string_view::npos;
  for (char c : host) {
    bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    bool ok = ipv6 ? (std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')
                   : (alnum || c == '.' || c == '-');
    if (!ok) return false;
  }
  return true;
}

// Returns true if `port` is empty or a decimal number (schema unsignedInt).
bool IsSchemaPort(std::string_view port) {
  if (port.size() > 10) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// How one element appears in a <disk> or <backingStore>.
struct SourceSpec {
  enum Kind { kFile, kBlock, kNetwork, kNone } kind = kNone;
  std::string path;          // kFile, kBlock
  const NetworkSource* net = nullptr;  // kNetwork
};

SourceSpec DescribeSource(const ChainElement& element) {
  SourceSpec spec;
  const NetworkSource* net =
      element.ref && element.ref->network ? &*element.ref->network : nullptr;
  if (element.network || (element.ref && !element.ref->IsLocal())) {
    // json:{"file": {"driver": "file", "filename": ...}} is a local file.
    if (net && net->driver == "file" && !net->file.empty() && net->file[0] == '/') {
      spec.kind = SourceSpec::kFile;
      spec.path = net->file;
      return spec;
    }
    if (!net || !IsExpressibleProtocol(net->protocol)) return spec;
    // A host the schema cannot carry (a hostile json: or URI string) is not
    // spelled out: the chain's XML stays valid and claims nothing false.
    bool has_host = net->transport == "unix"
                        ? !net->socket.empty() && net->socket[0] == '/'
                        : IsSchemaHost(net->host) && IsSchemaPort(net->port);
    if (!has_host || (net->protocol != "nbd" && net->name.empty())) return spec;
    spec.kind = SourceSpec::kNetwork;
    spec.net = net;
    return spec;
  }
  if (element.path.empty() || element.path[0] != '/') return spec;
  spec.kind = element.stat && element.stat->IsBlockDevice() ? SourceSpec::kBlock
                                                             : SourceSpec::kFile;
  spec.path = element.path;
  return spec;
}

const char* TypeName(const SourceSpec& spec) {
  switch (spec.kind) {
    case SourceSpec::kBlock: return "block";
    case SourceSpec::kNetwork: return "network";
    default: return "file";
  }
}

void AddSource(pugi::xml_node parent, const SourceSpec& spec) {
  pugi::xml_node source = parent.append_child("source");
  switch (spec.kind) {
    case SourceSpec::kFile:
      source.append_attribute("file") = spec.path.c_str();
      break;
    case SourceSpec::kBlock:
      source.append_attribute("dev") = spec.path.c_str();
      break;
    case SourceSpec::kNetwork: {
      const NetworkSource& net = *spec.net;
      source.append_attribute("protocol") = net.protocol.c_str();
      if (!net.name.empty()) source.append_attribute("name") = net.name.c_str();
      pugi::xml_node host = source.append_child("host");
      if (net.transport == "unix") {
        host.append_attribute("transport") = "unix";
        host.append_attribute("socket") = net.socket.c_str();
      } else {
        // libvirt leaves out the default transport (tcp).
        if (net.transport == "rdma") host.append_attribute("transport") = "rdma";
        host.append_attribute("name") = net.host.c_str();
        if (!net.port.empty()) host.append_attribute("port") = net.port.c_str();
      }
      break;
    }
    case SourceSpec::kNone:
      break;
  }
}

}  // namespace

std::string RenderDiskXml(const Chain& chain) {
  if (chain.elements.empty()) return "";
  const ChainElement& top = chain.elements[0];
  SourceSpec top_source = DescribeSource(top);
  if (top_source.kind == SourceSpec::kNone) return "";

  pugi::xml_document doc;
  pugi::xml_node disk = doc.append_child("disk");
  disk.append_attribute("type") = TypeName(top_source);
  disk.append_attribute("device") = "disk";
  pugi::xml_node driver = disk.append_child("driver");
  driver.append_attribute("name") = "qemu";
  const std::string top_format = ElementFormat(top);
  if (IsLibvirtFormat(top_format)) driver.append_attribute("type") = top_format.c_str();
  AddSource(disk, top_source);

  // Nest one <backingStore> per backing element. An element libvirt cannot
  // express (format unknown to libvirt or not determined, a network source
  // outside its schema) ends the spelled-out part: leaving the chain open
  // tells libvirt nothing false, whereas a closing <backingStore/> would
  // claim the image has no backing.
  pugi::xml_node parent = disk;
  bool spelled_out_all = true;
  for (size_t i = 1; i < chain.elements.size(); ++i) {
    const ChainElement& element = chain.elements[i];
    const std::string format = ElementFormat(element);
    SourceSpec spec = DescribeSource(element);
    if (!IsLibvirtFormat(format) || spec.kind == SourceSpec::kNone) {
      spelled_out_all = false;
      break;
    }
    pugi::xml_node backing = parent.append_child("backingStore");
    backing.append_attribute("type") = TypeName(spec);
    backing.append_attribute("index") = fmt::format("{}", i).c_str();
    backing.append_child("format").append_attribute("type") = format.c_str();
    AddSource(backing, spec);
    parent = backing;
  }
  if (chain.complete && spelled_out_all) parent.append_child("backingStore");

  pugi::xml_node target = disk.append_child("target");
  target.append_attribute("dev") = "vda";
  target.append_attribute("bus") = "virtio";
  return render_internal::SaveXml(doc);
}

}  // namespace chainfs::core
