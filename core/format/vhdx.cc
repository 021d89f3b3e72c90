// vhdx: Microsoft VHDX. Little-endian; the layout (MS-VHDX):
//   0       file identifier "vhdxfile"
//   64 KiB  header 1, 128 KiB header 2 (4 KiB each, CRC-32C): 0 "head"
//           4 checksum  8 sequence_number  48 log_guid[16]  66 version (1)
//   192 KiB region table 1, 256 KiB region table 2 (64 KiB, CRC-32C):
//           0 "regi"  4 checksum  8 entry_count; 32-byte entries from 16:
//           guid[16]  16 file_offset (u64)  24 length  28 required (bit 0)
//   metadata region: 0 "metadata"  10 entry_count (u16); 32-byte entries
//           from 32: item_id[16]  16 offset (from region start)  20 length
//           24 flags (bit 2 = required)
// The parent locator of differencing images is not parsed: QEMU cannot open
// them, so such an image is reported with a problem and no backing.
#include <algorithm>
#include <array>
#include <cstring>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

using Guid = std::array<uint8_t, 16>;

constexpr uint64_t kHeader1Offset = 64 * 1024;
constexpr uint64_t kHeader2Offset = 128 * 1024;
constexpr size_t kHeaderSize = 4096;
constexpr uint64_t kRegionTable1Offset = 192 * 1024;
constexpr uint64_t kRegionTable2Offset = 256 * 1024;
constexpr size_t kTableSize = 64 * 1024;
constexpr uint32_t kMaxEntries = 2047;
constexpr uint32_t kMinBlockSize = 1u << 20;
constexpr uint32_t kMaxBlockSize = 256u << 20;
constexpr uint64_t kMaxVirtualSize = uint64_t{64} << 40;  // 64 TiB

// GUIDs as stored on disk (first three fields little-endian).
constexpr Guid kBatGuid = {0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
                           0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08};
constexpr Guid kMetadataGuid = {0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
                                0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e};
constexpr Guid kFileParamsGuid = {0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
                                  0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b};
constexpr Guid kVirtualDiskSizeGuid = {0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
                                       0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8};
constexpr Guid kLogicalSectorSizeGuid = {0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
                                         0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f};

bool GuidAt(const uint8_t* p, const Guid& g) { return std::memcmp(p, g.data(), 16) == 0; }
bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Computes CRC-32C (Castagnoli) of `data`, treating bytes [4, 8) as zero
// (where every VHDX structure keeps its own checksum).
uint32_t Crc32cSkippingChecksum(std::span<const uint8_t> data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < data.size(); ++i) {
    uint8_t b = (i >= 4 && i < 8) ? 0 : data[i];
    crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  }
  return ~crc;
}

struct VhdxHeader {
  bool valid = false;
  uint64_t sequence = 0;
  bool log_pending = false;
};

constexpr uint64_t kLogSector = 4096;
constexpr size_t kLogEntryHeaderSize = 64;
// The longest log entry checked; a longer one counts as pending (refused
// rather than guessed at).
constexpr uint64_t kMaxLogEntryBytes = 8 << 20;

// Says whether the circular log at [offset, offset + length) holds an entry
// that qemu would replay: signature "loge", the header's log GUID, a length
// that is a whole number of 4 KiB sectors and fits the log, and a valid
// CRC-32C. (qemu: a log GUID with no such entry leaves nothing to replay.)
// Log entry header: 0 "loge"  4 checksum  8 entry_length  16 sequence
// 24 descriptor_count  32 log_guid[16].
Result<bool> LogHasEntries(const Reader& r, uint64_t offset, uint64_t length, const uint8_t* guid) {
  if (length == 0 || length % kLogSector != 0 || !RangeWithin(offset, length, r.Size())) {
    return true;  // no log qemu could read: cannot tell it is empty
  }
  for (uint64_t at = 0; at < length; at += kLogSector) {
    uint8_t h[kLogEntryHeaderSize];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, offset + at, h, "vhdx log entry"));
    if (std::memcmp(h, "loge", 4) != 0 || std::memcmp(h + 32, guid, 16) != 0) continue;
    const uint64_t entry_length = LoadLe32(h + 8);
    if (entry_length == 0 || entry_length % kLogSector != 0 || entry_length > length) continue;
    if (entry_length > kMaxLogEntryBytes) return true;
    std::vector<uint8_t> entry(entry_length);
    // The log is circular: an entry may wrap to its start.
    const uint64_t first = std::min(entry_length, length - at);
    CHAINFS_RETURN_IF_ERROR(
        ReadExact(r, offset + at, std::span(entry.data(), first), "vhdx log entry"));
    if (first < entry_length) {
      CHAINFS_RETURN_IF_ERROR(ReadExact(
          r, offset, std::span(entry.data() + first, entry_length - first), "vhdx log entry"));
    }
    if (LoadLe32(h + 4) == Crc32cSkippingChecksum(entry)) return true;
  }
  return false;
}

