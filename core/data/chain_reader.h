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
//   MapIterator it = (*r)->MapFrom(0);      // the map, one merged extent at a time
//   StreamMapText(**r, MapFormat::kJson, 0, UINT64_MAX, sink);  // `qemu-img map` text
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
#include "core/data/map_text.h"
#include "core/io/reader.h"
#include "core/status.h"

namespace chainfs::core {

// Tuning of a ChainReader.
struct ChainReaderOptions {
  // Per-image L2 cache cap (qemu's default l2-cache-size on Linux).
  uint64_t l2_cache_max_bytes = kDefaultL2CacheMaxBytes;
};

class ChainReader;

// Produces the merged extents of a ChainReader's map in guest order, one per
// Next call, holding only the extent being merged (memory does not grow
// with the number of extents; metadata comes through the images' caches).
// Extents are maximal: an iterator started at the start of any extent it
// (or another iterator over the same images) produced yields the same
// extents from there on. Not thread-safe itself (one per thread); the
// ChainReader must outlive it.
class MapIterator {
 public:
  // Produces the next extent, nullopt after the last. kCorrupt for a
  // damaged table (a zero flag in a version 2 image among them), kIo for a
  // failed read; after an error the iterator is finished.
  Result<std::optional<MapExtent>> Next();
  // Returns the guest offset the images were queried up to (past the extent
  // being merged). To resume, start at an extent's start, not here.
  uint64_t position() const { return pos_; }

 private:
  friend class ChainReader;
  MapIterator(const ChainReader& reader, uint64_t pos, uint64_t end)
      : reader_(&reader), pos_(pos), end_(end) {}
  const ChainReader* reader_;
  uint64_t pos_;
  uint64_t end_;
  std::optional<MapExtent> pending_;  // merged so far, not yet handed out
};

class ChainReader : public Reader {
 public:
  // Opens every element of a resolved chain. The chain must be complete
  // (walked to its base with no problem stopping it): otherwise the error
  // carries the first problem's message (kNotFound for a missing backing
  // file, kPermissionDenied for an unreadable one, kUnsupported for an
  // undeclared backing format, kCorrupt otherwise). Each element must be of
  // a format OpenImageReader reads (kUnsupported otherwise, and for network
  // sources, luks and encrypted images); errors of OpenImageReader otherwise.
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
  // Returns the files reads draw on besides the elements' own images: a
  // qcow2's external data file, a vmdk descriptor's extent files (for the
  // access rule, which must cover every file the bytes come from).
  std::vector<std::string> OtherFiles() const;

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

  // Says that guest bytes [offset, offset + length) will be read soon: the
  // host ranges of their uncompressed data start being read (AdviseHost),
  // so a sequential reader's next request finds them in the page cache.
  // Metadata comes through the L2 caches; errors are ignored (a hint).
  void Prefetch(uint64_t offset, uint64_t length) const;

  // Returns an iterator over the allocation of [offset, offset + length)
  // (clamped to Size()) as `qemu-img map --output=json` lists it: per range
  // the depth that provides it, data/zero/present and the host offset,
  // adjacent ranges merged when depth, flags and file agree and host offsets
  // are contiguous.
  MapIterator MapFrom(uint64_t offset,
                      uint64_t length = std::numeric_limits<uint64_t>::max()) const;
  // Hands each extent of MapFrom(offset, length) to `emit` in order, as soon
  // as it is final. A non-ok return of `emit` stops and is returned.
  Status MapStream(uint64_t offset, uint64_t length,
                   const std::function<Status(const MapExtent&)>& emit) const;
  // Collects the extents of MapFrom(offset, length) in a vector: for
  // bounded ranges (a rebase chunk, tests); a whole disk's map is read with
  // MapFrom or StreamMapText, whose memory does not grow with it.
  Result<std::vector<MapExtent>> Map(uint64_t offset = 0,
                                     uint64_t length = std::numeric_limits<uint64_t>::max()) const;

 private:
  friend class MapIterator;
  explicit ChainReader(std::vector<std::unique_ptr<ImageReader>> images);
  Status ReadFrom(size_t depth, uint64_t offset, std::span<uint8_t> out) const;
  Result<MapExtent> MapOne(uint64_t offset, uint64_t length) const;

  std::vector<std::unique_ptr<ImageReader>> images_;  // top first
};

}  // namespace chainfs::core
