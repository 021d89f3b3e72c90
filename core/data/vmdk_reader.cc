// vmdk: a list of extents, one after another in guest order. A binary
// sparse file ("KDMV") is one SPARSE extent, itself; a text descriptor names
// extent files: FLAT and VMFS (guest bytes at an offset of the file), ZERO
// (no file, zeros), SPARSE (a KDMV file).
//
// A sparse extent maps grains through a grain directory of little-endian
// 32-bit sectors of grain tables (0: none, the range is unallocated), each
// table num_gtes_per_gt entries: 0 leaves the grain unallocated (the backing
// decides), 1 reads as zeros when the header has the zero-grain flag, other
// values are the grain's sector. Compressed extents (streamOptimized) keep
// each grain as a zlib stream, behind a 12-byte marker (lba, size) when the
// header has the marker flag; qemu reads at most two grains' worth of it.
#include <zlib.h>

#include <algorithm>
#include <climits>

#include "core/data/block_map_reader.h"
#include "core/data/format_readers.h"
#include "core/format/vmdk.h"
#include "core/io/file.h"

namespace chainfs::core {
namespace {

constexpr uint32_t kFlagZeroGrain = 1u << 2;
constexpr uint32_t kFlagMarker = 1u << 17;
constexpr uint64_t kZeroGrain = 1;
constexpr size_t kMarkerBytes = 12;  // lba (u64), size (u32)
constexpr uint64_t kMaxCompressedGrain = 4ull << 20;

struct Extent {
  enum class Type { kFlat, kZero, kSparse };
  Type type = Type::kFlat;
  uint64_t start = 0;  // guest offset
  uint64_t bytes = 0;
  size_t file = 0;
  uint64_t flat_offset = 0;  // kFlat: host offset of `start`
  BlockLayout layout;        // kSparse
};

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

class VmdkReader final : public BlockMapReader {
 public:
  VmdkReader(std::string path, std::unique_ptr<Reader> image, uint64_t size)
      : BlockMapReader(std::move(path), std::move(image), size) {}

  // Adds the extents of a binary sparse file (file 0).
  Status InitSparse(const ImageMeta& m) {
    Extent e;
    e.type = Extent::Type::kSparse;
    e.bytes = m.virtual_size;
    e.layout = *m.layout;
    CHAINFS_RETURN_IF_ERROR(CheckSparse(e));
    extents_.push_back(e);
    return Status::Ok();
  }

  // Opens the extents a text descriptor names.
  Status InitDescriptor(const VmdkDescriptor& d, const VmdkReaderOptions& options) {
    uint64_t start = 0;
    for (const VmdkExtent& x : d.extents) {
      Extent e;
      e.start = start;
      e.bytes = x.sectors * 512;
      start += e.bytes;
      if (x.type == "ZERO") {
        e.type = Extent::Type::kZero;
        extents_.push_back(e);
        continue;
      }
      if (x.type != "FLAT" && x.type != "VMFS" && x.type != "SPARSE") {
        return Error(Code::kUnsupported, "'{}': reading {} extents is not supported", path(),
                     x.type);
      }
      if (x.filename.empty()) return Error(Code::kCorrupt, "'{}': an extent names no file", path());
      if (!options.follow_any_extent && x.filename.find('/') != std::string::npos) {
        return Error(Code::kPermissionDenied,
                     "'{}': extent file '{}' lies outside the descriptor's folder, which is not "
                     "followed for an image whose format was probed",
                     path(), x.filename);
      }
      std::string name = x.filename[0] == '/' ? x.filename : DirOf(path()) + "/" + x.filename;
      Result<File> f = File::OpenRead(name);
      if (!f.ok()) return f.status();
      Result<FileStat> st = f->Stat();
      if (!st.ok()) return st.status();
      if (!st->IsRegular() && !st->IsBlockDevice()) {
        return Error(Code::kUnsupported, "'{}': extent '{}' is not a file", path(), name);
      }
      auto file = std::make_unique<File>(std::move(*f));
      if (x.type == "SPARSE") {
        Result<ImageMeta> m = ParseForData("vmdk", *file, name);
        if (!m.ok()) return m.status();
        if (!m->layout) {
          return Error(Code::kUnsupported, "'{}': extent '{}' is not a VMDK4 sparse extent", path(),
                       name);
        }
        e.type = Extent::Type::kSparse;
        e.layout = *m->layout;
      } else {
        if (x.offset > UINT64_MAX / 512) {
          return Error(Code::kCorrupt, "'{}': extent offset {} overflows", path(), x.offset);
        }
        e.flat_offset = x.offset * 512;
      }
      e.file = AddFile(std::move(name), std::move(file));
      if (e.type == Extent::Type::kSparse) CHAINFS_RETURN_IF_ERROR(CheckSparse(e));
      extents_.push_back(e);
    }
    if (start != Size()) {
      return Error(Code::kCorrupt, "'{}': extents cover {} bytes of {}", path(), start, Size());
    }
    return Status::Ok();
  }

