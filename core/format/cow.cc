// cow: the User-Mode Linux copy-on-write format (version 2, as libvirt
// probes it). Big-endian header:
//   0 magic "OOOM"  4 version (2)  8 backing_file[1024] (NUL-terminated)
//   1032 mtime  1036 size (u64, bytes)  1044 sector_size  1048 end
#include <cstring>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr uint32_t kCowMagic = 0x4f4f4f4d;
constexpr uint32_t kVersion = 2;
constexpr size_t kBackingOffset = 8;
constexpr size_t kBackingLength = 1024;
constexpr size_t kHeaderSize = 1048;

class CowDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "cow"; }

  // Version 2 is certain; other versions share the magic but not the
  // layout, so they score lower and Parse explains why they are refused.
  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < 8 || LoadBe32(head.data()) != kCowMagic) return 0;
    return LoadBe32(head.data() + 4) == kVersion ? 100 : 50;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t h[kHeaderSize];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, std::span(h, 8), "cow magic"));
    if (LoadBe32(h) != kCowMagic) return Error(Code::kCorrupt, "cow: bad magic");
    uint32_t version = LoadBe32(h + 4);
    if (version != kVersion) return Error(Code::kUnsupported, "cow: version {} is not 2", version);
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "cow header"));
    const auto* name = reinterpret_cast<const char*>(h + kBackingOffset);
    size_t name_length = strnlen(name, kBackingLength);
    if (name_length == kBackingLength) {
      return Error(Code::kCorrupt, "cow: backing file name is not NUL-terminated");
    }

    ImageMeta m;
    m.format = "cow";
    m.virtual_size = LoadBe64(h + 1036);
    if (name_length > 0) m.backing = std::string(name, name_length);
    return m;
  }
};

}  // namespace

const FormatDriver* MakeCowDriver() {
  static const CowDriver driver;
  return &driver;
}

}  // namespace chainfs::core
