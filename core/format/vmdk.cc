// vmdk: VMware disks, either a binary sparse extent ("KDMV", VMDK4 with an
// embedded descriptor; "COWD", the older VMDK3) or a text descriptor that
// lists extent files. VMDK4 sparse header, little-endian:
//   0 magic "KDMV"  4 version (1..3)  8 flags  12 capacity (u64, sectors)
//  20 granularity (u64, sectors)  28 desc_offset (u64, sectors)
//  36 desc_size (u64, sectors)  44 num_gtes_per_gt  48 rgd_offset (u64)
//  56 gd_offset (u64; all ones = footer at the end)  64 grain_offset (u64)
//  72 filler  73 check bytes "\n \r\n"  77 compress_algorithm (u16, 1 = deflate)
// A streamOptimized image may keep the real header in a footer: the three
// last sectors are a footer marker, a copy of the header, and an
// end-of-stream marker.
//
// Extent file names are reported as recorded (relative to the descriptor);
// the self extent of a sparse image has an empty name. Parsers never open
// other files, so the cluster size of SPARSE extents named by a text
// descriptor is not reported.
#include "core/format/vmdk.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/format/all_drivers.h"
#include "core/io/file.h"
#include "core/util/endian.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

constexpr uint32_t kVmdk4Magic = 0x564d444b;  // "KDMV" read little-endian
constexpr uint32_t kVmdk3Magic = 0x44574f43;  // "COWD" read little-endian
constexpr size_t kSparseHeaderSize = 512;
constexpr uint64_t kGdAtEnd = ~uint64_t{0};
constexpr uint64_t kMaxSectors = uint64_t{1} << 54;  // sectors * 512 fits 64 bits
constexpr size_t kMaxExtents = 8192;
constexpr uint32_t kMaxGtesPerGt = 512;
constexpr uint64_t kMaxGranularity = 0x200000;  // 1 GiB clusters: QEMU's limit
constexpr uint64_t kMaxL1Entries = 512 * 1024 * 1024 / 4;
constexpr uint32_t kNoCid = 0xffffffff;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::string_view Unquote(std::string_view s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

template <typename T>
std::optional<T> ParseNumber(std::string_view s, int base) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// Takes the next space-separated token off the front of `s`.
std::string_view NextToken(std::string_view& s) {
  s = Trim(s);
  size_t n = s.find_first_of(" \t");
  std::string_view tok = s.substr(0, n);
  s.remove_prefix(n == std::string_view::npos ? s.size() : n);
  return tok;
}

// Parses `ACCESS SECTORS TYPE "NAME" [OFFSET]`; nullopt if malformed.
std::optional<VmdkExtent> ParseExtentLine(std::string_view line) {
  VmdkExtent e;
  e.access = std::string(NextToken(line));
  std::optional<uint64_t> sectors = ParseNumber<uint64_t>(NextToken(line), 10);
  e.type = std::string(NextToken(line));
  line = Trim(line);
  if (!sectors || e.type.empty() || line.empty() || line.front() != '"') return std::nullopt;
  size_t close = line.find('"', 1);
  if (close == std::string_view::npos) return std::nullopt;
  e.sectors = *sectors;
  e.filename = std::string(line.substr(1, close - 1));
  line.remove_prefix(close + 1);
  std::string_view rest = Trim(line);
  if (!rest.empty()) {
    std::optional<uint64_t> offset = ParseNumber<uint64_t>(NextToken(rest), 10);
    if (!offset) return std::nullopt;
    e.offset = *offset;
  }
  return e;
}

bool IsExtentType(std::string_view t) {
  return t == "FLAT" || t == "SPARSE" || t == "VMFS" || t == "VMFSSPARSE" || t == "SESPARSE" ||
         t == "ZERO";
}

bool IsQemuCreateType(std::string_view t) {
  return t == "monolithicFlat" || t == "vmfs" || t == "vmfsSparse" || t == "seSparse" ||
         t == "twoGbMaxExtentSparse" || t == "twoGbMaxExtentFlat" || t == "monolithicSparse" ||
         t == "streamOptimized";
}

Json ExtentJson(std::string filename, std::string format, uint64_t sectors,
                std::optional<uint64_t> cluster_size, bool compressed) {
  Json e = Json::MakeObject();
  if (compressed) e.Set("compressed", true);
  e.Set("virtual-size", sectors * 512);
  e.Set("filename", std::move(filename));
  if (cluster_size) e.Set("cluster-size", *cluster_size);
  e.Set("format", std::move(format));
  return e;
}

Json FormatSpecific(const VmdkDescriptor& d, std::string create_type, Json extents) {
  Json data = Json::MakeObject();
  data.Set("cid", uint64_t{d.cid.value_or(kNoCid)});
  data.Set("parent-cid", uint64_t{d.parent_cid.value_or(kNoCid)});
  data.Set("create-type", std::move(create_type));
  data.Set("extents", std::move(extents));
  Json fs = Json::MakeObject();
  fs.Set("type", "vmdk");
  fs.Set("data", std::move(data));
  return fs;
}

void SetBacking(const VmdkDescriptor& d, ImageMeta& m) {
  if (d.parent_hint && !d.parent_hint->empty()) {
    m.backing = *d.parent_hint;
    m.backing_format = "vmdk";  // QEMU opens a VMDK parent as VMDK
  }
}

// Reads and parses descriptor text at [offset, offset + length), capped.
Result<VmdkDescriptor> ReadDescriptor(const Reader& r, uint64_t offset, uint64_t length,
                                      std::vector<std::string>& problems) {
  if (length > kVmdkMaxDescriptorBytes) {
    problems.push_back(
        fmt::format("vmdk: descriptor of {} bytes exceeds the {}-byte limit; "
                    "only its start was read",
                    length, kVmdkMaxDescriptorBytes));
    length = kVmdkMaxDescriptorBytes;
  }
  Result<std::vector<uint8_t>> bytes =
      ReadVector(r, offset, length, kVmdkMaxDescriptorBytes, "vmdk descriptor");
  if (!bytes.ok()) return bytes.status();
  std::string_view text(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  text = text.substr(0, text.find('\0'));
  return ParseVmdkDescriptor(text);
}

Result<ImageMeta> ParseTextDescriptor(const Reader& r) {
  ImageMeta m;
  m.format = "vmdk";
  Result<VmdkDescriptor> d = ReadDescriptor(r, 0, r.Size(), m.problems);
  if (!d.ok()) return d.status();
  if (d->create_type.empty()) return Error(Code::kCorrupt, "vmdk: descriptor has no createType");
  if (!IsQemuCreateType(d->create_type)) {
    m.problems.push_back(
        fmt::format("vmdk: createType \"{}\" is not supported by QEMU",
                    ShortToken(d->create_type)));
  }
  Json extents = Json::MakeArray();
  uint64_t total = 0;
  for (const VmdkExtent& e : d->extents) {
    total += e.sectors;  // both are <= 2^54, so this cannot overflow
    if (total > kMaxSectors)
      return Error(Code::kCorrupt, "vmdk: extents add up to too many sectors");
    extents.Push(ExtentJson(e.filename, e.type, e.sectors, std::nullopt, false));
  }
  m.virtual_size = total * 512;
  m.problems.insert(m.problems.end(), d->problems.begin(), d->problems.end());
  SetBacking(*d, m);
  m.format_specific = FormatSpecific(*d, d->create_type, std::move(extents));
  return m;
}

Result<ImageMeta> ParseVmdk3(const Reader& r) {
  uint8_t h[32];
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "vmdk3 header"));
  uint32_t sectors = LoadLe32(h + 12);
  uint32_t granularity = LoadLe32(h + 16);
  uint32_t gd_offset = LoadLe32(h + 20);
  uint32_t gd_entries = LoadLe32(h + 24);
  if (granularity == 0 || granularity > kMaxGranularity) {
    return Error(Code::kCorrupt, "vmdk: invalid granularity {}", granularity);
  }
  if (!RangeWithin(uint64_t{gd_offset} * 512, uint64_t{gd_entries} * 4, r.Size())) {
    return Error(Code::kCorrupt, "vmdk: grain directory lies past the end of the file");
  }
  ImageMeta m;
  m.format = "vmdk";
  m.virtual_size = uint64_t{sectors} * 512;
  m.cluster_size = uint64_t{granularity} * 512;
  return m;
}

