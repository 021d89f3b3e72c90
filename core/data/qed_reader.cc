// qed: a two-level table of little-endian 64-bit entries, both levels
// table_size clusters long. An L1 entry 0 leaves the range it maps
// unallocated; an L2 entry 0 leaves its cluster unallocated (the backing
// decides), 1 makes it read as zeros, anything else is the host offset of
// the cluster, which must be cluster aligned, past the header and inside the
// file (qemu's qed_check_cluster_offset).
#include "core/data/block_map_reader.h"
#include "core/data/format_readers.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kZeroCluster = 1;

class QedReader final : public BlockMapReader {
 public:
  QedReader(std::string path, std::unique_ptr<Reader> image, const ImageMeta& m)
      : BlockMapReader(std::move(path), std::move(image), m.virtual_size), layout_(*m.layout) {}

  Status Check() const {
    const uint64_t table_bytes = layout_.table_entries * 8;
    if (!TableOk(layout_.table_offset, table_bytes)) {
      return Error(Code::kCorrupt, "'{}': L1 table at {:#x} is invalid or past the end of the file",
                   path(), layout_.table_offset);
    }
    return Status::Ok();
  }

 protected:
  Result<Unit> Classify(uint64_t pos) const override {
    const uint64_t cs = layout_.block_bytes;
    const uint64_t n = layout_.table_entries;
    const uint64_t cluster = pos / cs;
    const uint64_t l1_index = cluster / n;
    const uint64_t l2_index = cluster % n;
    Unit u;
    Result<uint64_t> l2 = LoadEntry(0, layout_.table_offset + l1_index * 8, 8, false, "L1 entry");
    if (!l2.ok()) return l2.status();
    if (*l2 == 0) {
      u.end = (l1_index + 1) * n * cs;
      if (u.end <= pos) u.end = Size();
      return u;
    }
    if (!TableOk(*l2, n * 8)) {
      return Error(Code::kCorrupt,
                   "'{}': L2 table at {:#x} (L1 entry {}) is misaligned, inside the header or past "
                   "the end of the file",
                   path(), *l2, l1_index);
    }
    Result<uint64_t> e = LoadEntry(0, *l2 + l2_index * 8, 8, false, "L2 entry");
    if (!e.ok()) return e.status();
    const uint64_t start = cluster * cs;
    u.end = start + cs;
    if (*e == 0) return u;
    if (*e == kZeroCluster) {
      u.allocation = Allocation::kZero;
      return u;
    }
    if (*e % cs != 0 || *e < layout_.data_offset || *e >= file(0).Size()) {
      return Error(Code::kCorrupt,
                   "'{}': cluster for guest offset {:#x} at host offset {:#x} is misaligned, "
                   "inside the header or past the end of the file ({} bytes)",
                   path(), start, *e, file(0).Size());
    }
    u.allocation = Allocation::kData;
    u.host = *e + (pos - start);
    return u;
  }

 private:
  // qemu's qed_check_table_offset: aligned, past the header, inside the file.
  bool TableOk(uint64_t offset, uint64_t bytes) const {
    return offset % layout_.block_bytes == 0 && offset >= layout_.data_offset &&
           RangeWithin(offset, bytes, file(0).Size());
  }

  BlockLayout layout_;
};

}  // namespace

Result<std::unique_ptr<ImageReader>> OpenQedReader(std::unique_ptr<Reader> image,
                                                   const std::string& path) {
  Result<ImageMeta> m = ParseForData("qed", *image, path);
  if (!m.ok()) return m.status();
  if (!m->layout || m->layout->block_bytes == 0 || m->layout->table_entries == 0) {
    return Error(Code::kCorrupt, "'{}': qed tables are not described", path);
  }
  auto r = std::make_unique<QedReader>(path, std::move(image), *m);
  CHAINFS_RETURN_IF_ERROR(r->Check());
  return std::unique_ptr<ImageReader>(std::move(r));
}

}  // namespace chainfs::core
