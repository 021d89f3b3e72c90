// vdi: a block map of little-endian 32-bit entries, one per 1 MiB block.
// An entry of 0xffffffff (unallocated) or 0xfffffffe (discarded) makes the
// block read as zeros (qemu reports it so: vdi has no backing); any other
// entry is the block's index in the data area, below blocks_in_image.
#include "core/data/block_map_reader.h"
#include "core/data/format_readers.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kFirstUnallocated = 0xfffffffe;  // qemu's VDI_DISCARDED

class VdiReader final : public BlockMapReader {
 public:
  VdiReader(std::string path, std::unique_ptr<Reader> image, const ImageMeta& m)
      : BlockMapReader(std::move(path), std::move(image), m.virtual_size), layout_(*m.layout) {}

 protected:
  Result<Unit> Classify(uint64_t pos) const override {
    const uint64_t bs = layout_.block_bytes;
    const uint64_t block = pos / bs;
    const uint64_t start = block * bs;
    Unit u;
    u.end = start + bs;
    if (block >= layout_.table_entries) {
      return Error(Code::kCorrupt, "'{}': guest offset {:#x} lies past the block map", path(), pos);
    }
    Result<uint64_t> e =
        LoadEntry(0, layout_.table_offset + block * 4, 4, false, "block map entry");
    if (!e.ok()) return e.status();
    u.allocation = Allocation::kZero;
    if (*e >= kFirstUnallocated) return u;
    const uint64_t host = layout_.data_offset + *e * bs;
    if (*e >= layout_.table_entries || host >= file(0).Size()) {
      return Error(Code::kCorrupt,
                   "'{}': block {} (guest offset {:#x}) points to block {} at {:#x}, past the end "
                   "of the file ({} bytes)",
                   path(), block, start, *e, host, file(0).Size());
    }
    u.allocation = Allocation::kData;
    u.host = host + (pos - start);
    return u;
  }

 private:
  BlockLayout layout_;
};

}  // namespace

Result<std::unique_ptr<ImageReader>> OpenVdiReader(std::unique_ptr<Reader> image,
                                                   const std::string& path) {
  Result<ImageMeta> m = ParseForData("vdi", *image, path);
  if (!m.ok()) return m.status();
  if (!m->layout || m->layout->block_bytes == 0) {
    return Error(Code::kCorrupt, "'{}': vdi block map is not described", path);
  }
  return std::unique_ptr<ImageReader>(std::make_unique<VdiReader>(path, std::move(image), *m));
}

}  // namespace chainfs::core