Result<ImageMeta> ParseVmdk4(const Reader& r) {
  uint8_t h[kSparseHeaderSize];
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, h, "vmdk sparse header"));
  if (LoadLe64(h + 56) == kGdAtEnd) {
    // streamOptimized with the header in the footer.
    if (r.Size() < 3 * 512) return Error(Code::kCorrupt, "vmdk: too small for a footer");
    uint8_t f[3 * 512];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, r.Size() - sizeof(f), f, "vmdk footer"));
    bool ok = LoadLe32(f + 8) == 0 && LoadLe32(f + 12) == 3 &&  // footer marker
              LoadLe32(f + 512) == kVmdk4Magic && LoadLe64(f + 1024) == 0 &&
              LoadLe32(f + 1032) == 0 && LoadLe32(f + 1036) == 0;
    if (!ok) return Error(Code::kCorrupt, "vmdk: header says footer at end, but none is there");
    std::memcpy(h, f + 512, kSparseHeaderSize);
  }
  uint32_t version = LoadLe32(h + 4);
  uint64_t capacity = LoadLe64(h + 12);
  uint64_t granularity = LoadLe64(h + 20);
  uint64_t desc_offset = LoadLe64(h + 28);
  uint64_t desc_size = LoadLe64(h + 36);
  uint32_t gtes_per_gt = LoadLe32(h + 44);
  uint64_t gd_offset = LoadLe64(h + 56);
  uint64_t grain_offset = LoadLe64(h + 64);
  bool compressed = LoadLe16(h + 77) == 1;
  if (version < 1 || version > 3)
    return Error(Code::kUnsupported, "vmdk: version {} is not supported", version);

  ImageMeta m;
  m.format = "vmdk";
  VmdkDescriptor d;
  if (desc_offset != 0) {
    if (desc_offset > UINT64_MAX / 512 || desc_size > UINT64_MAX / 512) {
      return Error(Code::kCorrupt, "vmdk: descriptor offset or size overflows");
    }
    Result<VmdkDescriptor> rd = ReadDescriptor(r, desc_offset * 512, desc_size * 512, m.problems);
    if (!rd.ok()) return rd.status();
    d = std::move(*rd);
    m.problems.insert(m.problems.end(), d.problems.begin(), d.problems.end());
  }
  if (capacity == 0 && desc_offset != 0) {
    // A sparse file that only carries a descriptor: its extents define it.
    return Error(Code::kUnsupported, "vmdk: sparse file with zero capacity and a descriptor");
  }
  if (capacity > kMaxSectors)
    return Error(Code::kCorrupt, "vmdk: capacity {} sectors is too large", capacity);
  if (gtes_per_gt == 0 || gtes_per_gt > kMaxGtesPerGt) {
    return Error(Code::kCorrupt, "vmdk: {} grain table entries per table is invalid", gtes_per_gt);
  }
  if (granularity == 0 || granularity > kMaxGranularity) {
    return Error(Code::kCorrupt, "vmdk: invalid granularity {}", granularity);
  }
  uint64_t l1_entry_sectors = granularity * gtes_per_gt;
  uint64_t l1_entries = (capacity + l1_entry_sectors - 1) / l1_entry_sectors;
  if (l1_entries > kMaxL1Entries)
    return Error(Code::kCorrupt, "vmdk: grain directory is too large");
  if (gd_offset > UINT64_MAX / 512 || !RangeWithin(gd_offset * 512, l1_entries * 4, r.Size())) {
    return Error(Code::kCorrupt, "vmdk: grain directory at sector {} lies past the end of the file",
                 gd_offset);
  }
  if (grain_offset > r.Size() / 512) {
    return Error(Code::kCorrupt, "vmdk: file truncated, expecting at least {} sectors",
                 grain_offset);
  }

  m.virtual_size = capacity * 512;
  m.cluster_size = granularity * 512;
  BlockLayout layout;
  layout.table_offset = gd_offset * 512;
  layout.table_entries = l1_entries;
  layout.block_bytes = granularity * 512;
  layout.l2_entries = gtes_per_gt;
  layout.data_offset = grain_offset * 512;
  layout.flags = LoadLe32(h + 8);
  layout.compressed = compressed;
  m.layout = layout;
  SetBacking(d, m);
  Json extents = Json::MakeArray();
  extents.Push(ExtentJson("", "", capacity, granularity * 512, compressed));
  std::string create_type = d.create_type;
  if (create_type.empty()) create_type = compressed ? "streamOptimized" : "monolithicSparse";
  m.format_specific = FormatSpecific(d, std::move(create_type), std::move(extents));
  return m;
}

