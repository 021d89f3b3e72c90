// ChainReader: the guest-visible bytes of a whole backing chain, and its
// allocation map as `qemu-img map --output=json` reports it.
//
// A range an image leaves unallocated falls through to its backing; what
// lies past the end of a backing reads as zeros; past the end of the chain
// (an image without backing) unallocated ranges read as zeros.
//
// Typical use:
//   Chain chain = ResolveChain(inspector, path);
//   Result<std::unique_ptr<ChainReader>> r = ChainReader::Open(chain);
//   (*r)->Read(offset, buffer);             // or ReadStream(...) for `cat`
//   (*r)->Map();                            // or MapStream(...) for huge images
//
// Thread-safety: after Open, every method is safe for any number of
// concurrent callers (each element's file is opened once, read with pread;
// caches lock internally and never across I/O).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/chain/chain.h"
#include "core/data/image_reader.h"
#include "core/data/l2_cache.h"
#include "core/io/reader.h"
#include "core/status.h"

namespace chainfs::core {

// One range of `qemu-img map --output=json`.
struct MapExtent {
  uint64_t start = 0;
  uint64_t length = 0;
  int depth = 0;         // chain index of the element that decides the range
  bool present = false;  // some element allocates it (qemu's "present")
  bool zero = false;     // reads as zeros
  bool data = false;     // stored data
  bool compressed = false;
  std::optional<uint64_t> offset;  // host offset in `file`
  std::string file;                // host file of `offset` ("" without an offset)
  bool operator==(const MapExtent&) const = default;
};

// Tuning of a ChainReader.
struct ChainReaderOptions {
  // Per-image L2 cache cap (qemu's default l2-cache-size on Linux).
  uint64_t l2_cache_max_bytes = kDefaultL2CacheMaxBytes;
};

class ChainReader : public Reader {
 public:
  // Opens every element of a resolved chain. The chain must be complete
  // (walked to its base with no problem stopping it): otherwise the error
  // carries the first problem's message (kNotFound for a missing backing
  // file, kPermissionDenied for an unreadable one, kUnsupported for an
  // undeclared backing format, kCorrupt otherwise). Each element must be
  // qcow2 or raw (kUnsupported otherwise, and for network sources and
  // encrypted images); errors of OpenImageReader otherwise.
  static Result<std::unique_ptr<ChainReader>> Open(const Chain& chain,
                                                   const ChainReaderOptions& options = {});
  // Stacks already opened readers, top first (for tests). kInvalidArgument
  // if `images` is empty.
  static Result<std::unique_ptr<ChainReader>> FromImages(
      std::vector<std::unique_ptr<ImageReader>> images);

  // Returns the guest-visible size: the top image's virtual size.
  uint64_t Size() const override;
  // Returns the number of chain elements.
  size_t depth() const { return images_.size(); }
  // Returns the L2 cache counters summed over every element (for
  // .chainfs/stats).
  L2CacheStats CacheStats() const;

  // Reads up to out.size() guest bytes at `offset`; returns how many were
  // read (fewer only at the end of the disk, 0 at or past it). kCorrupt for a
  // damaged table or compressed cluster, kIo for failed reads.
  Result<size_t> Read(uint64_t offset, std::span<uint8_t> out) const;
  // Same as Read (the Reader interface).
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) const override {
    return Read(offset, buf);
  }

  // Receives consecutive chunks of guest bytes; a non-ok return stops.
  using Sink = std::function<Status(uint64_t offset, std::span<const uint8_t> bytes)>;
  // Reads [offset, offset + length) (clamped to Size()) in chunks of
  // `chunk_bytes` and hands each to `sink` in order, on the calling thread,
  // while the next chunk is read on a helper thread: `chainctl cat` is
  // ReadStream(0, UINT64_MAX, write-to-stdout). Returns the first error.
  Status ReadStream(uint64_t offset, uint64_t length, const Sink& sink,
                    size_t chunk_bytes = 1u << 20) const;

  // Lists the allocation of [offset, offset + length) (clamped to Size())
  // as `qemu-img map --output=json` does: per range the depth that provides
  // it, data/zero/present and the host offset, adjacent ranges merged when
  // depth, flags and file agree and host offsets are contiguous.
  Result<std::vector<MapExtent>> Map(uint64_t offset = 0,
                                     uint64_t length = std::numeric_limits<uint64_t>::max()) const;
  // Same as Map, handing each merged extent to `emit` as soon as it is
  // final (memory stays constant for huge images). A non-ok return stops.
  Status MapStream(uint64_t offset, uint64_t length,
                   const std::function<Status(const MapExtent&)>& emit) const;

 private:
  explicit ChainReader(std::vector<std::unique_ptr<ImageReader>> images);
  Status ReadFrom(size_t depth, uint64_t offset, std::span<uint8_t> out) const;
  Result<MapExtent> MapOne(uint64_t offset, uint64_t length) const;

  std::vector<std::unique_ptr<ImageReader>> images_;  // top first
};

// Renders extents exactly as `qemu-img map --output=json` prints them
// (trailing newline included).
std::string MapToJson(const std::vector<MapExtent>& extents);

// Renders extents as `qemu-img map` (human format) prints them: a header
// line, then one line per range with stored data. qemu-img refuses this
// format for compressed data (no host offset): so does this, kUnsupported.
Result<std::string> MapToHuman(const std::vector<MapExtent>& extents);

}  // namespace chainfs::core
