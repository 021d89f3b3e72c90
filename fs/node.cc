#include "fs/node.h"

#include <fmt/format.h>

#include <algorithm>

namespace chainfs::fs {

bool NodeKey::IsDir() const {
  switch (kind) {
    case NodeKind::kRoot:
    case NodeKind::kControlDir:
    case NodeKind::kPoolDir:
    case NodeKind::kVolumeDir:
    case NodeKind::kChainDir:
    case NodeKind::kElementDir:
    case NodeKind::kDomainsDir:
    case NodeKind::kDomainDir:
    case NodeKind::kDiskDir:
    case NodeKind::kDiskChainDir:
    case NodeKind::kDiskElementDir:
      return true;
    default:
      return false;
  }
}

std::string EncodePrefix(const std::string& pool, const std::string& volume) {
  // Names never contain '/' or NUL, so '/' is a safe separator.
  std::string out = pool;
  out += '/';
  if (!volume.empty()) {
    out += volume;
    out += '/';
  }
  return out;
}

std::string NodeKey::Encode() const {
  return fmt::format("{}/{}/{}/{}/{}", pool, volume, static_cast<int>(kind), index, file);
}

std::string NodeKey::Path() const {
  switch (kind) {
    case NodeKind::kRoot: return "/";
    case NodeKind::kControlDir: return fmt::format("/{}", kControlDirName);
    case NodeKind::kControlFile: return fmt::format("/{}/{}", kControlDirName, file);
    case NodeKind::kPoolDir: return "/" + pool;
    case NodeKind::kPoolFile: return fmt::format("/{}/{}", pool, file);
    case NodeKind::kVolumeDir: return fmt::format("/{}/{}", pool, volume);
    case NodeKind::kVolumeFile: return fmt::format("/{}/{}/{}", pool, volume, file);
    case NodeKind::kChainDir: return fmt::format("/{}/{}/{}", pool, volume, kChainDirName);
    case NodeKind::kElementDir: return fmt::format("/{}/{}/{}/{}", pool, volume, kChainDirName, index);
    case NodeKind::kElementFile:
      return fmt::format("/{}/{}/{}/{}/{}", pool, volume, kChainDirName, index, file);
    case NodeKind::kElementLink:
      return fmt::format("/{}/{}/{}/{}/{}", pool, volume, kChainDirName, index, kVolumeLinkName);
    case NodeKind::kDomainsDir: return fmt::format("/{}", kDomainsDirName);
    case NodeKind::kDomainDir: return fmt::format("/{}/{}", kDomainsDirName, pool);
    case NodeKind::kDomainFile: return fmt::format("/{}/{}/{}", kDomainsDirName, pool, file);
    case NodeKind::kDiskDir: return fmt::format("/{}/{}/{}", kDomainsDirName, pool, volume);
    case NodeKind::kDiskFile:
      return fmt::format("/{}/{}/{}/{}", kDomainsDirName, pool, volume, file);
    case NodeKind::kDiskChainDir:
      return fmt::format("/{}/{}/{}/{}", kDomainsDirName, pool, volume, kChainDirName);
    case NodeKind::kDiskElementDir:
      return fmt::format("/{}/{}/{}/{}/{}", kDomainsDirName, pool, volume, kChainDirName, index);
    case NodeKind::kDiskElementFile:
      return fmt::format("/{}/{}/{}/{}/{}/{}", kDomainsDirName, pool, volume, kChainDirName, index,
                         file);
    case NodeKind::kDiskElementLink:
      return fmt::format("/{}/{}/{}/{}/{}/{}", kDomainsDirName, pool, volume, kChainDirName, index,
                         kVolumeLinkName);
  }
  return "?";
}

const std::vector<std::string>& ControlFileNames() {
  static const std::vector<std::string> names = {"log", "metrics", "stats", "version"};
  return names;
}

const std::vector<std::string>& VolumeFileNames() {
  static const std::vector<std::string> names = {
      "allocation", "backing", "backing_format", "capacity", "data",   "disk.xml", "format",
      "info",       "info.json", "map",           "map.json", "problems", "problems.json",
      "rebase",     "users",     "volume.xml"};
  return names;
}

const std::vector<std::string>& DomainFileNames() {
  static const std::vector<std::string> names = {"domain.xml", "state", "uuid"};
  return names;
}

const std::vector<std::string>& DiskFileNames() {
  static const std::vector<std::string> names = {
      "data", "disk.xml", "format", "info", "info.json", "problems", "problems.json", "source",
      "type"};
  return names;
}

const std::vector<std::string>& DiskElementFileNames() {
  static const std::vector<std::string> names = {"allocation", "backing", "backing_format",
                                                 "capacity",   "format",  "index",
                                                 "origin",     "path"};
  return names;
}

const std::vector<std::string>& ElementFileNames() {
  static const std::vector<std::string> names = {"allocation", "backing", "backing_format",
                                                 "capacity",   "data",    "format",
                                                 "path"};
  return names;
}

bool IsReservedPoolEntry(const std::string& name) {
  return name == kPoolXmlName || name == kPoolTreeName || name == ".create" ||
         name.rfind(kControlDirName, 0) == 0;
}

}  // namespace chainfs::fs
