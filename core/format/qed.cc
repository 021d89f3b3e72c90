// qed: QEMU Enhanced Disk. Little-endian header:
//   0 magic "QED\0"   4 cluster_size   8 table_size (clusters)  12 header_size (clusters)
//  16 features (u64)  24 compat_features  32 autoclear_features  40 l1_table_offset
//  48 image_size (u64)  56 backing_filename_offset (u32)  60 backing_filename_size (u32)
#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr uint32_t kQedMagic = 0x00444551;  // "QED\0" read little-endian
constexpr size_t kHeaderSize = 64;
constexpr uint64_t kFeatureBackingFile = 0x1;
constexpr uint64_t kFeatureNeedCheck = 0x2;
constexpr uint64_t kFeatureBackingFormatNoProbe = 0x4;
constexpr uint64_t kKnownFeatures = 0x7;
constexpr uint32_t kMinClusterSize = 4096;
constexpr uint32_t kMaxClusterSize = 64u << 20;
constexpr uint32_t kMaxTableSize = 16;
// QEMU reads the backing name into a PATH_MAX-sized buffer.
constexpr uint32_t kMaxBackingLength = 4095;

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Returns the largest image size the two-level table can address,
// saturating at UINT64_MAX.
uint64_t MaxImageSize(uint64_t cluster_size, uint64_t table_size) {
  uint64_t entries = table_size * cluster_size / 8;
  unsigned __int128 max = static_cast<unsigned __int128>(entries) * entries * cluster_size;
  return max > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(max);
}

class QedDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "qed"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < kHeaderSize) return 0;
    return LoadLe32(head.data()) == kQedMagic ? 100 : 0;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t h[kHeaderSize];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "qed header"));
    if (LoadLe32(h) != kQedMagic) return Error(Code::kCorrupt, "qed: bad magic");
    uint32_t cluster_size = LoadLe32(h + 4);
    uint32_t table_size = LoadLe32(h + 8);
    uint32_t header_size = LoadLe32(h + 12);
    uint64_t features = LoadLe64(h + 16);
    uint64_t l1_offset = LoadLe64(h + 40);
    uint64_t image_size = LoadLe64(h + 48);
    uint32_t backing_offset = LoadLe32(h + 56);
    uint32_t backing_size = LoadLe32(h + 60);

    if (!IsPowerOfTwo(cluster_size) || cluster_size < kMinClusterSize ||
        cluster_size > kMaxClusterSize) {
      return Error(Code::kCorrupt, "qed: invalid cluster size {}", cluster_size);
    }
    if (!IsPowerOfTwo(table_size) || table_size > kMaxTableSize) {
      return Error(Code::kCorrupt, "qed: invalid table size {}", table_size);
    }
    if (features & ~kKnownFeatures) {
      return Error(Code::kUnsupported, "qed: unsupported features {:#x}",
                   features & ~kKnownFeatures);
    }
    if (image_size % 512 != 0 || image_size > MaxImageSize(cluster_size, table_size)) {
      return Error(Code::kCorrupt, "qed: invalid image size {}", image_size);
    }
    uint64_t header_bytes = uint64_t{header_size} * cluster_size;
    if (header_size == 0 || header_bytes > r.Size()) {
      return Error(Code::kCorrupt, "qed: header size {} clusters exceeds the file", header_size);
    }
    if (l1_offset % cluster_size != 0 || l1_offset < header_bytes ||
        !RangeWithin(l1_offset, uint64_t{table_size} * cluster_size, r.Size())) {
      return Error(Code::kCorrupt, "qed: L1 table offset {} is invalid or past the end of the file",
                   l1_offset);
    }

    ImageMeta m;
    m.format = "qed";
    m.virtual_size = image_size;
    m.cluster_size = cluster_size;
    m.dirty = (features & kFeatureNeedCheck) != 0;
    BlockLayout layout;
    layout.table_offset = l1_offset;
    layout.table_entries = uint64_t{table_size} * cluster_size / 8;
    layout.l2_entries = layout.table_entries;
    layout.block_bytes = cluster_size;
    layout.data_offset = header_bytes;
    m.layout = layout;
    if (features & kFeatureBackingFile) {
      if (uint64_t{backing_offset} + backing_size > header_bytes) {
        return Error(Code::kCorrupt, "qed: backing file name lies outside the header");
      }
      if (backing_size > kMaxBackingLength) {
        return Error(Code::kCorrupt, "qed: backing file name length {} exceeds {}", backing_size,
                     kMaxBackingLength);
      }
      Result<std::vector<uint8_t>> name =
          ReadVector(r, backing_offset, backing_size, kMaxBackingLength, "qed backing file name");
      if (!name.ok()) return name.status();
      m.backing = std::string(name->begin(), name->end());
      if (features & kFeatureBackingFormatNoProbe) m.backing_format = "raw";
    }
    return m;
  }
};

}  // namespace

const FormatDriver* MakeQedDriver() {
  static const QedDriver driver;
  return &driver;
}

}  // namespace chainfs::core
