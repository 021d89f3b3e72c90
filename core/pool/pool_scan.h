// Lists the volumes of a browsable pool as libvirt's refresh does: regular
// files and block devices (following symlinks), and in dir, fs and netfs
// pools the subdirectories too (libvirt's volumes of type 'dir'); skipping
// FIFOs, sockets, dangling links, unreadable entries and names with control
// characters; each skip gets a reason line.
#pragma once

#include <sys/stat.h>

#include <string>
#include <vector>

#include "core/chain/chain.h"
#include "core/io/file.h"
#include "core/pool/pool_def.h"

namespace chainfs::core {

struct VolumeEntry {
  std::string name;  // file name in the pool directory
  std::string path;  // target_path + "/" + name
  FileStat stat;     // stat of the target (symlinks followed)
  // Returns true for a subdirectory of the pool folder: a libvirt volume of
  // type 'dir' (format dir, capacity 0), which has no backing chain.
  bool IsDir() const { return S_ISDIR(stat.mode); }
};

struct PoolScan {
  std::vector<VolumeEntry> volumes;   // sorted by name
  std::vector<std::string> skipped;   // "path: reason"
  Status status;                      // not ok if the directory itself could not be read
};

// Scans pool.target_path. Thread-safe (no shared state).
PoolScan ScanPool(const PoolDef& pool);

// Returns true if the subdirectories of a pool of `pool_type` are volumes:
// the pool types whose libvirt backend lists a local folder (dir, fs, netfs).
bool PoolListsDirectories(std::string_view pool_type);

// Returns the one-element chain the renderers describe a directory volume
// from, with the values libvirt reports for it: format "dir", capacity,
// allocation and physical size 0, owner, mode and times of the directory.
// It is complete and healthy (a folder is no problem). `entry` must be a
// directory (IsDir()).
Chain DirVolumeChain(const VolumeEntry& entry);

// Returns true if `name` can be a volume name (no '/', no control characters,
// not "." or "..", not starting with ".chainfs").
bool IsAcceptableVolumeName(std::string_view name);

}  // namespace chainfs::core
