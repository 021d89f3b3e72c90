// luks: a LUKS-encrypted volume (QEMU's "luks" driver opens LUKS1).
// LUKS1, big-endian: 0 magic "LUKS\xba\xbe"  6 version (1)  8 cipher_name[32]
//   40 cipher_mode[32]  72 hash_spec[32]  104 payload_offset (sectors)
//   108 key_bytes  164 mk_digest_iterations  168 uuid[40]
//   208 eight key slots of 48 bytes: 0 active (0x00ac71f3 = enabled)
//       4 iterations  40 key_material_offset (sectors)  44 stripes
// LUKS2: the same magic with version 2, 8 hdr_size (u64, binary header +
//   JSON area), 168 uuid[40]; the JSON metadata (NUL-terminated) starts at
//   4096 and names the data segment's offset and size as decimal strings.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/format/all_drivers.h"
#include "core/util/endian.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

constexpr uint8_t kMagic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
constexpr size_t kV1HeaderSize = 592;
constexpr size_t kKeySlots = 8;
constexpr size_t kKeySlotOffset = 208;
constexpr size_t kKeySlotSize = 48;
constexpr uint32_t kSlotActive = 0x00ac71f3;
constexpr uint32_t kSlotInactive = 0x0000dead;
constexpr uint32_t kStripes = 4000;
constexpr uint64_t kV1HeaderSectors = 4096 / 512;  // QEMU reserves 4 KiB for the header
constexpr size_t kV2BinaryHeaderSize = 4096;
constexpr uint64_t kV2MinHeaderSize = 16 * 1024;
constexpr uint64_t kV2MaxHeaderSize = 4 * 1024 * 1024;
constexpr uint64_t kMaxJsonBytes = 1 << 20;  // core::Json::Parse's own limit

std::string FixedString(const uint8_t* p, size_t n) {
  const auto* c = reinterpret_cast<const char*>(p);
  return std::string(c, strnlen(c, n));
}

