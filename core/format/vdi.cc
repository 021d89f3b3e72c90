// vdi: VirtualBox disk image. Little-endian header of 512 bytes:
//   0 text[64]  64 signature 0xbeda107f  68 version (0x00010001)  72 header_size
//  76 image_type (1 dynamic, 2 static)  80 flags  84 description[256]
// 340 offset_bmap  344 offset_data  348 cylinders 352 heads 356 sectors
// 360 sector_size  368 disk_size (u64)  376 block_size  380 block_extra
// 384 blocks_in_image  388 blocks_allocated  392 uuid_image[16]
// 408 uuid_last_snap[16]  424 uuid_link[16]  440 uuid_parent[16]
#include <algorithm>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr uint32_t kVdiSignature = 0xbeda107f;
constexpr uint32_t kVdiVersion = 0x00010001;
constexpr size_t kHeaderSize = 512;
constexpr uint32_t kBlockSize = 1u << 20;  // the only block size QEMU opens
// QEMU's limit on blocks_in_image (keeps the block map below 1 GiB).
constexpr uint32_t kMaxBlocks = 0x3fffffff / 4;

bool IsNullUuid(const uint8_t* p) {
  return std::all_of(p, p + 16, [](uint8_t b) { return b == 0; });
}

class VdiDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "vdi"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < kHeaderSize) return 0;
    return LoadLe32(head.data() + 64) == kVdiSignature ? 100 : 0;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t h[kHeaderSize];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "vdi header"));
    if (LoadLe32(h + 64) != kVdiSignature) return Error(Code::kCorrupt, "vdi: bad signature");
    uint32_t version = LoadLe32(h + 68);
    if (version != kVdiVersion) {
      return Error(Code::kUnsupported, "vdi: version {}.{} is not supported", version >> 16,
                   version & 0xffff);
    }
    uint32_t image_type = LoadLe32(h + 76);
    uint32_t offset_bmap = LoadLe32(h + 340);
    uint32_t offset_data = LoadLe32(h + 344);
    uint32_t sector_size = LoadLe32(h + 360);
    uint64_t disk_size = LoadLe64(h + 368);
    uint32_t block_size = LoadLe32(h + 376);
    uint32_t blocks = LoadLe32(h + 384);

    if (image_type != 1 && image_type != 2) {
      return Error(Code::kUnsupported, "vdi: image type {} is not dynamic (1) or static (2)",
                   image_type);
    }
    if (offset_bmap % 512 != 0 || offset_data % 512 != 0) {
      return Error(Code::kCorrupt, "vdi: block map or data offset is not sector aligned");
    }
    if (sector_size != 512) {
      return Error(Code::kUnsupported, "vdi: sector size {} is not 512", sector_size);
    }
    if (block_size != kBlockSize) {
      return Error(Code::kUnsupported, "vdi: block size {} is not {}", block_size, kBlockSize);
    }
    if (blocks > kMaxBlocks) return Error(Code::kCorrupt, "vdi: too many blocks ({})", blocks);
    if (disk_size > uint64_t{blocks} * block_size) {
      return Error(Code::kCorrupt, "vdi: disk size {} exceeds {} blocks of {} bytes", disk_size,
                   blocks, block_size);
    }
    if (!IsNullUuid(h + 424)) return Error(Code::kUnsupported, "vdi: link UUID is not null");
    if (!IsNullUuid(h + 440)) {
      return Error(Code::kUnsupported,
                   "vdi: differencing image (parent UUID set) is not supported");
    }
    if (!RangeWithin(offset_bmap, uint64_t{blocks} * 4, r.Size())) {
      return Error(Code::kCorrupt,
                   "vdi: block map at {} ({} entries) lies past the end of the file", offset_bmap,
                   blocks);
    }

    ImageMeta m;
    m.format = "vdi";
    // VBoxManage can write odd sizes; QEMU ignores the partial last sector.
    m.virtual_size = disk_size / 512 * 512;
    m.cluster_size = block_size;
    BlockLayout layout;
    layout.table_offset = offset_bmap;
    layout.table_entries = blocks;
    layout.block_bytes = block_size;
    layout.data_offset = offset_data;
    layout.type = image_type;
    m.layout = layout;
    return m;
  }
};

}  // namespace

const FormatDriver* MakeVdiDriver() {
  static const VdiDriver driver;
  return &driver;
}

}  // namespace chainfs::core
