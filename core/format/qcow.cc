// qcow (version 1): QEMU's original copy-on-write format. Big-endian header:
//   0 magic "QFI\xfb"   4 version (1)        8 backing_file_offset (u64)
//  16 backing_file_size (u32)  20 mtime      24 size (u64, bytes)
//  32 cluster_bits (u8)  33 l2_bits (u8)     36 crypt_method (u32, 1 = AES)
//  40 l1_table_offset (u64)                  48 end of header
#include <algorithm>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr uint32_t kQcowMagic = 0x514649fb;
constexpr size_t kHeaderSize = 48;
// QEMU keeps the backing name in a 1024-byte buffer.
constexpr uint32_t kMaxBackingLength = 1023;

class QcowDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "qcow"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < 8) return 0;
    if (LoadBe32(head.data()) != kQcowMagic || LoadBe32(head.data() + 4) != 1) return 0;
    return 100;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t h[kHeaderSize];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "qcow header"));
    if (LoadBe32(h) != kQcowMagic) return Error(Code::kCorrupt, "qcow: bad magic");
    uint32_t version = LoadBe32(h + 4);
    if (version != 1) return Error(Code::kUnsupported, "qcow: version {} is not 1", version);
    uint64_t backing_offset = LoadBe64(h + 8);
    uint32_t backing_size = LoadBe32(h + 16);
    uint64_t size = LoadBe64(h + 24);
    unsigned cluster_bits = h[32];
    unsigned l2_bits = h[33];
    uint32_t crypt_method = LoadBe32(h + 36);

    if (size <= 1) return Error(Code::kCorrupt, "qcow: image size {} is too small", size);
    if (cluster_bits < 9 || cluster_bits > 16) {
      return Error(Code::kCorrupt, "qcow: cluster bits {} not in 9..16", cluster_bits);
    }
    if (l2_bits < 6 || l2_bits > 13) {
      return Error(Code::kCorrupt, "qcow: L2 bits {} not in 6..13", l2_bits);
    }
    if (crypt_method > 1) {
      return Error(Code::kUnsupported, "qcow: unknown encryption method {}", crypt_method);
    }
    // One L1 entry covers 2^(cluster_bits + l2_bits) bytes; QEMU refuses
    // sizes whose L1 table would not fit an int.
    unsigned shift = cluster_bits + l2_bits;
    if (size > UINT64_MAX - (uint64_t{1} << shift) ||
        ((size + (uint64_t{1} << shift) - 1) >> shift) > (uint64_t{INT32_MAX} / 8)) {
      return Error(Code::kCorrupt, "qcow: image size {} is too large", size);
    }

    uint64_t l1_offset = LoadBe64(h + 40);
    uint64_t l1_entries = (size + (uint64_t{1} << shift) - 1) >> shift;
    // Not checked here (the metadata does not need it): the data path
    // checks the table against the file size.
    ImageMeta m;
    m.format = "qcow";
    BlockLayout layout;
    layout.table_offset = l1_offset;
    layout.table_entries = l1_entries;
    layout.block_bytes = uint64_t{1} << cluster_bits;
    layout.l2_entries = uint64_t{1} << l2_bits;
    m.layout = layout;
    m.virtual_size = size / 512 * 512;  // QEMU counts whole sectors
    m.cluster_size = uint64_t{1} << cluster_bits;
    if (crypt_method == 1) {
      m.encrypted = true;
      m.encryption_format = "aes";
    }
    if (backing_offset != 0) {
      if (backing_size > kMaxBackingLength) {
        return Error(Code::kCorrupt, "qcow: backing file name length {} exceeds {}", backing_size,
                     kMaxBackingLength);
      }
      Result<std::vector<uint8_t>> name =
          ReadVector(r, backing_offset, backing_size, kMaxBackingLength, "qcow backing file name");
      if (!name.ok()) return name.status();
      std::string backing(name->begin(), std::find(name->begin(), name->end(), 0));
      if (!backing.empty()) m.backing = std::move(backing);
    }
    return m;
  }
};

}  // namespace

const FormatDriver* MakeQcowDriver() {
  static const QcowDriver driver;
  return &driver;
}

}  // namespace chainfs::core
