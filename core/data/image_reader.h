// ImageReader: the per-format half of the read path. One ImageReader serves
// the guest-visible bytes of ONE image file (no backing); ChainReader stacks
// them. Each format implements two calls, the way qemu's block drivers do:
// a block-status query and a read of a range the query reported as data.
//
// Thread-safety: implementations are immutable after Open except for
// internally locked caches; every method is safe for concurrent callers.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/chain/chain.h"
#include "core/data/l2_cache.h"
#include "core/status.h"

namespace chainfs::core {

// What one image says about a guest range (qemu's BDRV_BLOCK_* flags).
enum class Allocation {
  kData,         // the image holds the bytes (ReadData returns them)
  kZero,         // the image says the range reads as zeros
  kUnallocated,  // the image says nothing: the backing decides
};

// The status of the guest range [start, start + length): uniform, and for
// ranges with a host offset, contiguous on the host.
struct BlockStatus {
  uint64_t start = 0;
  uint64_t length = 0;
  Allocation allocation = Allocation::kUnallocated;
  bool compressed = false;
  // Host offset of `start` (qemu's "offset"): for data that is stored
  // uncompressed, for preallocated zero ranges, for raw holes.
  std::optional<uint64_t> host_offset;
  // True when host_offset is in the external data file, not the image.
  bool in_data_file = false;
  // For one compressed cluster: where its compressed bytes are.
  uint64_t compressed_offset = 0;
  uint64_t compressed_size = 0;
  // The file host_offset refers to when it is neither the image nor its data
  // file (a vmdk extent file); points into the reader, valid while it lives.
  const std::string* host_path = nullptr;
  // For kData: the host range is known to read as zeros (qemu's DATA|ZERO,
  // a hole in a vmdk flat extent).
  bool reads_zero = false;
};

// Reads the guest-visible bytes of one image, backing ignored.
class ImageReader {
 public:
  virtual ~ImageReader() = default;
  // Returns the virtual size in bytes.
  virtual uint64_t Size() const = 0;
  // Describes the range starting at `offset` (< Size()), at most `length`
  // (> 0) bytes long. `want_zero` asks for the precise answer `qemu-img map`
  // gives (raw: SEEK_HOLE); without it an answer good enough for reading.
  // kCorrupt when a table entry makes no sense.
  virtual Result<BlockStatus> GetStatus(uint64_t offset, uint64_t length, bool want_zero) const = 0;
  // Reads `out.size()` guest bytes at `offset`, which must lie within `st`,
  // a kData status returned by GetStatus.
  virtual Status ReadData(uint64_t offset, const BlockStatus& st, std::span<uint8_t> out) const = 0;
  // Returns the path of the file host offsets refer to (the data file when
  // `in_data_file`).
  virtual const std::string& HostPath(bool in_data_file) const = 0;
  // Says that host bytes [host_offset, host_offset + length) of the image
  // (or of its data file) will be read soon (Reader::Advise). Formats whose
  // host ranges live elsewhere (vmdk extents) ignore it.
  virtual void AdviseHost(uint64_t /*host_offset*/, uint64_t /*length*/,
                          bool /*in_data_file*/) const {}
  // Returns the files other than the image and its data file that reads
  // draw on (a vmdk descriptor's extent files), for access checks.
  virtual std::vector<std::string> OtherFiles() const { return {}; }
  // Returns the counters of the image's L2 cache (zeros for formats
  // without one).
  virtual L2CacheStats CacheStats() const { return {}; }
};

// Opens the reader for one resolved chain element: qcow2 (v2, v3), raw, qed,
// vdi, vpc, vhdx, vmdk, qcow (v1). kUnsupported for other formats (luks
// among them: chainfs holds no key), network sources and encrypted images;
// kPermissionDenied for an external data file of an image whose format was
// probed (DESIGN section 3); kCorrupt for unusable tables; open errors as
// File::OpenRead gives them.
// `l2_cache_max_bytes` caps a qcow2 image's L2 cache.
Result<std::unique_ptr<ImageReader>> OpenImageReader(
    const ChainElement& element, uint64_t l2_cache_max_bytes = kDefaultL2CacheMaxBytes);

}  // namespace chainfs::core
