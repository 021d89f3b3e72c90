// vhdx: a BAT of little-endian 64-bit entries; after every chunk_ratio
// payload-block entries comes one sector-bitmap entry (chunk_ratio =
// 2^23 * logical sector size / block size). A payload entry keeps its state
// in bits 0-2 and the block's file offset in MiB in bits 20-63. Blocks not
// present, undefined, zero or unmapped read as zeros (qemu follows no
// parent); fully present blocks are read at their offset. Partially present
// blocks belong to differencing images, which are refused at open.
#include "core/data/block_map_reader.h"
#include "core/data/format_readers.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kStateMask = 7;
constexpr uint64_t kNotPresent = 0, kUndefined = 1, kZero = 2, kUnmapped = 3;
constexpr uint64_t kFullyPresent = 6;
constexpr uint64_t kOffsetMask = ~((uint64_t{1} << 20) - 1);
// Structures of the first MiB (headers, region tables) hold no payload.
constexpr uint64_t kMinPayloadOffset = 1 << 20;

class VhdxReader final : public BlockMapReader {
 public:
  // qemu's vhdx driver reports no block status: `qemu-img map` shows the
  // whole disk as data without an offset, and so does the precise status
  // here. Reads use the table (BlockMapReader's status).
  Result<BlockStatus> GetStatus(uint64_t offset, uint64_t length, bool want_zero) const override {
    if (!want_zero) return BlockMapReader::GetStatus(offset, length, false);
    BlockStatus st;
    st.start = offset;
    st.allocation = Allocation::kData;
    st.length = offset < Size() ? std::min(length, Size() - offset) : 0;
    return st;
  }

  VhdxReader(std::string path, std::unique_ptr<Reader> image, const ImageMeta& m)
      : BlockMapReader(std::move(path), std::move(image), m.virtual_size),
        layout_(*m.layout),
        chunk_ratio_((uint64_t{1} << 23) * layout_.sector_size / layout_.block_bytes) {}

 protected:
  Result<Unit> Classify(uint64_t pos) const override {
    const uint64_t bs = layout_.block_bytes;
    const uint64_t block = pos / bs;
    const uint64_t start = block * bs;
    const uint64_t index = block + block / chunk_ratio_;
    Unit u;
    u.end = start + bs;
    if (index >= layout_.table_entries) {
      return Error(Code::kCorrupt, "'{}': guest offset {:#x} lies past the BAT", path(), pos);
    }
    Result<uint64_t> e = LoadEntry(0, layout_.table_offset + index * 8, 8, false, "BAT entry");
    if (!e.ok()) return e.status();
    const uint64_t state = *e & kStateMask;
    if (state == kNotPresent || state == kUndefined || state == kZero || state == kUnmapped) {
      u.allocation = Allocation::kZero;
      return u;
    }
    if (state != kFullyPresent) {
      return Error(Code::kCorrupt, "'{}': BAT entry {} (guest offset {:#x}) has state {}", path(),
                   index, start, state);
    }
    const uint64_t host = *e & kOffsetMask;
    if (host < kMinPayloadOffset || host >= file(0).Size()) {
      return Error(Code::kCorrupt,
                   "'{}': BAT entry {} (guest offset {:#x}) points to {:#x}, outside the payload "
                   "area of the file ({} bytes)",
                   path(), index, start, host, file(0).Size());
    }
    u.allocation = Allocation::kData;
    u.host = host + (pos - start);
    return u;
  }

 private:
  BlockLayout layout_;
  uint64_t chunk_ratio_;
};

}  // namespace

Result<std::unique_ptr<ImageReader>> OpenVhdxReader(std::unique_ptr<Reader> image,
                                                    const std::string& path) {
  Result<ImageMeta> m = ParseForData("vhdx", *image, path);
  if (!m.ok()) return m.status();
  if (!m->layout || m->layout->block_bytes == 0 || m->layout->sector_size == 0 ||
      (uint64_t{1} << 23) * m->layout->sector_size < m->layout->block_bytes) {
    return Error(Code::kCorrupt, "'{}': vhdx BAT is not described", path);
  }
  if (m->layout->log_pending) {
    return Error(Code::kUnsupported,
                 "'{}': the VHDX log must be replayed before the image can be read; run "
                 "qemu-img check -r all on it",
                 path);
  }
  if (m->layout->has_parent) {
    return Error(Code::kUnsupported,
                 "'{}': reading differencing VHDX images is not supported (nor by qemu)", path);
  }
  return std::unique_ptr<ImageReader>(std::make_unique<VhdxReader>(path, std::move(image), *m));
}

}  // namespace chainfs::core