std::optional<uint64_t> ParseDecimal(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Fills cipher-alg, cipher-mode, ivgen-alg and ivgen-hash-alg the way QEMU
// names them, from "aes" + "xts-plain64" + key size. Unknown ciphers are
// passed through and reported.
void DescribeCipher(std::string_view cipher, std::string_view mode_spec, uint64_t key_bytes,
                    Json& data, std::vector<std::string>& problems) {
  std::string_view mode = mode_spec.substr(0, mode_spec.find('-'));
  std::string_view ivgen, ivhash;
  if (size_t dash = mode_spec.find('-'); dash != std::string_view::npos) {
    ivgen = mode_spec.substr(dash + 1);
    if (size_t colon = ivgen.find(':'); colon != std::string_view::npos) {
      ivhash = ivgen.substr(colon + 1);
      ivgen = ivgen.substr(0, colon);
    }
  }
  // XTS splits the key into two halves of the cipher's key size.
  uint64_t cipher_bytes = mode == "xts" ? key_bytes / 2 : key_bytes;
  std::string alg;
  bool sized = cipher == "aes" || cipher == "serpent" || cipher == "twofish";
  if (sized && (cipher_bytes == 16 || cipher_bytes == 24 || cipher_bytes == 32)) {
    alg = fmt::format("{}-{}", cipher, cipher_bytes * 8);
  } else if (cipher == "cast5" && cipher_bytes == 16) {
    alg = "cast5-128";
  } else if (cipher == "sm4" && cipher_bytes == 16) {
    alg = "sm4";
  } else {
    alg = std::string(cipher);
    problems.push_back(
        fmt::format("luks: cipher \"{}\" with a {}-byte key is not supported by QEMU",
                    ShortToken(cipher), cipher_bytes));
  }
  data.Set("cipher-alg", alg);
  data.Set("cipher-mode", std::string(mode));
  if (!ivgen.empty()) data.Set("ivgen-alg", std::string(ivgen));
  if (!ivhash.empty()) data.Set("ivgen-hash-alg", std::string(ivhash));
}

Json WrapSpecific(Json data) {
  Json fs = Json::MakeObject();
  fs.Set("type", "luks");
  fs.Set("data", std::move(data));
  return fs;
}

Result<ImageMeta> ParseV1(const Reader& r) {
  uint8_t h[kV1HeaderSize];
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "luks header"));
  ImageMeta m;
  m.format = "luks";
  m.encrypted = true;
  m.encryption_format = "luks";
  uint64_t payload_sectors = LoadBe32(h + 104);
  uint32_t key_bytes = LoadBe32(h + 108);
  uint64_t payload = payload_sectors * 512;
  if (payload > r.Size()) {
    return Error(Code::kCorrupt, "luks: payload offset {} lies past the end of the file ({} bytes)",
                 payload, r.Size());
  }
  m.virtual_size = r.Size() - payload;

  Json data = Json::MakeObject();
  DescribeCipher(FixedString(h + 8, 32), FixedString(h + 40, 32), key_bytes, data, m.problems);
  data.Set("hash-alg", FixedString(h + 72, 32));
  data.Set("payload-offset", payload);
  data.Set("master-key-iters", LoadBe32(h + 164));
  data.Set("uuid", FixedString(h + 168, 40));
  Json slots = Json::MakeArray();
  // Key material of one slot: key_bytes * stripes bytes, in whole sectors.
  uint64_t material_sectors = (uint64_t{key_bytes} * kStripes + 511) / 512;
  for (size_t i = 0; i < kKeySlots; ++i) {
    const uint8_t* s = h + kKeySlotOffset + i * kKeySlotSize;
    uint32_t state = LoadBe32(s);
    uint64_t key_sector = LoadBe32(s + 40);
    uint32_t stripes = LoadBe32(s + 44);
    Json slot = Json::MakeObject();
    slot.Set("active", state == kSlotActive);
    if (state == kSlotActive) {
      slot.Set("iters", LoadBe32(s + 4));
      slot.Set("stripes", stripes);
    }
    slot.Set("key-offset", key_sector * 512);
    slots.Push(std::move(slot));
    if (state != kSlotActive && state != kSlotInactive) {
      m.problems.push_back(fmt::format("luks: key slot {} has an invalid state {:#x}", i, state));
    }
    if (stripes != kStripes) {
      m.problems.push_back(
          fmt::format("luks: key slot {} is corrupted ({} stripes, not {})", i, stripes, kStripes));
    } else if (key_sector < kV1HeaderSectors) {
      m.problems.push_back(fmt::format("luks: key slot {} overlaps the header", i));
    } else if (key_sector + material_sectors > payload_sectors) {
      m.problems.push_back(fmt::format("luks: key slot {} overlaps the encrypted payload", i));
    }
  }
  data.Set("slots", std::move(slots));
  m.format_specific = WrapSpecific(std::move(data));
  return m;
}

// Picks the data segment: the crypt segment with the lowest numeric key.
const Json* FindCryptSegment(const Json& root) {
  const Json* segments = root.Find("segments");
  if (!segments || !segments->is_object()) return nullptr;
  const Json* best = nullptr;
  uint64_t best_key = UINT64_MAX;
  for (const auto& [key, seg] : segments->as_object()) {
    std::optional<uint64_t> k = ParseDecimal(key);
    const Json* type = seg.Find("type");
    if (!k || !type || !type->is_string() || type->as_string() != "crypt") continue;
    if (*k < best_key) best_key = *k, best = &seg;
  }
  return best;
}

std::optional<uint64_t> DecimalMember(const Json& obj, std::string_view key) {
  const Json* v = obj.Find(key);
  if (!v || !v->is_string()) return std::nullopt;
  return ParseDecimal(v->as_string());
}

