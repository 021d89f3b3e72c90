// Libvirt storage pool definitions (/etc/libvirt/storage/*.xml), parsed with
// pugixml, and ad-hoc `--pool NAME=PATH` dir pools.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace chainfs::core {

// One pool definition. A value type.
struct PoolDef {
  std::string name;
  std::string type;         // "dir", "fs", "netfs", "logical", ...
  std::string uuid;         // "" when not given
  std::string target_path;  // "" when the pool has no <target><path>
  std::string source_xml;   // the <source> element as written ("" if none), re-emitted by .pool.xml
  std::string origin;       // definition file, or "--pool NAME=PATH"
  // Returns true if the type has a local target path that chainfs lists
  // (dir, fs, netfs, logical, disk, iscsi, scsi, mpath) and one is set.
  bool Browsable() const;
};

// Parses one <pool> document. kInvalidArgument (with the reason) for XML that
// is not well-formed, has no <pool> root, no <name>, a name that cannot be a
// directory name ("", ".", "..", "/", ".chainfs", control characters).
Result<PoolDef> ParsePoolXml(std::string_view xml, std::string_view origin);

// Parses "NAME=PATH" into a dir pool; PATH must be absolute.
Result<PoolDef> PoolFromSpec(std::string_view spec);

// The pools found in a folder, and one log line per file that was skipped.
struct PoolLoad {
  std::vector<PoolDef> pools;           // sorted by name, names unique
  std::vector<std::string> skipped;     // "file: reason"
};

// Reads every *.xml in `dir` (not recursive). A missing folder gives no pools
// and one skipped line; nothing here is fatal.
PoolLoad LoadPoolDir(const std::string& dir);

}  // namespace chainfs::core
