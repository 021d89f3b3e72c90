// Lists the volumes of a browsable pool as libvirt's refresh does: regular
// files and block devices (following symlinks), skipping FIFOs, sockets,
// dangling links, unreadable entries, directories and names with control
// characters; each skip gets a reason line.
#pragma once

#include <string>
#include <vector>

#include "core/io/file.h"
#include "core/pool/pool_def.h"

namespace chainfs::core {

struct VolumeEntry {
  std::string name;  // file name in the pool directory
  std::string path;  // target_path + "/" + name
  FileStat stat;     // stat of the target (symlinks followed)
};

struct PoolScan {
  std::vector<VolumeEntry> volumes;   // sorted by name
  std::vector<std::string> skipped;   // "path: reason"
  Status status;                      // not ok if the directory itself could not be read
};

// Scans pool.target_path. Thread-safe (no shared state).
PoolScan ScanPool(const PoolDef& pool);

// Returns true if `name` can be a volume name (no '/', no control characters,
// not "." or "..", not starting with ".chainfs").
bool IsAcceptableVolumeName(std::string_view name);

}  // namespace chainfs::core