Result<ImageMeta> ParseV2(const Reader& r) {
  uint8_t h[kV2BinaryHeaderSize];
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "luks2 header"));
  uint64_t hdr_size = LoadBe64(h + 8);
  if (hdr_size < kV2MinHeaderSize || hdr_size > kV2MaxHeaderSize || (hdr_size & (hdr_size - 1))) {
    return Error(Code::kCorrupt, "luks: LUKS2 header size {} is invalid", hdr_size);
  }
  if (hdr_size > r.Size()) {
    return Error(Code::kCorrupt, "luks: LUKS2 header of {} bytes exceeds the file", hdr_size);
  }
  uint64_t area = hdr_size - kV2BinaryHeaderSize;
  Result<std::vector<uint8_t>> json_bytes = ReadVector(
      r, kV2BinaryHeaderSize, std::min(area, kMaxJsonBytes), kMaxJsonBytes, "luks2 JSON area");
  if (!json_bytes.ok()) return json_bytes.status();
  auto nul = std::find(json_bytes->begin(), json_bytes->end(), 0);
  if (nul == json_bytes->end()) {
    return Error(Code::kCorrupt, "luks: LUKS2 JSON metadata is not NUL-terminated within {} bytes",
                 json_bytes->size());
  }
  std::string_view text(reinterpret_cast<const char*>(json_bytes->data()),
                        size_t(nul - json_bytes->begin()));
  Result<Json> root = Json::Parse(text);
  if (!root.ok())
    return Error(Code::kCorrupt, "luks: LUKS2 JSON metadata: {}", root.status().message());
  const Json* seg = FindCryptSegment(*root);
  if (!seg) return Error(Code::kCorrupt, "luks: LUKS2 metadata has no crypt segment");
  std::optional<uint64_t> offset = DecimalMember(*seg, "offset");
  if (!offset || *offset > r.Size()) {
    return Error(Code::kCorrupt,
                 "luks: LUKS2 segment offset is missing or past the end of the file");
  }

  ImageMeta m;
  m.format = "luks";
  m.encrypted = true;
  m.encryption_format = "luks";
  const Json* size = seg->Find("size");
  if (size && size->is_string() && size->as_string() == "dynamic") {
    m.virtual_size = r.Size() - *offset;
  } else {
    std::optional<uint64_t> n = DecimalMember(*seg, "size");
    if (!n) return Error(Code::kCorrupt, "luks: LUKS2 segment size is invalid");
    m.virtual_size = *n;
    if (*n > r.Size() - *offset) m.problems.push_back("luks: the LUKS2 data segment is truncated");
  }
  m.problems.push_back(
      "luks: LUKS2 header; QEMU's luks driver opens LUKS1 only -- fix: cryptsetup convert --type "
      "luks1 IMAGE, or attach it through dm-crypt");

  Json data = Json::MakeObject();
  const Json* enc = seg->Find("encryption");
  uint64_t key_bytes = 0;
  Json slots = Json::MakeArray();
  if (const Json* ks = root->Find("keyslots"); ks && ks->is_object()) {
    for (const auto& [key, slot] : ks->as_object()) {
      const Json* kb = slot.Find("key_size");
      if (kb && kb->is_number() && key_bytes == 0) key_bytes = kb->as_uint();
      Json s = Json::MakeObject();
      s.Set("active", true);
      if (const Json* a = slot.Find("area"); a && a->is_object()) {
        if (std::optional<uint64_t> o = DecimalMember(*a, "offset")) s.Set("key-offset", *o);
      }
      slots.Push(std::move(s));
    }
  }
  if (enc && enc->is_string()) {
    std::string_view spec = enc->as_string();
    size_t dash = spec.find('-');
    std::string_view cipher = spec.substr(0, dash);
    std::string_view mode = dash == std::string_view::npos ? "" : spec.substr(dash + 1);
    DescribeCipher(cipher, mode, key_bytes, data, m.problems);
  }
  data.Set("payload-offset", *offset);
  data.Set("uuid", FixedString(h + 168, 40));
  data.Set("slots", std::move(slots));
  m.format_specific = WrapSpecific(std::move(data));
  return m;
}

class LuksDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "luks"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() < 8 || std::memcmp(head.data(), kMagic, 6) != 0) return 0;
    uint16_t version = LoadBe16(head.data() + 6);
    return version == 1 || version == 2 ? 100 : 50;
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t h[8];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "luks magic"));
    if (std::memcmp(h, kMagic, 6) != 0) return Error(Code::kCorrupt, "luks: bad magic");
    uint16_t version = LoadBe16(h + 6);
    if (version == 1) return ParseV1(r);
    if (version == 2) return ParseV2(r);
    return Error(Code::kUnsupported, "luks: version {} is not supported", version);
  }
};

}  // namespace

const FormatDriver* MakeLuksDriver() {
  static const LuksDriver driver;
  return &driver;
}

}  // namespace chainfs::core
