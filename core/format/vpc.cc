// vpc: Microsoft Virtual PC / VHD. A 512-byte big-endian footer at the end
// of the file, copied to offset 0 in dynamic images:
//   0 cookie "conectix"  8 features  12 version  16 data_offset (u64)
//  24 timestamp  28 creator_app[4]  32 creator_version  36 creator_os
//  40 original_size (u64)  48 current_size (u64)  56 cylinders (u16)
//  58 heads (u8)  59 sectors_per_track (u8)  60 disk_type  64 checksum
// Dynamic header at data_offset (1024 bytes): 0 cookie "cxsparse"
//   8 data_offset  16 table_offset (u64)  24 version  28 max_table_entries
//  32 block_size  36 checksum  40 parent_uuid[16] ...
#include <cstring>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr size_t kFooterSize = 512;
constexpr size_t kDynHeaderSize = 1024;
constexpr uint32_t kTypeFixed = 2;
constexpr uint32_t kTypeDynamic = 3;
constexpr uint32_t kTypeDifferencing = 4;
constexpr uint64_t kMaxGeometrySectors = 65535ull * 16 * 255;
constexpr uint64_t kMaxSectors = 0xff000000ull;  // 2040 GiB, QEMU's limit

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Says whether the creator application is one whose images hold the true
// size in current_size rather than in the CHS geometry (Hyper-V, qemu with
// force_size, disk2vhd, XenServer, XenConverter). QEMU uses the same list.
bool CreatorUsesCurrentSize(const uint8_t* app) {
  static constexpr const char* kApps[] = {"win ", "qem2", "d2v ", "CTXS"};
  for (const char* a : kApps) {
    if (std::memcmp(app, a, 4) == 0) return true;
  }
  return std::memcmp(app, "tap\0", 4) == 0;
}

// Returns the one's complement of the byte sum, skipping the checksum field.
uint32_t FooterChecksum(const uint8_t* f) {
  uint32_t sum = 0;
  for (size_t i = 0; i < kFooterSize; ++i) {
    if (i >= 64 && i < 68) continue;
    sum += f[i];
  }
  return ~sum;
}

class VpcDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "vpc"; }

  // Like QEMU, only the footer copy at offset 0 counts: a fixed VHD (footer
  // at the end only) probes as raw.
  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < 8) return 0;
    return std::memcmp(head.data(), "conectix", 8) == 0 ? 100 : 0;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t f[kFooterSize];
    ImageMeta m;
    m.format = "vpc";
    bool found = false;
    if (r.Size() >= kFooterSize) {
      CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, f, "vpc footer copy"));
      found = std::memcmp(f, "conectix", 8) == 0;
      if (!found) {
        CHAINFS_RETURN_IF_ERROR(ReadExact(r, r.Size() - kFooterSize, f, "vpc footer"));
        found = std::memcmp(f, "conectix", 8) == 0;
      }
    }
    if (!found) return Error(Code::kCorrupt, "vpc: no \"conectix\" footer");
    if (LoadBe32(f + 64) != FooterChecksum(f))
      m.problems.push_back("vpc: footer checksum mismatch");

    uint32_t disk_type = LoadBe32(f + 60);
    if (disk_type != kTypeFixed && disk_type != kTypeDynamic && disk_type != kTypeDifferencing) {
      return Error(Code::kUnsupported, "vpc: unknown disk type {}", disk_type);
    }
    uint64_t sectors = uint64_t{LoadBe16(f + 56)} * f[58] * f[59];
    // Virtual PC sizes the disk by its CHS geometry, other creators by
    // current_size; a maximal geometry means the true size did not fit CHS.
    if (CreatorUsesCurrentSize(f + 28) || sectors == kMaxGeometrySectors) {
      sectors = LoadBe64(f + 48) / 512;
    }
    if (sectors > kMaxSectors) {
      return Error(Code::kUnsupported, "vpc: {} sectors exceed the 2040 GiB limit", sectors);
    }
    m.virtual_size = sectors * 512;
    BlockLayout layout;
    layout.type = disk_type;

    if (disk_type != kTypeFixed) {
      uint64_t dyn_offset = LoadBe64(f + 16);
      uint8_t d[kDynHeaderSize];
      CHAINFS_RETURN_IF_ERROR(ReadExact(r, dyn_offset, d, "vpc dynamic disk header"));
      if (std::memcmp(d, "cxsparse", 8) != 0) {
        return Error(Code::kCorrupt, "vpc: dynamic disk header at {} lacks \"cxsparse\"",
                     dyn_offset);
      }
      uint64_t table_offset = LoadBe64(d + 16);
      uint32_t max_entries = LoadBe32(d + 28);
      uint32_t block_size = LoadBe32(d + 32);
      if (!IsPowerOfTwo(block_size) || block_size < 512) {
        return Error(Code::kCorrupt, "vpc: invalid block size {}", block_size);
      }
      uint64_t needed = (m.virtual_size + block_size - 1) / block_size;
      if (max_entries < needed) {
        return Error(Code::kCorrupt, "vpc: block table has {} entries, {} needed", max_entries,
                     needed);
      }
      if (!RangeWithin(table_offset, uint64_t{max_entries} * 4, r.Size())) {
        return Error(Code::kCorrupt, "vpc: block table at {} lies past the end of the file",
                     table_offset);
      }
      m.cluster_size = block_size;
      layout.table_offset = table_offset;
      layout.table_entries = max_entries;
      layout.block_bytes = block_size;
      if (disk_type == kTypeDifferencing) {
        m.problems.push_back(
            "vpc: differencing VHD; QEMU does not follow its parent, so the guest sees only this "
            "layer");
      }
    }
    m.layout = layout;
    return m;
  }
};

}  // namespace

const FormatDriver* MakeVpcDriver() {
  static const VpcDriver driver;
  return &driver;
}

}  // namespace chainfs::core
