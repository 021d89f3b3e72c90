#include "core/pool/pool_def.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pugixml.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "core/util/small_file.h"

namespace chainfs::core {
namespace {

// Pool definitions are small; anything larger is not one.
constexpr size_t kMaxPoolXmlBytes = 1 << 20;

bool HasControlCharacter(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    unsigned char u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// Checks that a pool name can be a directory of the mount.
Status ValidatePoolName(std::string_view name) {
  if (name.empty()) return Error(Code::kInvalidArgument, "pool name is empty");
  if (name == "." || name == "..") {
    return Error(Code::kInvalidArgument, "pool name '{}' is not a directory name", name);
  }
  if (name.find('/') != std::string_view::npos) {
    return Error(Code::kInvalidArgument, "pool name '{}' contains '/'", name);
  }
  if (name == ".chainfs") {
    return Error(Code::kInvalidArgument, "pool name '.chainfs' is reserved for the control directory");
  }
  if (name == ".domains") {
    return Error(Code::kInvalidArgument, "pool name '.domains' is reserved for the domains' view");
  }
  if (HasControlCharacter(name)) {
    return Error(Code::kInvalidArgument, "pool name contains control characters");
  }
  return Status::Ok();
}

// Collapses repeated slashes and drops a trailing one (as libvirt's
// virFileSanitizePath does), so volume paths join cleanly.
std::string SanitizePath(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

}  // namespace

bool PoolDef::Browsable() const {
  static constexpr std::array<std::string_view, 8> kTypes = {
      "dir", "fs", "netfs", "logical", "disk", "iscsi", "scsi", "mpath"};
  if (target_path.empty() || target_path[0] != '/') return false;
  return std::find(kTypes.begin(), kTypes.end(), std::string_view(type)) != kTypes.end();
}

Result<PoolDef> ParsePoolXml(std::string_view xml, std::string_view origin) {
  if (xml.size() > kMaxPoolXmlBytes) {
    return Error(Code::kInvalidArgument, "pool XML larger than {} bytes", kMaxPoolXmlBytes);
  }
  pugi::xml_document doc;
  pugi::xml_parse_result parsed = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default);
  if (!parsed) {
    return Error(Code::kInvalidArgument, "not well-formed XML: {} at offset {}",
                 parsed.description(), parsed.offset);
  }
  pugi::xml_node root = doc.document_element();
  if (!root) return Error(Code::kInvalidArgument, "no root element");
  if (std::string_view(root.name()) != "pool") {
    return Error(Code::kInvalidArgument, "unexpected root element <{}>, expecting <pool>",
                 root.name());
  }
  PoolDef def;
  def.origin = std::string(origin);
  def.type = root.attribute("type").value();
  if (def.type.empty()) return Error(Code::kInvalidArgument, "<pool> has no type attribute");
  pugi::xml_node name = root.child("name");
  if (!name) return Error(Code::kInvalidArgument, "missing pool <name> element");
  def.name = name.child_value();
  CHAINFS_RETURN_IF_ERROR(ValidatePoolName(def.name));
  def.uuid = root.child("uuid").child_value();

  pugi::xml_node source = root.child("source");
  if (source) {
    std::ostringstream out;
    source.print(out, "", pugi::format_raw | pugi::format_attribute_single_quote,
                 pugi::encoding_utf8);
    def.source_xml = out.str();
  }
  pugi::xml_node path = root.child("target").child("path");
  if (path) {
    def.target_path = SanitizePath(path.child_value());
  } else if (def.type == "logical") {
    // libvirt derives a logical pool's target from its volume group name.
    std::string vg = source.child("name").child_value();
    if (vg.empty()) vg = def.name;
    def.target_path = SanitizePath("/dev/" + vg);
  }
  return def;
}

Result<PoolDef> PoolFromSpec(std::string_view spec) {
  size_t eq = spec.find('=');
  if (eq == std::string_view::npos) {
    return Error(Code::kInvalidArgument, "--pool '{}': expected NAME=PATH", spec);
  }
  std::string_view name = spec.substr(0, eq);
  std::string_view path = spec.substr(eq + 1);
  CHAINFS_RETURN_IF_ERROR(ValidatePoolName(name));
  if (path.empty() || path[0] != '/') {
    return Error(Code::kInvalidArgument, "--pool '{}': PATH must be absolute", spec);
  }
  PoolDef def;
  def.name = std::string(name);
  def.type = "dir";
  def.target_path = SanitizePath(path);
  def.origin = fmt::format("--pool {}", spec);
  return def;
}

PoolLoad LoadPoolDir(const std::string& dir) {
  PoolLoad load;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    int err = errno;
    load.skipped.push_back(fmt::format("{}: cannot open pool folder: {}", dir, std::strerror(err)));
    return load;
  }
  std::vector<std::string> files;
  while (dirent* entry = ::readdir(d)) {
    std::string_view name = entry->d_name;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".xml") {
      files.emplace_back(name);
    }
  }
  ::closedir(d);
  std::sort(files.begin(), files.end());

  for (const std::string& file : files) {
    std::string path = dir + "/" + file;
    Result<std::string> text = ReadSmallFile(path, kMaxPoolXmlBytes);
    if (!text.ok()) {
      load.skipped.push_back(fmt::format("{}: {}", path, text.status().message()));
      continue;
    }
    Result<PoolDef> def = ParsePoolXml(*text, path);
    if (!def.ok()) {
      load.skipped.push_back(fmt::format("{}: {}", path, def.status().message()));
      continue;
    }
    auto same = std::find_if(load.pools.begin(), load.pools.end(),
                             [&](const PoolDef& p) { return p.name == def->name; });
    if (same != load.pools.end()) {
      load.skipped.push_back(fmt::format("{}: duplicate pool name '{}' (already defined by {})",
                                         path, def->name, same->origin));
      continue;
    }
    load.pools.push_back(std::move(*def));
  }
  std::sort(load.pools.begin(), load.pools.end(),
            [](const PoolDef& a, const PoolDef& b) { return a.name < b.name; });
  return load;
}

}  // namespace chainfs::core
