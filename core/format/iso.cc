// iso: an ISO 9660 CD/DVD image. Volume descriptors are 2048-byte sectors
// from sector 16: 0 type (1 = primary, 255 = terminator)  1 "CD001"
// 6 version; in the primary one, 80 volume space size (both-endian u32: LE
// then BE) and 128 logical block size (both-endian u16).
//
// QEMU opens an ISO as raw, so the virtual size is what it reports for a raw
// file: the file size rounded up to 512 (a real ISO is whole 2048-byte
// sectors, where this is the file size libvirt shows); a primary descriptor
// claiming more than the file holds is reported as a truncated image.
#include <cstring>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kSectorSize = 2048;
constexpr uint64_t kFirstDescriptor = 16 * kSectorSize;
constexpr int kMaxDescriptors = 64;  // real images have a handful

class IsoDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "iso"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < kFirstDescriptor + 7) return 0;
    return std::memcmp(head.data() + kFirstDescriptor + 1, "CD001", 5) == 0 ? 100 : 0;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    ImageMeta m;
    m.format = "iso";
    m.virtual_size = RawVirtualSize(r.Size());
    for (int i = 0; i < kMaxDescriptors; ++i) {
      uint8_t d[kSectorSize];
      uint64_t offset = kFirstDescriptor + i * kSectorSize;
      CHAINFS_RETURN_IF_ERROR(ReadExact(r, offset, d, "iso volume descriptor"));
      if (std::memcmp(d + 1, "CD001", 5) != 0) {
        return Error(Code::kCorrupt, "iso: volume descriptor {} lacks \"CD001\"", i);
      }
      if (d[0] == 255) break;
      if (d[0] != 1) continue;
      uint32_t blocks = LoadLe32(d + 80);
      uint16_t block_size = LoadLe16(d + 128);
      if (blocks != LoadBe32(d + 84) || block_size != LoadBe16(d + 130)) {
        m.problems.push_back(
            "iso: primary volume descriptor's little- and big-endian sizes differ");
      }
      uint64_t claimed = uint64_t{blocks} * block_size;
      if (claimed > r.Size()) {
        m.problems.push_back(fmt::format(
            "iso: the volume claims {} bytes but the file holds {}; the image is truncated",
            claimed, r.Size()));
      }
      return m;
    }
    return Error(Code::kCorrupt, "iso: no primary volume descriptor");
  }
};

}  // namespace

const FormatDriver* MakeIsoDriver() {
  static const IsoDriver driver;
  return &driver;
}

}  // namespace chainfs::core
