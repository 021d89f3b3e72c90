// qcow (version 1): a big-endian L1 table of L2 table offsets (0 = none);
// L2 tables of 2^l2_bits 64-bit entries. An L2 entry 0 leaves its cluster
// unallocated (the backing decides); bit 63 marks a compressed cluster whose
// raw deflate stream is csize bytes at coffset (csize in the bits above
// 63 - cluster_bits, coffset below); otherwise the entry is the host offset.
#include "core/data/block_map_reader.h"
#include "core/data/decompress.h"
#include "core/data/format_readers.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kCompressed = uint64_t{1} << 63;

class QcowReader final : public BlockMapReader {
 public:
  QcowReader(std::string path, std::unique_ptr<Reader> image, const ImageMeta& m)
      : BlockMapReader(std::move(path), std::move(image), m.virtual_size), layout_(*m.layout) {
    cluster_bits_ = 0;
    while ((uint64_t{1} << cluster_bits_) < layout_.block_bytes) ++cluster_bits_;
    set_compressed_unit_bytes(layout_.block_bytes);
  }

  Status Check() const {
    if (!RangeWithin(layout_.table_offset, layout_.table_entries * 8, file(0).Size())) {
      return Error(Code::kCorrupt,
                   "'{}': L1 table at {:#x} ({} entries) lies past the end of the file", path(),
                   layout_.table_offset, layout_.table_entries);
    }
    return Status::Ok();
  }

 protected:
  Result<Unit> Classify(uint64_t pos) const override {
    const uint64_t cs = layout_.block_bytes;
    const uint64_t n = layout_.l2_entries;
    const uint64_t cluster = pos / cs;
    const uint64_t l1_index = cluster / n;
    const uint64_t start = cluster * cs;
    Unit u;
    if (l1_index >= layout_.table_entries) {
      return Error(Code::kCorrupt, "'{}': guest offset {:#x} lies past the L1 table", path(), pos);
    }
    Result<uint64_t> l2 = LoadEntry(0, layout_.table_offset + l1_index * 8, 8, true, "L1 entry");
    if (!l2.ok()) return l2.status();
    if (*l2 == 0) {
      u.end = (l1_index + 1) * n * cs;
      return u;
    }
    if (!RangeWithin(*l2, n * 8, file(0).Size())) {
      return Error(Code::kCorrupt,
                   "'{}': L2 table at {:#x} (L1 entry {}) lies past the end of the file", path(),
                   *l2, l1_index);
    }
    Result<uint64_t> e = LoadEntry(0, *l2 + (cluster % n) * 8, 8, true, "L2 entry");
    if (!e.ok()) return e.status();
    u.end = start + cs;
    if (*e == 0) return u;
    u.allocation = Allocation::kData;
    if (*e & kCompressed) {
      const unsigned shift = 63 - cluster_bits_;
      u.compressed = true;
      u.coffset = *e & ((uint64_t{1} << shift) - 1);
      u.csize = (*e >> shift) & (cs - 1);
      if (!RangeWithin(u.coffset, u.csize, file(0).Size())) {
        return Error(Code::kCorrupt,
                     "'{}': compressed cluster for guest offset {:#x} at {:#x} ({} bytes) lies "
                     "past the end of the file",
                     path(), start, u.coffset, u.csize);
      }
      return u;
    }
    if (*e >= file(0).Size()) {
      return Error(Code::kCorrupt,
                   "'{}': cluster for guest offset {:#x} at {:#x} lies past the end of the file "
                   "({} bytes)",
                   path(), start, *e, file(0).Size());
    }
    u.host = *e + (pos - start);
    return u;
  }

  Result<size_t> Inflate(std::span<const uint8_t> in, std::span<uint8_t> out) const override {
    CHAINFS_RETURN_IF_ERROR(InflateRaw(in, out));
    return out.size();
  }

 private:
  BlockLayout layout_;
  unsigned cluster_bits_;
};

}  // namespace

Result<std::unique_ptr<ImageReader>> OpenQcowReader(std::unique_ptr<Reader> image,
                                                    const std::string& path) {
  Result<ImageMeta> m = ParseForData("qcow", *image, path);
  if (!m.ok()) return m.status();
  if (m->encrypted) {
    return Error(Code::kUnsupported, "'{}' is encrypted; reading encrypted images is not supported",
                 path);
  }
  if (!m->layout || m->layout->block_bytes == 0 || m->layout->l2_entries == 0) {
    return Error(Code::kCorrupt, "'{}': qcow tables are not described", path);
  }
  auto r = std::make_unique<QcowReader>(path, std::move(image), *m);
  CHAINFS_RETURN_IF_ERROR(r->Check());
  return std::unique_ptr<ImageReader>(std::move(r));
}

}  // namespace chainfs::core