 protected:
  Result<Unit> Classify(uint64_t pos) const override {
    auto it = std::upper_bound(extents_.begin(), extents_.end(), pos,
                               [](uint64_t p, const Extent& e) { return p < e.start; });
    if (it == extents_.begin()) {
      return Error(Code::kCorrupt, "'{}': no extent maps guest offset {:#x}", path(), pos);
    }
    const Extent& e = *std::prev(it);
    const uint64_t end = e.start + e.bytes;
    if (pos >= end) {
      return Error(Code::kCorrupt, "'{}': no extent maps guest offset {:#x}", path(), pos);
    }
    Unit u;
    u.file = e.file;
    u.end = end;
    switch (e.type) {
      case Extent::Type::kZero:
        u.allocation = Allocation::kZero;
        return u;
      case Extent::Type::kFlat:
        u.allocation = Allocation::kData;
        u.host = e.flat_offset + (pos - e.start);
        if (*u.host < e.flat_offset) {
          return Error(Code::kCorrupt, "'{}': flat extent offset overflows", path());
        }
        return u;
      case Extent::Type::kSparse:
        return ClassifySparse(e, pos, u);
    }
    return u;
  }

  Result<size_t> Inflate(std::span<const uint8_t> in, std::span<uint8_t> out) const override {
    std::span<const uint8_t> data = in;
    if (markers_) {
      if (in.size() < kMarkerBytes) return Error(Code::kCorrupt, "grain marker cut off");
      const uint64_t size =
          uint64_t{in[8]} | uint64_t{in[9]} << 8 | uint64_t{in[10]} << 16 | uint64_t{in[11]} << 24;
      if (size == 0 || size > in.size() - kMarkerBytes) {
        return Error(Code::kCorrupt, "grain marker gives an invalid size {}", size);
      }
      data = in.subspan(kMarkerBytes, size);
    }
    if (data.size() > UINT_MAX || out.size() > UINT_MAX) {
      return Error(Code::kCorrupt, "compressed grain too large");
    }
    z_stream zs{};
    if (inflateInit(&zs) != Z_OK) return Error(Code::kIo, "cannot initialise zlib");
    zs.next_in = const_cast<Bytef*>(data.data());
    zs.avail_in = uInt(data.size());
    zs.next_out = out.data();
    zs.avail_out = uInt(out.size());
    const int ret = inflate(&zs, Z_FINISH);
    const size_t produced = out.size() - zs.avail_out;
    inflateEnd(&zs);
    if (ret != Z_STREAM_END && !(zs.avail_out == 0 && (ret == Z_OK || ret == Z_BUF_ERROR))) {
      return Error(Code::kCorrupt, "compressed grain does not inflate (zlib {})", ret);
    }
    return produced;
  }

 private:
  Status CheckSparse(const Extent& e) {
    const BlockLayout& l = e.layout;
    if (l.block_bytes == 0 || l.l2_entries == 0) {
      return Error(Code::kCorrupt, "'{}': sparse extent without grain tables", path());
    }
    if (!RangeWithin(l.table_offset, l.table_entries * 4, file(e.file).Size())) {
      return Error(Code::kCorrupt, "'{}': grain directory at {:#x} lies past the end of the file",
                   path(), l.table_offset);
    }
    if (l.compressed) {
      // One compressed unit size per reader, aligned to guest offsets.
      if (!extents_.empty() || e.start != 0 || l.block_bytes > kMaxCompressedGrain) {
        return Error(Code::kUnsupported,
                     "'{}': compressed grains are read only in a single extent of grains up to "
                     "{} bytes",
                     path(), kMaxCompressedGrain);
      }
      set_compressed_unit_bytes(l.block_bytes);
      markers_ = (l.flags & kFlagMarker) != 0;
    }
    return Status::Ok();
  }