// Sums st_blocks * 512 over the extent files (names already resolved) other
// than the image itself: qemu-img's "actual-size" of a vmdk adds them to the
// descriptor's own (a monolithicFlat image is its descriptor and its -flat
// file). Files are only stat'ed; one that cannot be, or is neither a
// regular file nor a block device, adds nothing.
uint64_t ExtentFilesAllocation(const Json& format_specific, std::string_view image_path) {
  const Json* data = format_specific.Find("data");
  const Json* extents = data ? data->Find("extents") : nullptr;
  if (!extents || !extents->is_array()) return 0;
  Result<FileStat> self = StatPath(std::string(image_path));
  uint64_t sum = 0;
  for (const Json& e : extents->as_array()) {
    const Json* name = e.Find("filename");
    if (!name || !name->is_string() || name->as_string().empty()) continue;
    if (name->as_string() == image_path) continue;
    Result<FileStat> st = StatPath(name->as_string());
    if (!st.ok() || !(st->IsRegular() || st->IsBlockDevice())) continue;
    if (self.ok() && st->id.dev == self->id.dev && st->id.ino == self->id.ino) continue;
    sum += st->allocation;
  }
  return sum;
}

class VmdkDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "vmdk"; }

  int Probe(std::span<const uint8_t> head, uint64_t) const override {
    if (head.size() >= 4) {
      uint32_t magic = LoadLe32(head.data());
      if (magic == kVmdk4Magic || magic == kVmdk3Magic) return 100;
    }
    return ProbeVmdkDescriptor(head);
  }

  // Spells extent names as qemu-img does for the path the image was opened
  // as, and measures what the extent files allocate.
  void AttachPath(ImageMeta& meta, std::string_view image_path) const override {
    if (meta.format_specific.is_null()) return;
    meta.format_specific = ResolveVmdkExtentNames(meta.format_specific, image_path);
    meta.external_allocation = ExtentFilesAllocation(meta.format_specific, image_path);
  }

  Result<ImageMeta> Parse(const Reader& r) const override {
    uint8_t magic[4];
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, magic, "vmdk magic"));
    if (LoadLe32(magic) == kVmdk4Magic) return ParseVmdk4(r);
    if (LoadLe32(magic) == kVmdk3Magic) return ParseVmdk3(r);
    return ParseTextDescriptor(r);
  }
};

}  // namespace

