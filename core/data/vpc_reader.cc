// vpc (VHD). A fixed image is its data followed by the footer: guest offset
// = host offset (holes of the file are data that reads as zeros, as qemu
// maps them). A dynamic (or differencing) image has a BAT of
// big-endian 32-bit entries, one per block: 0xffffffff leaves the block
// unallocated, which qemu reports as zeros (a VHD parent is never
// followed); otherwise the entry is the sector of the block's sector bitmap,
// and the block's data follows that bitmap (block_size / 512 bits, rounded
// up to a sector). Reads ignore the bitmap, as qemu's do.
#include "core/data/block_map_reader.h"
#include "core/data/format_readers.h"

namespace chainfs::core {
namespace {

constexpr uint32_t kTypeFixed = 2;
constexpr uint64_t kUnallocated = 0xffffffff;

class VpcReader final : public BlockMapReader {
 public:
  VpcReader(std::string path, std::unique_ptr<Reader> image, const ImageMeta& m)
      : BlockMapReader(std::move(path), std::move(image), m.virtual_size),
        layout_(*m.layout),
        bitmap_bytes_((layout_.block_bytes / 512 / 8 + 511) / 512 * 512) {}

 protected:
  Result<Unit> Classify(uint64_t pos) const override {
    Unit u;
    if (layout_.type == kTypeFixed) {
      u.allocation = Allocation::kData;
      u.end = Size();
      u.host = pos;
      return u;
    }
    const uint64_t bs = layout_.block_bytes;
    const uint64_t block = pos / bs;
    const uint64_t start = block * bs;
    u.end = start + bs;
    u.allocation = Allocation::kZero;
    if (block >= layout_.table_entries) return u;
    Result<uint64_t> e = LoadEntry(0, layout_.table_offset + block * 4, 4, true, "BAT entry");
    if (!e.ok()) return e.status();
    if (*e == kUnallocated) return u;
    const uint64_t data = *e * 512 + bitmap_bytes_;
    if (data >= file(0).Size()) {
      return Error(Code::kCorrupt,
                   "'{}': BAT entry {} (guest offset {:#x}) points to sector {}, past the end of "
                   "the file ({} bytes)",
                   path(), block, start, *e, file(0).Size());
    }
    u.allocation = Allocation::kData;
    u.host = data + (pos - start);
    u.holes = Holes::kIgnore;  // qemu does not ask the file about allocated blocks
    return u;
  }

 private:
  BlockLayout layout_;
  uint64_t bitmap_bytes_;
};

}  // namespace

Result<std::unique_ptr<ImageReader>> OpenVpcReader(std::unique_ptr<Reader> image,
                                                   const std::string& path) {
  Result<ImageMeta> m = ParseForData("vpc", *image, path);
  if (!m.ok()) return m.status();
  if (!m->layout || (m->layout->type != kTypeFixed && m->layout->block_bytes == 0)) {
    return Error(Code::kCorrupt, "'{}': vpc block table is not described", path);
  }
  if (m->layout->type == kTypeFixed && m->virtual_size > image->Size()) {
    return Error(Code::kCorrupt, "'{}': fixed VHD of {} bytes is larger than its file", path,
                 m->virtual_size);
  }
  return std::unique_ptr<ImageReader>(std::make_unique<VpcReader>(path, std::move(image), *m));
}

}  // namespace chainfs::core
