// The qcow2 driver: header parsing, metadata, probing.
#include "core/format/qcow2/header.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <string_view>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

// LUKS v1 header layout (cryptsetup's on-disk format), as embedded by qcow2's
// LUKS encryption: big endian, 592 bytes with 8 key slots.
constexpr size_t kLuksHeaderSize = 592;
constexpr uint8_t kLuksMagic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
constexpr size_t kLuksOffVersion = 6;
constexpr size_t kLuksOffCipherName = 8;
constexpr size_t kLuksOffCipherMode = 40;
constexpr size_t kLuksOffHashSpec = 72;
constexpr size_t kLuksOffPayloadOffset = 104;
constexpr size_t kLuksOffKeyBytes = 108;
constexpr size_t kLuksOffMkDigestIter = 164;
constexpr size_t kLuksOffUuid = 168;
constexpr size_t kLuksOffKeySlots = 208;
constexpr size_t kLuksKeySlotSize = 48;
constexpr size_t kLuksNumKeySlots = 8;
constexpr uint32_t kLuksKeyEnabled = 0x00ac71f3;
constexpr uint64_t kLuksSectorSize = 512;

uint64_t RoundUp8(uint64_t v) { return (v + 7) / 8 * 8; }

// Returns the bytes of a fixed-size, NUL-padded field up to the first NUL.
std::string FixedString(const uint8_t* p, size_t max_len) {
  size_t n = 0;
  while (n < max_len && p[n] != 0) ++n;
  return std::string(reinterpret_cast<const char*>(p), n);
}

std::string ToLower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  }
  return s;
}

// Names a cipher the way qemu's QCryptoCipherAlgorithm does.
std::string LuksCipherAlgName(const std::string& cipher, uint32_t key_bits) {
  std::string name = ToLower(cipher);
  if (name == "cast5") return "cast5-128";
  if (name == "sm4") return "sm4";
  if (name == "des3_ede") return "3des";
  return fmt::format("{}-{}", name, key_bits);
}

// Builds qemu-img's "encrypt" object for a LUKS header at `ptr`; a header
// that cannot be read or understood adds a problem and yields just the format.
Json DescribeLuks(const Reader& r, const Qcow2CryptHeaderPointer& ptr,
                  std::vector<std::string>& problems) {
  Json fallback = Json::MakeObject();
  fallback.Set("format", "luks");
  if (ptr.length < kLuksHeaderSize) {
    problems.push_back(fmt::format("LUKS header length {} is shorter than a LUKS header ({} bytes)",
                                   ptr.length, kLuksHeaderSize));
    return fallback;
  }
  std::array<uint8_t, kLuksHeaderSize> h{};
  Status s = ReadExact(r, ptr.offset, h, "LUKS header");
  if (!s.ok()) {
    problems.push_back(s.message());
    return fallback;
  }
  if (std::memcmp(h.data(), kLuksMagic, sizeof(kLuksMagic)) != 0 ||
      LoadBe16(h.data() + kLuksOffVersion) != 1) {
    problems.push_back(fmt::format("no LUKS version 1 header at offset {}", ptr.offset));
    return fallback;
  }
  std::string cipher = FixedString(h.data() + kLuksOffCipherName, 32);
  std::string mode_spec = ToLower(FixedString(h.data() + kLuksOffCipherMode, 32));
  std::string hash = ToLower(FixedString(h.data() + kLuksOffHashSpec, 32));
  uint32_t key_bytes = LoadBe32(h.data() + kLuksOffKeyBytes);

  // cipher_mode is "MODE-IVGEN[:IVHASH]", e.g. "xts-plain64", "cbc-essiv:sha256".
  std::string mode = mode_spec, ivgen, ivgen_hash;
  if (size_t dash = mode_spec.find('-'); dash != std::string::npos) {
    mode = mode_spec.substr(0, dash);
    ivgen = mode_spec.substr(dash + 1);
    if (size_t colon = ivgen.find(':'); colon != std::string::npos) {
      ivgen_hash = ivgen.substr(colon + 1);
      ivgen = ivgen.substr(0, colon);
    }
  }
  // XTS keys hold two cipher keys of half the length each.
  uint64_t key_bits = uint64_t{key_bytes} * 8;
  if (mode == "xts") key_bits /= 2;

  Json slots = Json::MakeArray();
  for (size_t i = 0; i < kLuksNumKeySlots; ++i) {
    const uint8_t* ks = h.data() + kLuksOffKeySlots + i * kLuksKeySlotSize;
    bool active = LoadBe32(ks) == kLuksKeyEnabled;
    Json slot = Json::MakeObject();
    slot.Set("active", active);
    if (active) slot.Set("iters", LoadBe32(ks + 4));
    slot.Set("key-offset", uint64_t{LoadBe32(ks + 40)} * kLuksSectorSize);
    if (active) slot.Set("stripes", LoadBe32(ks + 44));
    slots.Push(std::move(slot));
  }

  // Key order as `qemu-img info --output=json` (7.2) prints it.
  Json out = Json::MakeObject();
  if (!ivgen.empty()) out.Set("ivgen-alg", ivgen);
  out.Set("hash-alg", hash);
  out.Set("cipher-alg", LuksCipherAlgName(cipher, uint32_t(key_bits)));
  out.Set("uuid", FixedString(h.data() + kLuksOffUuid, 40));
  if (!ivgen_hash.empty()) out.Set("ivgen-hash-alg", ivgen_hash);
  out.Set("format", "luks");
  out.Set("cipher-mode", mode);
  out.Set("slots", std::move(slots));
  out.Set("payload-offset", uint64_t{LoadBe32(h.data() + kLuksOffPayloadOffset)} * kLuksSectorSize);
  out.Set("master-key-iters", LoadBe32(h.data() + kLuksOffMkDigestIter));
  return out;
}

