// ImageInspector: stats, probes and parses image files, caching parsed
// metadata by (dev, ino, size, mtime, ctime) and format.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

#include "core/format/driver.h"
#include "core/io/file.h"

namespace chainfs::core {

// What the engine knows of one file in one format.
struct Inspection {
  FileStat stat;
  std::string probed_format;  // what the file's bytes look like
  std::string format;         // the format it was parsed as
  Status parse_status;        // ok, or why the header could not be parsed
  std::shared_ptr<const ImageMeta> meta;  // null unless parse_status.ok()
};

// Counters for .chainfs/stats.
struct InspectorStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t probes = 0;
};

// Thread-safe: any number of threads may call Inspect at once.
// Lock order: mu_ only; never held during I/O.
class ImageInspector {
 public:
  explicit ImageInspector(size_t max_entries = 65536) : max_entries_(max_entries) {}

  // Inspects `path` (following symlinks). `format` empty = parse as the
  // probed format. Errors: kNotFound / kPermissionDenied / kIo when the file
  // cannot be opened, kUnsupported when it is not a regular file or block
  // device, kInvalidArgument when `format` is not a known format. A header
  // that cannot be parsed is NOT an error here: see Inspection::parse_status.
  Result<std::shared_ptr<const Inspection>> Inspect(const std::string& path,
                                                    std::string_view format = {});

  // Drops every cached entry (e.g. after the engine rewrote an image).
  void Clear();
  InspectorStats stats() const;

 private:
  // File identity, format, and the path (drivers complete path-dependent
  // fields such as vmdk extent names for the path the image was opened as).
  using Key = std::tuple<uint64_t, uint64_t, uint64_t, int64_t, int64_t, std::string, std::string>;
  size_t max_entries_;
  mutable std::mutex mu_;
  std::map<Key, std::shared_ptr<const Inspection>> cache_;  // guarded by mu_
  std::atomic<uint64_t> hits_{0}, misses_{0}, probes_{0};
};

}  // namespace chainfs::core