Result<VhdxHeader> ReadHeader(const Reader& r, uint64_t offset) {
  std::vector<uint8_t> h(kHeaderSize);
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, offset, h, "vhdx header"));
  VhdxHeader out;
  if (std::memcmp(h.data(), "head", 4) != 0) return out;
  if (LoadLe32(h.data() + 4) != Crc32cSkippingChecksum(h)) return out;
  if (LoadLe16(h.data() + 66) != 1) return out;
  out.valid = true;
  out.sequence = LoadLe64(h.data() + 8);
  const uint8_t* log_guid = h.data() + 48;
  if (std::any_of(log_guid, log_guid + 16, [](uint8_t b) { return b != 0; })) {
    // 68 log_length (u32)  72 log_offset (u64)
    Result<bool> pending =
        LogHasEntries(r, LoadLe64(h.data() + 72), LoadLe32(h.data() + 68), log_guid);
    if (!pending.ok()) return pending.status();
    out.log_pending = *pending;
  }
  return out;
}

// Loads the first region table whose signature and checksum hold.
Result<std::vector<uint8_t>> ReadRegionTable(const Reader& r) {
  for (uint64_t offset : {kRegionTable1Offset, kRegionTable2Offset}) {
    std::vector<uint8_t> t(kTableSize);
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, offset, t, "vhdx region table"));
    if (std::memcmp(t.data(), "regi", 4) == 0 &&
        LoadLe32(t.data() + 4) == Crc32cSkippingChecksum(t) &&
        LoadLe32(t.data() + 8) <= kMaxEntries) {
      return t;
    }
  }
  return Error(Code::kCorrupt, "vhdx: no valid region table");
}

class VhdxDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "vhdx"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < 8) return 0;
    return std::memcmp(head.data(), "vhdxfile", 8) == 0 ? 100 : 0;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t ident[8];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, ident, "vhdx file identifier"));
    if (std::memcmp(ident, "vhdxfile", 8) != 0) return Error(Code::kCorrupt, "vhdx: bad signature");

    ImageMeta m;
    m.format = "vhdx";
    Result<VhdxHeader> h1 = ReadHeader(r, kHeader1Offset);
    if (!h1.ok()) return h1.status();
    Result<VhdxHeader> h2 = ReadHeader(r, kHeader2Offset);
    if (!h2.ok()) return h2.status();
    if (!h1->valid && !h2->valid) return Error(Code::kCorrupt, "vhdx: no valid header");
    const VhdxHeader& current =
        (h1->valid && (!h2->valid || h1->sequence >= h2->sequence)) ? *h1 : *h2;
    if (current.log_pending) {
      m.problems.push_back(
          "vhdx: the log must be replayed before the image can be opened read-only -- fix: "
          "qemu-img check -r all IMAGE");
    }

    Result<std::vector<uint8_t>> table = ReadRegionTable(r);
    if (!table.ok()) return table.status();
    uint32_t region_count = LoadLe32(table->data() + 8);
    uint64_t meta_offset = 0, meta_length = 0, bat_offset = 0, bat_length = 0;
    bool have_meta = false, have_bat = false;
    for (uint32_t i = 0; i < region_count; ++i) {
      const uint8_t* e = table->data() + 16 + size_t{i} * 32;
      uint64_t off = LoadLe64(e + 16);
      uint32_t len = LoadLe32(e + 24);
      bool required = LoadLe32(e + 28) & 1;
      if (GuidAt(e, kMetadataGuid)) {
        meta_offset = off, meta_length = len, have_meta = true;
      } else if (GuidAt(e, kBatGuid)) {
        bat_offset = off, bat_length = len, have_bat = true;
      } else if (required) {
        return Error(Code::kUnsupported, "vhdx: unknown required region");
      }
    }
    if (!have_meta || !have_bat)
      return Error(Code::kCorrupt, "vhdx: metadata or BAT region missing");
    if (!RangeWithin(meta_offset, meta_length, r.Size()) || meta_length < kTableSize) {
      return Error(Code::kCorrupt, "vhdx: metadata region at {} length {} is invalid", meta_offset,
                   meta_length);
    }
    if (!RangeWithin(bat_offset, bat_length, r.Size())) {
      return Error(Code::kCorrupt, "vhdx: BAT region at {} length {} lies past the end of the file",
                   bat_offset, bat_length);
    }

    std::vector<uint8_t> mt(kTableSize);
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, meta_offset, mt, "vhdx metadata table"));
    if (std::memcmp(mt.data(), "metadata", 8) != 0) {
      return Error(Code::kCorrupt, "vhdx: bad metadata table signature");
    }
    uint16_t item_count = LoadLe16(mt.data() + 10);
    if (item_count > kMaxEntries) return Error(Code::kCorrupt, "vhdx: too many metadata entries");

    std::optional<uint32_t> block_size, sector_size;
    std::optional<uint64_t> disk_size;
    bool has_parent = false;
    for (uint16_t i = 0; i < item_count; ++i) {
      const uint8_t* e = mt.data() + 32 + size_t{i} * 32;
      uint32_t off = LoadLe32(e + 16);
      uint32_t len = LoadLe32(e + 20);
      size_t want = 0;
      if (GuidAt(e, kFileParamsGuid)) {
        want = 8;
      } else if (GuidAt(e, kVirtualDiskSizeGuid)) {
        want = 8;
      } else if (GuidAt(e, kLogicalSectorSizeGuid)) {
        want = 4;
      } else {
        continue;  // physical sector size, page 83 data, parent locator
      }
      if (len < want || !RangeWithin(off, want, meta_length)) {
        return Error(Code::kCorrupt, "vhdx: metadata item {} lies outside its region", i);
      }
      uint8_t v[8];
      CHAINFS_RETURN_IF_ERROR(
          ReadExact(r, meta_offset + off, std::span(v, want), "vhdx metadata item"));
      if (GuidAt(e, kFileParamsGuid)) {
        block_size = LoadLe32(v);
        has_parent = (LoadLe32(v + 4) & 2) != 0;
      } else if (GuidAt(e, kVirtualDiskSizeGuid)) {
        disk_size = LoadLe64(v);
      } else {
        sector_size = LoadLe32(v);
      }
    }
    if (!block_size || !disk_size || !sector_size) {
      return Error(Code::kCorrupt,
                   "vhdx: required metadata (file parameters, size, sector size) missing");
    }
    if (!IsPowerOfTwo(*block_size) || *block_size < kMinBlockSize || *block_size > kMaxBlockSize) {
      return Error(Code::kCorrupt, "vhdx: invalid block size {}", *block_size);
    }
    if (*sector_size != 512 && *sector_size != 4096) {
      return Error(Code::kCorrupt, "vhdx: invalid logical sector size {}", *sector_size);
    }
    if (*disk_size > kMaxVirtualSize || *disk_size % *sector_size != 0) {
      return Error(Code::kCorrupt, "vhdx: invalid virtual disk size {}", *disk_size);
    }
    // The BAT interleaves one sector-bitmap entry per chunk of data blocks.
    uint64_t chunk_ratio = (uint64_t{1} << 23) * *sector_size / *block_size;
    uint64_t data_blocks = (*disk_size + *block_size - 1) / *block_size;
    uint64_t bat_entries =
        has_parent ? (data_blocks + chunk_ratio - 1) / chunk_ratio * (chunk_ratio + 1)
                   : data_blocks + (data_blocks == 0 ? 0 : (data_blocks - 1) / chunk_ratio);
    if (bat_entries * 8 > bat_length) {
      return Error(Code::kCorrupt, "vhdx: BAT region of {} bytes is too small for {} entries",
                   bat_length, bat_entries);
    }
    if (has_parent) {
      m.problems.push_back(
          "vhdx: differencing image; its parent locator is not followed and QEMU cannot open it");
    }
    m.virtual_size = *disk_size;
    m.cluster_size = *block_size;
    BlockLayout layout;
    layout.table_offset = bat_offset;
    layout.table_entries = bat_length / 8;
    layout.block_bytes = *block_size;
    layout.sector_size = *sector_size;
    layout.has_parent = has_parent;
    layout.log_pending = current.log_pending;
    m.layout = layout;
    return m;
  }
};

}  // namespace

const FormatDriver* MakeVhdxDriver() {
  static const VhdxDriver driver;
  return &driver;
}

}  // namespace chainfs::core
