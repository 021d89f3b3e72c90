// Qcow2Reader: the guest-visible bytes of one qcow2 image (v2 and v3),
// without its backing: normal, zero and compressed clusters (zlib, zstd),
// extended L2 entries with 32 subclusters, and external data files when the
// caller allows following them. Encrypted images are kUnsupported. A zero
// flag in a version 2 image (which has none) is corruption, as in qemu:
// reading that cluster is kCorrupt, never zeros.
//
// Every offset taken from the image (L1 and L2 entries, compressed
// descriptors) is checked against the file size and the format's alignment
// rules before use; a bad one is kCorrupt naming the guest offset, never a
// crash. Data clusters that start inside the file but end past its end read
// as zeros past the end, as in qemu.
//
// Thread-safety: immutable after Open except for the internally locked L2
// and decompressed-cluster caches; safe for any number of concurrent readers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/data/image_reader.h"
#include "core/data/l2_cache.h"
#include "core/format/qcow2/header.h"
#include "core/io/reader.h"

namespace chainfs::core {

// How a Qcow2Reader is opened.
struct Qcow2ReaderOptions {
  // Follow an external data file (only for images whose format was read
  // from metadata; DESIGN section 3). When false, an image with a data file
  // is refused with kPermissionDenied.
  bool follow_data_file = false;
  // Cap of the L2 cache (qemu's l2-cache-size default on Linux).
  uint64_t l2_cache_max_bytes = kDefaultL2CacheMaxBytes;
  // Cap of the cache of decompressed clusters (at least 2 clusters are kept).
  uint64_t decompressed_cache_bytes = 4ull << 20;
};

class Qcow2Reader : public ImageReader {
 public:
  // Opens the image at `path` read-only.
  static Result<std::unique_ptr<Qcow2Reader>> Open(const std::string& path,
                                                   const Qcow2ReaderOptions& options = {});
  // Opens an image read through `image` (e.g. a MemoryReader in tests);
  // `path` names it in messages and anchors a relative data file name.
  static Result<std::unique_ptr<Qcow2Reader>> Open(std::unique_ptr<Reader> image,
                                                   const std::string& path,
                                                   const Qcow2ReaderOptions& options = {});

  // Returns the virtual size: the header's size field rounded down to 512.
  uint64_t Size() const override { return size_; }
  Result<BlockStatus> GetStatus(uint64_t offset, uint64_t length, bool want_zero) const override;
  Status ReadData(uint64_t offset, const BlockStatus& st, std::span<uint8_t> out) const override;
  const std::string& HostPath(bool in_data_file) const override {
    return in_data_file ? data_path_ : path_;
  }
  void AdviseHost(uint64_t host_offset, uint64_t length, bool in_data_file) const override {
    const Reader* r = in_data_file ? data_.get() : image_.get();
    if (r) r->Advise(host_offset, length);
  }

  // Returns the parsed header.
  const Qcow2Header& header() const { return header_; }
  // Returns the L2 cache geometry chosen for this image.
  const L2CacheGeometry& l2_geometry() const { return geometry_; }
  L2CacheStats CacheStats() const override { return l2_cache_.stats(); }

 private:
  // What one (sub)cluster is, as qemu classifies it.
  enum class Kind { kUnallocPlain, kUnallocAlloc, kZeroPlain, kZeroAlloc, kNormal, kCompressed };
  // A run of guest bytes of one kind inside one cluster (or one whole
  // unallocated L2 range).
  struct Unit {
    Kind kind = Kind::kUnallocPlain;
    uint64_t end = 0;      // guest offset just past the unit
    uint64_t host = 0;     // host offset of the queried position (kinds with a host cluster)
    uint64_t coffset = 0;  // compressed clusters: descriptor
    uint64_t csize = 0;
  };
  // The slice of an L2 table used last, kept across Classify calls.
  struct SliceHint {
    uint64_t key = UINT64_MAX;
    L2Cache::Block block;
  };

  Qcow2Reader(std::unique_ptr<Reader> image, std::string path, Qcow2Header header,
              std::vector<uint64_t> l1, L2CacheGeometry geometry, size_t dcache_entries);
  Result<Unit> Classify(uint64_t pos, SliceHint& hint) const;
  Result<L2Cache::Block> LoadSlice(uint64_t key) const;
  Result<L2Cache::Block> LoadCluster(uint64_t coffset, uint64_t csize) const;

  std::unique_ptr<Reader> image_;
  std::string path_;
  std::unique_ptr<Reader> data_;  // the external data file, when followed
  std::string data_path_;
  Qcow2Header header_;
  uint64_t size_;  // Qcow2VirtualSize(header_)
  std::vector<uint64_t> l1_;
  L2CacheGeometry geometry_;
  uint32_t cluster_bits_;
  uint64_t cluster_size_;
  uint32_t l2_entry_bytes_;  // 8, or 16 with extended L2
  uint32_t l2_bits_;         // log2(entries per L2 table)
  uint32_t subcluster_bits_;
  uint32_t csize_shift_;
  uint64_t csize_mask_;
  uint64_t coffset_mask_;
  mutable L2Cache l2_cache_;
  mutable L2Cache cluster_cache_;  // decompressed clusters by compressed offset
};

}  // namespace chainfs::core