Result<VmdkDescriptor> ParseVmdkDescriptor(std::string_view text) {
  text = text.substr(0, kVmdkMaxDescriptorBytes);
  VmdkDescriptor d;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = Trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;

    std::string_view rest = line;
    std::string_view first = NextToken(rest);
    if (first == "RW" || first == "RDONLY" || first == "NOACCESS") {
      std::optional<VmdkExtent> e = ParseExtentLine(line);
      if (!e || e->sectors == 0 || e->sectors > kMaxSectors) {
        d.problems.push_back(fmt::format("vmdk: descriptor line {}: malformed extent", line_no));
        continue;
      }
      if (first == "NOACCESS") continue;  // QEMU ignores these, as do we
      if (!IsExtentType(e->type)) {
        d.problems.push_back(fmt::format("vmdk: descriptor line {}: unsupported extent type \"{}\"",
                                         line_no, ShortToken(e->type)));
      }
      if (d.extents.size() >= kMaxExtents) {
        return Error(Code::kCorrupt, "vmdk: descriptor lists more than {} extents", kMaxExtents);
      }
      d.extents.push_back(std::move(*e));
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = Trim(line.substr(0, eq));
    std::string_view value = Unquote(Trim(line.substr(eq + 1)));
    if (key == "CID" || key == "parentCID") {
      std::optional<uint32_t> v = ParseNumber<uint32_t>(value, 16);
      if (!v) {
        d.problems.push_back(fmt::format("vmdk: descriptor line {}: bad {}", line_no, key));
      } else {
        (key == "CID" ? d.cid : d.parent_cid) = v;
      }
    } else if (key == "createType") {
      d.create_type = std::string(value);
    } else if (key == "parentFileNameHint") {
      d.parent_hint = std::string(value);
    }
  }
  return d;
}

int ProbeVmdkDescriptor(std::span<const uint8_t> head) {
  std::string_view s(reinterpret_cast<const char*>(head.data()), head.size());
  while (!s.empty()) {
    size_t nl = s.find('\n');
    if (nl == std::string_view::npos) return 0;  // the line is cut off
    std::string_view line = s.substr(0, nl);
    s.remove_prefix(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty() && line.front() == '#') continue;
    if (!line.empty() && line.find_first_not_of(' ') == std::string_view::npos) continue;
    return line == "version=1" || line == "version=2" || line == "version=3" ? 100 : 0;
  }
  return 0;
}

Json ResolveVmdkExtentNames(const Json& format_specific, std::string_view image_path) {
  const Json* type = format_specific.Find("type");
  const Json* data = format_specific.Find("data");
  if (!type || !type->is_string() || type->as_string() != "vmdk" || !data) return format_specific;
  const Json* extents = data->Find("extents");
  if (!extents || !extents->is_array()) return format_specific;
  size_t slash = image_path.rfind('/');
  std::string_view dir = slash == std::string_view::npos ? "" : image_path.substr(0, slash + 1);
  Json resolved = Json::MakeArray();
  for (Json e : extents->as_array()) {
    const Json* name = e.Find("filename");
    if (name && name->is_string()) {
      const std::string& n = name->as_string();
      if (n.empty()) {
        e.Set("filename", std::string(image_path));
      } else if (n.front() != '/') {
        e.Set("filename", fmt::format("{}{}", dir, n));
      }
    }
    resolved.Push(std::move(e));
  }
  Json new_data = *data;
  new_data.Set("extents", std::move(resolved));
  Json out = format_specific;
  out.Set("data", std::move(new_data));
  return out;
}

const FormatDriver* MakeVmdkDriver() {
  static const VmdkDriver driver;
  return &driver;
}

}  // namespace chainfs::core
