// `volume.xml`: virsh vol-dumpxml of a volume in a dir pool. Element order
// and content follow libvirt's volume formatter: name, key, capacity,
// allocation, physical, <target> (path, format, permissions, timestamps,
// encryption, compat, clusterSize, features), then a one-level
// <backingStore> (path, format, permissions, timestamps). A subdirectory of
// the pool is a volume of type 'dir' (see DirVolumeChain).
#include <fmt/format.h>
#include <sys/stat.h>

#include <string>

#include "core/chain/backing_ref.h"
#include "core/render/render.h"
#include "core/render/render_util.h"

namespace chainfs::core {
namespace {

using render_internal::ElementFormat;
using render_internal::IsLibvirtFormat;

void AddText(pugi::xml_node parent, const char* name, const std::string& text) {
  parent.append_child(name).text().set(text.c_str());
}

void AddBytes(pugi::xml_node parent, const char* name, uint64_t bytes) {
  pugi::xml_node node = parent.append_child(name);
  node.append_attribute("unit") = "bytes";
  node.text().set(fmt::format("{}", bytes).c_str());
}

// Adds <format type=.../>, left out when libvirt has no name for the
// format (e.g. vhdx, or not determined): libvirt would call such a file
// raw, which is not true and not safe to suggest.
void AddFormat(pugi::xml_node parent, const std::string& format) {
  if (!IsLibvirtFormat(format)) return;
  parent.append_child("format").append_attribute("type") = format.c_str();
}

std::string Timestamp(const struct timespec& ts) {
  if (ts.tv_nsec > 0) return fmt::format("{}.{:09}", int64_t(ts.tv_sec), long(ts.tv_nsec));
  return fmt::format("{}", int64_t(ts.tv_sec));
}

// Adds <permissions> and <timestamps> from a stat, as libvirt's refresh
// fills them (mode limited to the rwx bits, owner and group as numbers).
// No <atime> (the schema makes it optional): every read of the image moves
// it, chainfs's own included, so it would describe the last reader rather
// than the volume, and a document kept by the mount and one printed by
// chainctl would differ after any read. <btime> is what libvirt prints on
// Linux: it never reads a birth time there and prints its unset value, 0,
// for every volume and backing store, whatever the filesystem records.
void AddStat(pugi::xml_node parent, const FileStat& st) {
  pugi::xml_node perms = parent.append_child("permissions");
  AddText(perms, "mode", fmt::format("0{:o}", st.mode & 0777));
  AddText(perms, "owner", fmt::format("{}", int32_t(st.uid)));
  AddText(perms, "group", fmt::format("{}", int32_t(st.gid)));
  pugi::xml_node times = parent.append_child("timestamps");
  AddText(times, "mtime", Timestamp(st.mtime));
  AddText(times, "ctime", Timestamp(st.ctime));
  AddText(times, "btime", "0");
}

const char* EncryptionFormat(const ImageMeta& meta) {
  if (meta.encryption_format == "luks") return "luks";
  if (meta.encryption_format == "aes") return "qcow";
  return "default";
}

void AddTarget(pugi::xml_node volume, const ChainElement& top) {
  pugi::xml_node target = volume.append_child("target");
  AddText(target, "path", top.path);
  const std::string format = ElementFormat(top);
  AddFormat(target, format);
  if (top.stat) AddStat(target, *top.stat);
  if (!top.meta) return;
  const ImageMeta& meta = *top.meta;
  if (meta.encrypted) {
    target.append_child("encryption").append_attribute("format") = EncryptionFormat(meta);
  }
  // libvirt knows a compat level only with the qcow2 v3 feature set: a v2
  // image (compat 0.10) has no <compat> element.
  if (meta.compat && *meta.compat != "0.10") AddText(target, "compat", *meta.compat);
  // libvirt reads the cluster size of qcow2 headers only.
  if (format == "qcow2" && meta.cluster_size && *meta.cluster_size > 0) {
    pugi::xml_node cluster = target.append_child("clusterSize");
    cluster.append_attribute("unit") = "B";
    cluster.text().set(fmt::format("{}", *meta.cluster_size).c_str());
  }
  // libvirt has a feature set for qcow2 v3 (compat 1.1) only: printed as
  // <features/> when empty, absent for v2.
  if (format == "qcow2" && meta.compat && *meta.compat != "0.10") {
    pugi::xml_node features = target.append_child("features");
    for (const char* name : {"lazy_refcounts", "extended_l2"}) {
      for (const std::string& f : meta.features) {
        if (f == name) {
          features.append_child(name);
          break;
        }
      }
    }
  }
}

void AddBackingStore(pugi::xml_node volume, const Chain& chain) {
  const ChainElement& top = chain.elements[0];
  if (!top.meta || !top.meta->backing) return;
  // The volume schema allows only an absolute file path here; a network
  // backing (nbd://..., json:{...}) is spelled out in disk.xml instead.
  const std::string path = render_internal::FullBackingFilename(chain, 0);
  if (path.empty() || path[0] != '/') return;
  pugi::xml_node backing = volume.append_child("backingStore");
  AddText(backing, "path", path);
  const ChainElement* next = chain.elements.size() > 1 ? &chain.elements[1] : nullptr;
  std::string format = next ? ElementFormat(*next) : "";
  if (format.empty() && top.meta->backing_format) format = *top.meta->backing_format;
  AddFormat(backing, format);
  if (next && next->stat && !next->network) AddStat(backing, *next->stat);
}

}  // namespace

std::string RenderVolumeXml(const Chain& chain) {
  if (chain.elements.empty()) return "";
  const ChainElement& top = chain.elements[0];
  pugi::xml_document doc;
  pugi::xml_node volume = doc.append_child("volume");
  const bool dir = top.stat && S_ISDIR(top.stat->mode);
  const char* type = "file";
  if (dir) {
    type = "dir";
  } else if (top.stat && top.stat->IsBlockDevice()) {
    type = "block";
  }
  volume.append_attribute("type") = type;
  AddText(volume, "name", BaseName(top.path));
  AddText(volume, "key", top.path);
  uint64_t capacity = 0;
  if (top.meta) {
    capacity = top.meta->virtual_size;
  } else if (top.stat) {
    capacity = top.stat->id.size;
  }
  AddBytes(volume, "capacity", capacity);
  AddBytes(volume, "allocation", top.stat ? top.stat->allocation : 0);
  // libvirt prints <physical> only when it is known (non-zero); a
  // directory has none.
  if (!dir && top.stat && top.stat->id.size > 0) {
    AddBytes(volume, "physical", top.stat->id.size);
  }
  AddTarget(volume, top);
  AddBackingStore(volume, chain);
  return render_internal::SaveXml(doc);
}

}  // namespace chainfs::core