// Reads the bitmap directory; on any inconsistency adds a problem and
// returns an empty list (bitmaps are informational only).
std::vector<Qcow2Bitmap> ReadBitmapDirectory(const Reader& r, const Qcow2Header& h,
                                             std::vector<std::string>& problems) {
  const Qcow2BitmapsExtension& ext = *h.bitmaps_extension;
  auto fail = [&](std::string msg) {
    problems.push_back("bitmaps ignored: " + msg);
    return std::vector<Qcow2Bitmap>{};
  };
  if (ext.nb_bitmaps == 0 || ext.nb_bitmaps > kQcow2MaxBitmaps) {
    return fail(
        fmt::format("bitmap count {} is out of range 1..{}", ext.nb_bitmaps, kQcow2MaxBitmaps));
  }
  if (ext.directory_size > kQcow2MaxBitmapDirectoryBytes) {
    return fail(fmt::format("bitmap directory size {} exceeds {}", ext.directory_size,
                            kQcow2MaxBitmapDirectoryBytes));
  }
  if (ext.directory_offset % h.cluster_size() != 0) {
    return fail(
        fmt::format("bitmap directory offset {} is not cluster aligned", ext.directory_offset));
  }
  Result<std::vector<uint8_t>> dir = ReadVector(r, ext.directory_offset, ext.directory_size,
                                                kQcow2MaxBitmapDirectoryBytes, "bitmap directory");
  if (!dir.ok()) return fail(dir.status().message());

  std::vector<Qcow2Bitmap> out;
  const std::vector<uint8_t>& d = *dir;
  uint64_t pos = 0;
  for (uint32_t i = 0; i < ext.nb_bitmaps; ++i) {
    if (d.size() - pos < 24) {
      return fail(fmt::format("bitmap directory entry {} is truncated", i));
    }
    const uint8_t* e = d.data() + pos;
    Qcow2Bitmap b;
    b.table_offset = LoadBe64(e);
    b.table_size = LoadBe32(e + 8);
    b.flags = LoadBe32(e + 12);
    b.type = e[16];
    b.granularity_bits = e[17];
    uint16_t name_size = LoadBe16(e + 18);
    b.extra_data_size = LoadBe32(e + 20);
    if (name_size == 0 || name_size > 1023) {
      return fail(fmt::format("bitmap directory entry {} has name size {}", i, name_size));
    }
    if (b.granularity_bits > 63) {
      return fail(
          fmt::format("bitmap directory entry {} has granularity bits {}", i, b.granularity_bits));
    }
    uint64_t entry = RoundUp8(24 + uint64_t{b.extra_data_size} + name_size);
    uint64_t unpadded = 24 + uint64_t{b.extra_data_size} + name_size;
    if (unpadded > d.size() - pos) {
      return fail(fmt::format("bitmap directory entry {} runs past the directory", i));
    }
    b.name.assign(reinterpret_cast<const char*>(e + 24 + b.extra_data_size), name_size);
    out.push_back(std::move(b));
    pos = std::min<uint64_t>(pos + entry, d.size());
  }
  return out;
}

