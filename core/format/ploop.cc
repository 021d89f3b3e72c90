// ploop: the Parallels / Virtuozzo image format (QEMU's "parallels" driver,
// libvirt's "ploop"). Little-endian 64-byte header:
//   0 magic[16] "WithoutFreeSpace" (old) or "WithouFreSpacExt"  16 version (2)
//  20 heads  24 cylinders  28 tracks (sectors per cluster)  32 bat_entries
//  36 nb_sectors (u64; only the low 32 bits count with the old magic)
//  44 inuse (0x746f6e59 while open)  48 data_off  52 flags  56 ext_off
// The block allocation table (4 bytes per entry) follows at offset 64.
#include <cstring>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr size_t kHeaderSize = 64;
constexpr char kMagicOld[] = "WithoutFreeSpace";
constexpr char kMagicExt[] = "WithouFreSpacExt";
constexpr uint32_t kVersion = 2;
constexpr uint32_t kInUseMagic = 0x746f6e59;
constexpr uint64_t kMaxSectors = uint64_t{1} << 54;  // keeps sectors * 512 in 64 bits

class PloopDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "ploop"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < kHeaderSize) return 0;
    bool magic = std::memcmp(head.data(), kMagicOld, 16) == 0 ||
                 std::memcmp(head.data(), kMagicExt, 16) == 0;
    return magic && LoadLe32(head.data() + 16) == kVersion ? 100 : 0;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t h[kHeaderSize];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "ploop header"));
    bool old_magic = std::memcmp(h, kMagicOld, 16) == 0;
    if (!old_magic && std::memcmp(h, kMagicExt, 16) != 0) {
      return Error(Code::kCorrupt, "ploop: bad magic");
    }
    uint32_t version = LoadLe32(h + 16);
    if (version != kVersion)
      return Error(Code::kUnsupported, "ploop: version {} is not 2", version);
    uint32_t tracks = LoadLe32(h + 28);
    uint32_t bat_entries = LoadLe32(h + 32);
    uint64_t sectors = LoadLe64(h + 36);
    if (old_magic) sectors &= 0xffffffffu;
    if (tracks == 0) return Error(Code::kCorrupt, "ploop: zero sectors per cluster");
    if (tracks > INT32_MAX / 512)
      return Error(Code::kCorrupt, "ploop: cluster of {} sectors is too big", tracks);
    if (bat_entries > INT32_MAX / 4)
      return Error(Code::kCorrupt, "ploop: {} BAT entries are too many", bat_entries);
    if (sectors > kMaxSectors)
      return Error(Code::kCorrupt, "ploop: size of {} sectors is too large", sectors);
    if (!RangeWithin(kHeaderSize, uint64_t{bat_entries} * 4, r.Size())) {
      return Error(Code::kCorrupt, "ploop: BAT of {} entries lies past the end of the file",
                   bat_entries);
    }

    ImageMeta m;
    m.format = "ploop";
    m.virtual_size = sectors * 512;
    if (LoadLe32(h + 44) == kInUseMagic) {
      m.dirty = true;
      m.problems.push_back("ploop: the image was not closed cleanly (in-use flag set)");
    }
    return m;
  }
};

}  // namespace

const FormatDriver* MakePloopDriver() {
  static const PloopDriver driver;
  return &driver;
}

}  // namespace chainfs::core
