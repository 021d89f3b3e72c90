// `.pool.xml`: virsh pool-dumpxml of a pool, with live sizes.
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <fmt/format.h>

#include <cstdint>
#include <string>

#include "core/render/render.h"
#include "core/render/render_util.h"

namespace chainfs::core {
namespace {

uint64_t Fnv1a(std::string_view data, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Derives a stable UUID for a pool whose definition has none (an ad-hoc
// --pool NAME=PATH), so that .pool.xml does not change between reads. Marked
// as an RFC 9562 version 8 (implementation-defined) UUID.
std::string DerivedUuid(const PoolDef& pool) {
  std::string key = pool.name + '\0' + pool.target_path;
  uint64_t hi = Fnv1a(key, 0xcbf29ce484222325ULL);
  uint64_t lo = Fnv1a(key, 0x84222325cbf29ce4ULL ^ hi);
  hi = (hi & ~0xf000ULL) | 0x8000ULL;                              // version 8
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;      // RFC variant
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xffff,
                     hi & 0xffff, lo >> 48, lo & 0xffffffffffffULL);
}

void AddBytes(pugi::xml_node parent, const char* name, uint64_t bytes) {
  pugi::xml_node node = parent.append_child(name);
  node.append_attribute("unit") = "bytes";
  node.text().set(fmt::format("{}", bytes).c_str());
}

void AddText(pugi::xml_node parent, const char* name, const std::string& text) {
  parent.append_child(name).text().set(text.c_str());
}

// Re-emits the definition's <source>; libvirt prints an empty one as an
// open and a close tag on two lines.
void AddSource(pugi::xml_node pool_node, const PoolDef& pool) {
  if (!pool.source_xml.empty()) {
    pugi::xml_document src;
    if (src.load_buffer(pool.source_xml.data(), pool.source_xml.size(), pugi::parse_default)) {
      pugi::xml_node root = src.document_element();
      if (root && std::string_view(root.name()) == "source" &&
          (root.first_child() || root.first_attribute())) {
        pool_node.append_copy(root);
        return;
      }
    }
  }
  pool_node.append_child("source").append_child(pugi::node_pcdata).set_value("\n  ");
}

}  // namespace

PoolSpace StatPoolSpace(const PoolDef& pool) {
  PoolSpace space;
  if (pool.target_path.empty()) return space;
  struct statvfs sv;
  if (::statvfs(pool.target_path.c_str(), &sv) != 0) return space;
  space.capacity = uint64_t(sv.f_frsize) * uint64_t(sv.f_blocks);
  space.available = uint64_t(sv.f_bfree) * uint64_t(sv.f_frsize);
  return space;
}

std::string RenderPoolXml(const PoolDef& pool, const PoolSpace& space) {
  pugi::xml_document doc;
  pugi::xml_node node = doc.append_child("pool");
  node.append_attribute("type") = pool.type.empty() ? "dir" : pool.type.c_str();
  AddText(node, "name", pool.name);
  AddText(node, "uuid", pool.uuid.empty() ? DerivedUuid(pool) : pool.uuid);
  AddBytes(node, "capacity", space.capacity);
  uint64_t allocation = space.capacity >= space.available ? space.capacity - space.available : 0;
  AddBytes(node, "allocation", allocation);
  AddBytes(node, "available", space.available);
  AddSource(node, pool);
  pugi::xml_node target = node.append_child("target");
  AddText(target, "path", pool.target_path);
  struct stat st;
  if (!pool.target_path.empty() && ::stat(pool.target_path.c_str(), &st) == 0) {
    pugi::xml_node perms = target.append_child("permissions");
    AddText(perms, "mode", fmt::format("0{:o}", st.st_mode & 07777));
    AddText(perms, "owner", fmt::format("{}", int32_t(st.st_uid)));
    AddText(perms, "group", fmt::format("{}", int32_t(st.st_gid)));
  }
  return render_internal::SaveXml(doc);
}

}  // namespace chainfs::core