// Names incompatible bits for a problem line, using the feature name table.
std::string DescribeIncompatibleBits(const Qcow2Header& h, uint64_t bits) {
  std::string out;
  for (uint8_t bit = 0; bit < 64; ++bit) {
    if (!(bits & (uint64_t{1} << bit))) continue;
    if (!out.empty()) out += ", ";
    // The name comes from the image's feature table: only a short token of it.
    std::string name = h.FeatureName(0, bit);
    out += name.empty() ? fmt::format("bit {}", bit)
                        : fmt::format("'{}' (bit {})", ShortToken(name), bit);
  }
  return out;
}

// Adds a problem when a table [offset, offset + bytes) is misaligned or lies
// past the end of the file.
void CheckTable(const Qcow2Header& h, uint64_t file_size, std::string_view what, uint64_t offset,
                uint64_t bytes, std::vector<std::string>& problems) {
  if (offset % h.cluster_size() != 0) {
    problems.push_back(fmt::format("{} offset {} is not aligned to the cluster size {}", what,
                                   offset, h.cluster_size()));
  }
  if (!RangeWithin(offset, bytes, file_size)) {
    problems.push_back(fmt::format(
        "{} at offset {} ({} bytes) lies past the end of the file ({} bytes): the image is "
        "truncated",
        what, offset, bytes, file_size));
  }
}

Status ParseExtension(const Qcow2Extension& ext, Qcow2Header& h) {
  const std::vector<uint8_t>& d = ext.data;
  switch (ext.type) {
    case kQcow2ExtBackingFormat:
      if (d.size() > kQcow2MaxBackingFormatSize) {
        return Error(Code::kCorrupt, "qcow2 backing format extension is {} bytes, over {}",
                     d.size(), kQcow2MaxBackingFormatSize);
      }
      h.backing_format = FixedString(d.data(), d.size());
      break;
    case kQcow2ExtFeatureTable:
      h.feature_names.clear();
      for (size_t i = 0; i + kQcow2FeatureEntrySize <= d.size(); i += kQcow2FeatureEntrySize) {
        h.feature_names.push_back({d[i], d[i + 1], FixedString(d.data() + i + 2, 46)});
      }
      break;
    case kQcow2ExtDataFile:
      h.data_file = std::string(d.begin(), d.end());
      break;
    case kQcow2ExtCryptHeader:
      if (d.size() != 16) {
        return Error(Code::kCorrupt, "qcow2 encryption header extension is {} bytes, not 16",
                     d.size());
      }
      h.crypt_header = Qcow2CryptHeaderPointer{LoadBe64(d.data()), LoadBe64(d.data() + 8)};
      break;
    case kQcow2ExtBitmaps:
      if (d.size() != 24) {
        h.problems.push_back(
            fmt::format("bitmaps ignored: bitmaps extension is {} bytes, not 24", d.size()));
        break;
      }
      if (LoadBe32(d.data() + 4) != 0) {
        h.problems.push_back("bitmaps ignored: reserved field of the bitmaps extension is set");
        break;
      }
      h.bitmaps_extension = Qcow2BitmapsExtension{LoadBe32(d.data()), LoadBe64(d.data() + 8),
                                                  LoadBe64(d.data() + 16)};
      break;
    default:
      break;  // unknown extensions are skipped (kept in h.extensions)
  }
  return Status::Ok();
}

