// BlockMapReader: the part every table-mapped format shares (qed, vdi, vpc,
// vhdx, vmdk, qcow v1). A format says, for one guest offset, what its table
// entry makes of the bytes there (Classify); this class merges such answers
// into BlockStatus ranges, reads host bytes (zero-filled past the end of a
// file, as qemu's file driver does), inflates compressed units through a
// bounded cache, and keeps table pages in a bounded LRU cache.
//
// Thread-safety: immutable after construction except for the internally
// locked caches; safe for any number of concurrent callers.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/data/image_reader.h"
#include "core/data/l2_cache.h"
#include "core/format/driver.h"
#include "core/io/reader.h"

namespace chainfs::core {

// Parses `image` with the driver of `format` again (the reader must see the
// file it reads, not metadata parsed earlier); errors name `path`.
Result<ImageMeta> ParseForData(std::string_view format, const Reader& image,
                               const std::string& path);

class BlockMapReader : public ImageReader {
 public:
  uint64_t Size() const override { return size_; }
  Result<BlockStatus> GetStatus(uint64_t offset, uint64_t length, bool want_zero) const override;
  Status ReadData(uint64_t offset, const BlockStatus& st, std::span<uint8_t> out) const override;
  const std::string& HostPath(bool) const override { return files_.front().path; }
  L2CacheStats CacheStats() const override { return tables_.stats(); }
  std::vector<std::string> OtherFiles() const override;

 protected:
  // How holes of the host file show in a want_zero status of a data range.
  enum class Holes {
    kIgnore,    // not looked at
    kZero,      // as kZero with the host offset (qemu's raw recursion: vpc fixed)
    kDataZero,  // as kData that reads as zeros (qemu's DATA|ZERO: vmdk flat extents)
  };
  // What one table entry says about guest offset `pos` and the bytes after it.
  struct Unit {
    Allocation allocation = Allocation::kUnallocated;
    uint64_t end = 0;              // the answer holds for [pos, end); end > pos
    size_t file = 0;               // index of the host file (AddFile)
    std::optional<uint64_t> host;  // host offset of pos
    // qemu asks the file about every data range with a host offset.
    Holes holes = Holes::kDataZero;
    // A compressed unit: its guest bytes [end - compressed_unit_bytes, end)
    // inflate from [coffset, coffset + csize) of `file`.
    bool compressed = false;
    uint64_t coffset = 0;
    uint64_t csize = 0;
  };

  // `image` is file 0, named `path`; `size` is the virtual size.
  BlockMapReader(std::string path, std::unique_ptr<Reader> image, uint64_t size);

  // Describes guest offset `pos` (< Size()). kCorrupt naming the entry when
  // the table makes no sense.
  virtual Result<Unit> Classify(uint64_t pos) const = 0;
  // Inflates one compressed unit read from `in` (its bytes as stored,
  // clamped to the end of the file) into `out` (compressed_unit_bytes);
  // returns how many bytes are valid. kCorrupt for a damaged unit.
  virtual Result<size_t> Inflate(std::span<const uint8_t> in, std::span<uint8_t> out) const;

  // Adds a host file (a vmdk extent); returns its index.
  size_t AddFile(std::string path, std::unique_ptr<Reader> reader);
  // Returns host file `i` (0: the image).
  const Reader& file(size_t i) const { return *files_[i].reader; }
  // Returns the image's path, for messages.
  const std::string& path() const { return files_.front().path; }
  // Loads the `width`-byte (4 or 8) table entry at host `offset` of `file`
  // through the page cache. kCorrupt (naming `what`) if it lies past the end.
  Result<uint64_t> LoadEntry(size_t file, uint64_t offset, unsigned width, bool big_endian,
                             std::string_view what) const;
  // Guest bytes of one compressed unit, aligned to it (qcow cluster, vmdk grain).
  void set_compressed_unit_bytes(uint64_t n) { compressed_unit_bytes_ = n; }

 private:
  struct HostFile {
    std::string path;
    std::unique_ptr<Reader> reader;
  };
  Result<L2Cache::Block> LoadUnit(const BlockStatus& st, size_t file) const;
  size_t FileOf(const BlockStatus& st) const;

  std::vector<HostFile> files_;
  uint64_t size_;
  uint64_t compressed_unit_bytes_ = 0;
  mutable L2Cache tables_;    // 4 KiB table pages by (file, page offset)
  mutable L2Cache inflated_;  // inflated units by (file, compressed offset)
};

}  // namespace chainfs::core