  Result<Unit> ClassifySparse(const Extent& e, uint64_t pos, Unit& u) const {
    const BlockLayout& l = e.layout;
    const uint64_t rel = pos - e.start;
    const uint64_t grain = rel / l.block_bytes;
    const uint64_t gd_index = grain / l.l2_entries;
    const uint64_t extent_end = e.start + e.bytes;
    if (gd_index >= l.table_entries) {
      return Error(Code::kCorrupt, "'{}': guest offset {:#x} lies past the grain directory", path(),
                   pos);
    }
    Result<uint64_t> gt =
        LoadEntry(e.file, l.table_offset + gd_index * 4, 4, false, "grain directory entry");
    if (!gt.ok()) return gt.status();
    if (*gt == 0) {
      u.end = std::min(extent_end, e.start + (gd_index + 1) * l.l2_entries * l.block_bytes);
      return u;
    }
    const Reader& f = file(e.file);
    if (!RangeWithin(*gt * 512, l.l2_entries * 4, f.Size())) {
      return Error(Code::kCorrupt,
                   "'{}': grain table at sector {} (directory entry {}) lies past the end of the "
                   "file",
                   path(), *gt, gd_index);
    }
    Result<uint64_t> g =
        LoadEntry(e.file, *gt * 512 + (grain % l.l2_entries) * 4, 4, false, "grain table entry");
    if (!g.ok()) return g.status();
    const uint64_t grain_start = e.start + grain * l.block_bytes;
    u.end = std::min(extent_end, grain_start + l.block_bytes);
    if (*g == 0) return u;
    if (*g == kZeroGrain && (l.flags & kFlagZeroGrain)) {
      u.allocation = Allocation::kZero;
      return u;
    }
    const uint64_t host = *g * 512;
    if (host >= f.Size()) {
      return Error(Code::kCorrupt,
                   "'{}': grain for guest offset {:#x} at sector {} lies past the end of the file "
                   "({} bytes)",
                   path(), grain_start, *g, f.Size());
    }
    u.allocation = Allocation::kData;
    if (l.compressed) {
      u.compressed = true;
      u.coffset = host;
      u.csize = 2 * l.block_bytes;
      return u;
    }
    u.host = host + (pos - grain_start);
    u.holes = Holes::kIgnore;  // qemu asks the file only about flat extents
    return u;
  }

  std::vector<Extent> extents_;  // in guest order, contiguous
  bool markers_ = false;
};

}  // namespace

Result<std::unique_ptr<ImageReader>> OpenVmdkReader(std::unique_ptr<Reader> image,
                                                    const std::string& path,
                                                    const VmdkReaderOptions& options) {
  Result<ImageMeta> m = ParseForData("vmdk", *image, path);
  if (!m.ok()) return m.status();
  uint8_t magic[4];
  CHAINFS_RETURN_IF_ERROR(ReadExact(*image, 0, magic, "vmdk magic"));
  const bool binary = std::string_view(reinterpret_cast<const char*>(magic), 4) == "KDMV";
  if (!binary && std::string_view(reinterpret_cast<const char*>(magic), 4) == "COWD") {
    return Error(Code::kUnsupported, "'{}': reading VMDK3 (COWD) images is not supported", path);
  }
  std::optional<VmdkDescriptor> desc;
  if (!binary) {
    Result<std::vector<uint8_t>> text =
        ReadVector(*image, 0, std::min<uint64_t>(image->Size(), kVmdkMaxDescriptorBytes),
                   kVmdkMaxDescriptorBytes, "vmdk descriptor");
    if (!text.ok()) return text.status();
    std::string_view s(reinterpret_cast<const char*>(text->data()), text->size());
    Result<VmdkDescriptor> d = ParseVmdkDescriptor(s.substr(0, s.find('\0')));
    if (!d.ok()) return d.status();
    desc = std::move(*d);
  }
  auto r = std::make_unique<VmdkReader>(path, std::move(image), m->virtual_size);
  if (binary) {
    if (!m->layout) return Error(Code::kCorrupt, "'{}': vmdk grain tables are not described", path);
    CHAINFS_RETURN_IF_ERROR(r->InitSparse(*m));
  } else {
    CHAINFS_RETURN_IF_ERROR(r->InitDescriptor(*desc, options));
  }
  return std::unique_ptr<ImageReader>(std::move(r));
}

}  // namespace chainfs::core