// Reads the extension area [h.header_length, end) into h.
Status ReadExtensions(const Reader& r, uint64_t end, Qcow2Header& h) {
  uint64_t pos = h.header_length;
  h.extensions_end = pos;
  std::set<uint32_t> seen, reported;  // sets: a hostile area holds up to 256 Ki extensions
  while (pos < end) {
    if (end - pos < 8) {
      return Error(Code::kCorrupt,
                   "qcow2 header extension at offset {} overlaps the backing file name at {}", pos,
                   end);
    }
    uint8_t eh[8];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, pos, eh, "qcow2 header extension"));
    uint32_t type = LoadBe32(eh);
    uint32_t len = LoadBe32(eh + 4);
    if (type == kQcow2ExtEnd) {
      h.extensions_end = pos + 8;
      return Status::Ok();
    }
    uint64_t data_off = pos + 8;
    if (len > end - data_off) {
      return Error(Code::kCorrupt,
                   "qcow2 header extension 0x{:08x} at offset {} has length {}, past the end of "
                   "the extension area at {}",
                   type, pos, len, end);
    }
    Qcow2Extension ext;
    ext.type = type;
    ext.offset = pos;
    Result<std::vector<uint8_t>> data = ReadVector(r, data_off, len, end, "qcow2 header extension");
    if (!data.ok()) return data.status();
    ext.data = std::move(*data);
    if (!seen.insert(type).second && reported.insert(type).second) {
      h.problems.push_back(fmt::format(
          "header extension 0x{:08x} appears more than once; the last one is used", type));
    }
    CHAINFS_RETURN_IF_ERROR(ParseExtension(ext, h));
    h.extensions.push_back(std::move(ext));
    pos = data_off + RoundUp8(len);
    h.extensions_end = std::min(pos, end);
  }
  return Status::Ok();
}

// Adds the problems that qemu would refuse or warn about but that leave the
// metadata readable.
void CheckConsistency(const Reader& r, Qcow2Header& h) {
  std::vector<std::string>& p = h.problems;
  const uint64_t file_size = r.Size();
  if (uint64_t unknown = h.unknown_incompatible_features()) {
    p.push_back(fmt::format("unsupported incompatible qcow2 features: {}; qemu refuses to open it",
                            DescribeIncompatibleBits(h, unknown)));
  }
  if (h.corrupt()) {
    p.push_back(
        "image is marked corrupt (incompatible feature bit 1); qemu opens it read-only "
        "until `qemu-img check -r all` repairs it");
  }
  if (h.crypt_method > kQcow2CryptLuks) {
    p.push_back(fmt::format("unknown encryption method {}", h.crypt_method));
  }
  if (h.crypt_method == kQcow2CryptLuks && !h.crypt_header) {
    p.push_back("LUKS-encrypted image has no encryption header extension");
  }
  if (h.crypt_method != kQcow2CryptLuks && h.crypt_header) {
    p.push_back("encryption header extension present but the image is not LUKS-encrypted");
  }
  if (h.has_data_file() && !h.data_file) {
    p.push_back("image uses an external data file but does not record its name");
  }
  if (h.data_file_raw() && !h.has_data_file()) {
    p.push_back("raw external data bit set without an external data file");
  }
  if (h.extended_l2() && h.cluster_bits < 14) {
    p.push_back(fmt::format("extended L2 entries need clusters of at least 16384 bytes, not {}",
                            h.cluster_size()));
  }

  // L1 table: must cover the virtual size and respect qemu's size limit.
  const uint64_t l1_bytes = uint64_t{h.l1_size} * 8;
  if (l1_bytes > kQcow2MaxL1Bytes) {
    p.push_back(fmt::format("active L1 table is {} bytes, over qemu's limit of {}", l1_bytes,
                            kQcow2MaxL1Bytes));
  }
  const uint64_t l2_entries = h.cluster_size() / (h.extended_l2() ? 16 : 8);
  const uint64_t bytes_per_l1 = h.cluster_size() * l2_entries;  // <= 2^39
  const uint64_t min_l1 = h.size / bytes_per_l1 + (h.size % bytes_per_l1 ? 1 : 0);
  if (h.l1_size < min_l1) {
    p.push_back(fmt::format("L1 table has {} entries, too few for a virtual size of {} ({} needed)",
                            h.l1_size, h.size, min_l1));
  }
  if (h.l1_size > 0) CheckTable(h, file_size, "L1 table", h.l1_table_offset, l1_bytes, p);

  const uint64_t rt_bytes = uint64_t{h.refcount_table_clusters} * h.cluster_size();
  if (h.refcount_table_clusters == 0) {
    p.push_back("image has no refcount table");
  } else if (rt_bytes > kQcow2MaxRefTableBytes) {
    p.push_back(fmt::format("refcount table is {} bytes, over qemu's limit of {}", rt_bytes,
                            kQcow2MaxRefTableBytes));
  } else {
    CheckTable(h, file_size, "refcount table", h.refcount_table_offset, rt_bytes, p);
  }
  // Each snapshot table entry is at least 40 bytes.
  if (h.nb_snapshots > 0) {
    CheckTable(h, file_size, "snapshot table", h.snapshots_offset, uint64_t{h.nb_snapshots} * 40,
               p);
  }

  if (h.bitmaps_extension) {
    if (h.version < 3) {
      p.push_back("bitmaps ignored: bitmaps extension in a version 2 image");
    } else if (!(h.autoclear_features & kQcow2AutoclearBitmaps)) {
      p.push_back(
          "bitmaps extension present but its autoclear bit is clear: qemu considers "
          "every bitmap inconsistent");
    } else {
      h.bitmaps = ReadBitmapDirectory(r, h, p);
    }
  }
}

class Qcow2Driver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "qcow2"; }
  // qemu's rule: the magic and a version of at least 2. A version this
  // parser does not know (4, 0xffffffff) is still a qcow2 image, one that
  // cannot be opened, never raw; version 1 is qcow's, 0 nobody's (raw).
  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < 8 || LoadBe32(head.data()) != kQcow2Magic) return 0;
    return LoadBe32(head.data() + kQcow2OffVersion) >= 2 ? 100 : 0;
  }
  Result<ImageMeta> Parse(const Reader& r) const override {
    Result<Qcow2Header> h = ParseQcow2Header(r);
    if (!h.ok()) return h.status();
    return Qcow2HeaderToMeta(*h, r);
  }
};

}  // namespace

std::string Qcow2Header::FeatureName(uint8_t type, uint8_t bit) const {
  for (const Qcow2FeatureName& f : feature_names) {
    if (f.type == type && f.bit == bit) return f.name;
  }
  return "";
}

const char* Qcow2CompressionName(uint8_t type) {
  switch (type) {
    case kQcow2CompressionZlib:
      return "zlib";
    case kQcow2CompressionZstd:
      return "zstd";
    default:
      return "";
  }
}

Result<Qcow2Header> ParseQcow2Header(const Reader& r) {
  Qcow2Header h;
  uint8_t b[kQcow2V3MinHeaderLength] = {};
  {
    const uint64_t avail = std::min<uint64_t>(r.Size(), 8);
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, std::span<uint8_t>(b, avail), "qcow2 magic"));
    if (avail < 8 || LoadBe32(b) != kQcow2Magic) {
      return Error(Code::kCorrupt, "not a qcow2 image (no QFI\\xfb magic and version)");
    }
  }
  h.version = LoadBe32(b + kQcow2OffVersion);
  if (h.version != 2 && h.version != 3) {
    // qemu's wording.
    return Error(Code::kUnsupported, "Unsupported qcow2 version {}", h.version);
  }
  const size_t fixed = h.version == 2 ? kQcow2V2HeaderLength : kQcow2V3MinHeaderLength;
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, std::span<uint8_t>(b, fixed), "qcow2 header"));

  h.backing_file_offset = LoadBe64(b + kQcow2OffBackingFileOffset);
  h.backing_file_size = LoadBe32(b + kQcow2OffBackingFileSize);
  h.cluster_bits = LoadBe32(b + kQcow2OffClusterBits);
  h.size = LoadBe64(b + kQcow2OffSize);
  h.crypt_method = LoadBe32(b + kQcow2OffCryptMethod);
  h.l1_size = LoadBe32(b + kQcow2OffL1Size);
  h.l1_table_offset = LoadBe64(b + kQcow2OffL1TableOffset);
  h.refcount_table_offset = LoadBe64(b + kQcow2OffRefcountTableOffset);
  h.refcount_table_clusters = LoadBe32(b + kQcow2OffRefcountTableClusters);
  h.nb_snapshots = LoadBe32(b + kQcow2OffNbSnapshots);
  h.snapshots_offset = LoadBe64(b + kQcow2OffSnapshotsOffset);
  if (h.version >= 3) {
    h.incompatible_features = LoadBe64(b + kQcow2OffIncompatibleFeatures);
    h.compatible_features = LoadBe64(b + kQcow2OffCompatibleFeatures);
    h.autoclear_features = LoadBe64(b + kQcow2OffAutoclearFeatures);
    h.refcount_order = LoadBe32(b + kQcow2OffRefcountOrder);
    h.header_length = LoadBe32(b + kQcow2OffHeaderLength);
  }

  if (h.cluster_bits < kQcow2MinClusterBits || h.cluster_bits > kQcow2MaxClusterBits) {
    return Error(Code::kCorrupt, "qcow2 cluster_bits {} is outside {}..{}", h.cluster_bits,
                 kQcow2MinClusterBits, kQcow2MaxClusterBits);
  }
  const uint64_t cluster_size = h.cluster_size();
  if (h.version >= 3) {
    if (h.header_length < kQcow2V3MinHeaderLength) {
      return Error(Code::kCorrupt, "qcow2 v3 header_length {} is below {}", h.header_length,
                   kQcow2V3MinHeaderLength);
    }
    if (h.header_length % 8 != 0) {
      return Error(Code::kCorrupt, "qcow2 header_length {} is not a multiple of 8",
                   h.header_length);
    }
    if (h.header_length > cluster_size) {
      return Error(Code::kCorrupt, "qcow2 header_length {} exceeds the cluster size {}",
                   h.header_length, cluster_size);
    }
    if (h.refcount_order > kQcow2MaxRefcountOrder) {
      return Error(Code::kCorrupt, "qcow2 refcount_order {} exceeds {}", h.refcount_order,
                   kQcow2MaxRefcountOrder);
    }
    // The whole declared header must be present.
    Result<std::vector<uint8_t>> full =
        ReadVector(r, 0, h.header_length, cluster_size, "qcow2 header");
    if (!full.ok()) return full.status();
    if (h.header_length > kQcow2OffCompressionType) {
      h.compression_type = (*full)[kQcow2OffCompressionType];
    }
    const bool bit = h.incompatible_features & kQcow2IncompatCompression;
    if (h.compression_type > kQcow2CompressionZstd) {
      return Error(Code::kCorrupt, "qcow2 compression type {} is unknown", h.compression_type);
    }
    if (bit && h.compression_type == kQcow2CompressionZlib) {
      return Error(Code::kCorrupt,
                   "qcow2 compression type incompatible bit is set but the type is zlib");
    }
    if (!bit && h.compression_type != kQcow2CompressionZlib) {
      return Error(Code::kCorrupt,
                   "qcow2 compression type {} is set without its incompatible feature bit",
                   Qcow2CompressionName(h.compression_type));
    }
  }

  // The extension area runs from the header to the backing file name (which
  // qemu writes at the end of the header area) or to the end of the cluster.
  uint64_t ext_end = cluster_size;
  if (h.backing_file_offset != 0) {
    if (h.backing_file_offset < h.header_length) {
      return Error(Code::kCorrupt,
                   "qcow2 backing file name offset {} lies inside the header ({} bytes)",
                   h.backing_file_offset, h.header_length);
    }
    if (h.backing_file_offset > cluster_size) {
      return Error(Code::kCorrupt, "qcow2 backing file name offset {} is past the first cluster",
                   h.backing_file_offset);
    }
    if (h.backing_file_size > kQcow2MaxBackingFileSize) {
      return Error(Code::kCorrupt, "qcow2 backing file name is {} bytes, over the limit of {}",
                   h.backing_file_size, kQcow2MaxBackingFileSize);
    }
    ext_end = h.backing_file_offset;
  }
  CHAINFS_RETURN_IF_ERROR(ReadExtensions(r, ext_end, h));

  if (h.backing_file_offset != 0) {
    Result<std::vector<uint8_t>> name =
        ReadVector(r, h.backing_file_offset, h.backing_file_size, kQcow2MaxBackingFileSize,
                   "qcow2 backing file name");
    if (!name.ok()) return name.status();
    std::string s = FixedString(name->data(), name->size());
    if (!s.empty()) h.backing_file = std::move(s);
  }

  CheckConsistency(r, h);
  return h;
}

ImageMeta Qcow2HeaderToMeta(const Qcow2Header& h, const Reader& r) {
  ImageMeta m;
  m.format = "qcow2";
  m.virtual_size = Qcow2VirtualSize(h);
  m.cluster_size = h.cluster_size();
  m.backing = h.backing_file;
  m.backing_format = h.backing_format;
  m.dirty = h.dirty();
  m.data_file = h.data_file;
  m.compat = h.version == 2 ? "0.10" : "1.1";
  if (h.lazy_refcounts()) m.features.push_back("lazy_refcounts");
  if (h.extended_l2()) m.features.push_back("extended_l2");
  m.problems = h.problems;

  Json encrypt;
  if (h.crypt_method != kQcow2CryptNone) {
    m.encrypted = true;
    if (h.crypt_method == kQcow2CryptAes) {
      m.encryption_format = "aes";
      encrypt = Json::MakeObject();
      encrypt.Set("format", "aes");
    } else if (h.crypt_method == kQcow2CryptLuks) {
      m.encryption_format = "luks";
      if (h.crypt_header) {
        encrypt = DescribeLuks(r, *h.crypt_header, m.problems);
      } else {
        encrypt = Json::MakeObject();
        encrypt.Set("format", "luks");
      }
    }
  }

  // Key order as `qemu-img info --output=json` (7.2) prints it.
  Json data = Json::MakeObject();
  data.Set("compat", *m.compat);
  data.Set("compression-type", Qcow2CompressionName(h.compression_type));
  if (h.version >= 3) {
    data.Set("lazy-refcounts", h.lazy_refcounts());
    if (!h.bitmaps.empty()) {
      Json list = Json::MakeArray();
      for (const Qcow2Bitmap& b : h.bitmaps) {
        Json flags = Json::MakeArray();
        if (b.in_use()) flags.Push("in-use");
        if (b.is_auto()) flags.Push("auto");
        Json entry = Json::MakeObject();
        entry.Set("flags", std::move(flags));
        entry.Set("name", b.name);
        entry.Set("granularity", b.granularity_bits < 64 ? uint64_t{1} << b.granularity_bits : 0);
        list.Push(std::move(entry));
      }
      data.Set("bitmaps", std::move(list));
    }
  }
  data.Set("refcount-bits", h.refcount_bits());
  if (h.version >= 3) {
    if (h.data_file) data.Set("data-file", *h.data_file);
    if (h.has_data_file()) data.Set("data-file-raw", h.data_file_raw());
  }
  if (!encrypt.is_null()) data.Set("encrypt", std::move(encrypt));
  if (h.version >= 3) {
    data.Set("corrupt", h.corrupt());
    data.Set("extended-l2", h.extended_l2());
  }
  Json fs = Json::MakeObject();
  fs.Set("type", "qcow2");
  fs.Set("data", std::move(data));
  m.format_specific = std::move(fs);
  return m;
}

std::vector<uint8_t> EncodeQcow2Extensions(const std::vector<Qcow2Extension>& extensions) {
  std::vector<uint8_t> out;
  for (const Qcow2Extension& e : extensions) {
    size_t at = out.size();
    out.resize(at + 8 + RoundUp8(e.data.size()), 0);
    StoreBe32(out.data() + at, e.type);
    StoreBe32(out.data() + at + 4, uint32_t(e.data.size()));
    std::copy(e.data.begin(), e.data.end(), out.begin() + at + 8);
  }
  out.resize(out.size() + 8, 0);  // end marker
  return out;
}

const FormatDriver* MakeQcow2Driver() {
  static const Qcow2Driver driver;
  return &driver;
}

}  // namespace chainfs::core
