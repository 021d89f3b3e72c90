#include "core/data/qcow2_reader.h"

#include <algorithm>
#include <cstring>

#include "core/data/decompress.h"
#include "core/data/raw_reader.h"
#include "core/io/file.h"
#include "core/util/endian.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

// L1 and standard L2 entries keep the host offset in bits 9-55.
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kFlagCopied = 1ull << 63;
constexpr uint64_t kFlagCompressed = 1ull << 62;
constexpr uint64_t kFlagZero = 1ull << 0;
constexpr uint64_t kSubclusterBitsMask = 0xffffffffull;

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Qcow2Reader::Qcow2Reader(std::unique_ptr<Reader> image, std::string path, Qcow2Header header,
                         std::vector<uint64_t> l1, L2CacheGeometry geometry, size_t dcache_entries)
    : image_(std::move(image)),
      path_(std::move(path)),
      header_(std::move(header)),
      size_(Qcow2VirtualSize(header_)),
      l1_(std::move(l1)),
      geometry_(geometry),
      cluster_bits_(header_.cluster_bits),
      cluster_size_(uint64_t{1} << header_.cluster_bits),
      l2_entry_bytes_(header_.extended_l2() ? 16 : 8),
      l2_bits_(header_.cluster_bits - (header_.extended_l2() ? 4 : 3)),
      subcluster_bits_(header_.cluster_bits - 5),
      csize_shift_(62 - (header_.cluster_bits - 8)),
      csize_mask_((uint64_t{1} << (header_.cluster_bits - 8)) - 1),
      coffset_mask_((uint64_t{1} << (62 - (header_.cluster_bits - 8))) - 1),
      l2_cache_(geometry.capacity),
      cluster_cache_(dcache_entries) {}

Result<std::unique_ptr<Qcow2Reader>> Qcow2Reader::Open(const std::string& path,
                                                       const Qcow2ReaderOptions& options) {
  Result<File> f = File::OpenRead(path);
  if (!f.ok()) return f.status();
  return Open(std::make_unique<File>(std::move(*f)), path, options);
}

Result<std::unique_ptr<Qcow2Reader>> Qcow2Reader::Open(std::unique_ptr<Reader> image,
                                                       const std::string& path,
                                                       const Qcow2ReaderOptions& options) {
  Result<Qcow2Header> parsed = ParseQcow2Header(*image);
  if (!parsed.ok()) return parsed.status();
  Qcow2Header h = std::move(*parsed);
  if (h.crypt_method != kQcow2CryptNone) {
    return Error(Code::kUnsupported, "'{}' is encrypted; reading encrypted images is not supported",
                 path);
  }
  if (h.unknown_incompatible_features() != 0) {
    return Error(Code::kUnsupported, "'{}' uses unknown incompatible features {:#x}", path,
                 h.unknown_incompatible_features());
  }
  if (h.compression_type != kQcow2CompressionZlib && h.compression_type != kQcow2CompressionZstd) {
    return Error(Code::kUnsupported, "'{}' uses unknown compression type {}", path,
                 h.compression_type);
  }
  if (h.cluster_bits < kQcow2MinClusterBits || h.cluster_bits > kQcow2MaxClusterBits) {
    return Error(Code::kCorrupt, "'{}' has an invalid cluster size (2^{})", path, h.cluster_bits);
  }
  if (h.extended_l2() && h.cluster_bits < 14) {
    return Error(Code::kCorrupt, "'{}' uses extended L2 entries with clusters smaller than 16 KiB",
                 path);
  }
  const uint64_t cluster_size = h.cluster_size();
  const uint32_t entry_bytes = h.extended_l2() ? 16 : 8;
  const uint32_t l2_bits = h.cluster_bits - (h.extended_l2() ? 4 : 3);
  // Guest bytes mapped by one L1 entry; l2_bits + cluster_bits <= 39.
  const uint64_t l1_covers = uint64_t{1} << (l2_bits + h.cluster_bits);
  const uint64_t l1_needed = h.size / l1_covers + (h.size % l1_covers != 0);
  if (h.l1_size < l1_needed) {
    return Error(Code::kCorrupt, "'{}': L1 table has {} entries, {} bytes of disk need {}", path,
                 h.l1_size, h.size, l1_needed);
  }
  const uint64_t l1_bytes = uint64_t{h.l1_size} * 8;
  if (l1_bytes > kQcow2MaxL1Bytes) {
    return Error(Code::kCorrupt, "'{}': L1 table of {} bytes is larger than qemu allows", path,
                 l1_bytes);
  }
  std::vector<uint64_t> l1;
  if (h.l1_size > 0) {
    if (h.l1_table_offset % cluster_size != 0) {
      return Error(Code::kCorrupt, "'{}': L1 table offset {:#x} is not cluster aligned", path,
                   h.l1_table_offset);
    }
    // Only the entries that map the virtual disk are ever used.
    const uint64_t used = std::min<uint64_t>(h.l1_size, l1_needed);
    Result<std::vector<uint8_t>> raw =
        ReadVector(*image, h.l1_table_offset, used * 8, kQcow2MaxL1Bytes, "L1 table");
    if (!raw.ok()) return raw.status();
    l1.resize(used);
    for (uint64_t i = 0; i < used; ++i) l1[i] = LoadBe64(raw->data() + i * 8);
  }

  L2CacheGeometry geometry =
      DefaultL2CacheGeometry(h.size, h.cluster_bits, entry_bytes, options.l2_cache_max_bytes);
  size_t dcache = size_t(std::max<uint64_t>(2, options.decompressed_cache_bytes / cluster_size));

  std::unique_ptr<Reader> data;
  std::string data_path;
  if (h.has_data_file()) {
    if (!options.follow_data_file) {
      return Error(Code::kPermissionDenied,
                   "'{}' has an external data file, which is not followed for an image whose "
                   "format was probed",
                   path);
    }
    if (!h.data_file || h.data_file->empty()) {
      return Error(Code::kCorrupt, "'{}' needs an external data file but names none", path);
    }
    const std::string& name = *h.data_file;
    if (name.find(':') != std::string::npos && name.rfind("json:", 0) == 0) {
      return Error(Code::kUnsupported, "'{}': data file '{}' is not a plain file", path,
                   ShortToken(name));
    }
    data_path = name[0] == '/' ? name : DirName(path) + "/" + name;
    Result<File> df = File::OpenRead(data_path);
    if (!df.ok()) return df.status();
    data = std::make_unique<File>(std::move(*df));
  }

  auto reader = std::unique_ptr<Qcow2Reader>(
      new Qcow2Reader(std::move(image), path, std::move(h), std::move(l1), geometry, dcache));
  reader->data_ = std::move(data);
  reader->data_path_ = std::move(data_path);
  return reader;
}

Result<L2Cache::Block> Qcow2Reader::LoadSlice(uint64_t key) const {
  if (L2Cache::Block b = l2_cache_.Find(key)) return b;
  // Loaded without any lock held; a racing loader of the same slice is
  // harmless (Insert keeps the first).
  Result<std::vector<uint8_t>> bytes =
      ReadVector(*image_, key, geometry_.entry_bytes, geometry_.entry_bytes, "L2 table");
  if (!bytes.ok()) return bytes.status();
  return l2_cache_.Insert(key, std::make_shared<const std::vector<uint8_t>>(std::move(*bytes)));
}

Result<Qcow2Reader::Unit> Qcow2Reader::Classify(uint64_t pos, SliceHint& hint) const {
  const uint64_t cluster_index = pos >> cluster_bits_;
  const uint64_t l1_index = cluster_index >> l2_bits_;
  const uint64_t cluster_start = cluster_index << cluster_bits_;
  const uint64_t cluster_mask = cluster_size_ - 1;
  Unit u;
  const uint64_t l1_entry = l1_index < l1_.size() ? l1_[l1_index] : 0;
  const uint64_t l2_offset = l1_entry & kOffsetMask;
  if (l2_offset == 0) {
    // No L2 table: the whole range this L1 entry maps is unallocated.
    u.kind = Kind::kUnallocPlain;
    u.end = (l1_index + 1) << (l2_bits_ + cluster_bits_);
    if (u.end <= pos) u.end = UINT64_MAX;  // the last L1 entry of a 2^64 disk
    return u;
  }
  if ((l2_offset & cluster_mask) != 0) {
    return Error(Code::kCorrupt, "'{}': L2 table offset {:#x} (L1 entry {}) is not cluster aligned",
                 path_, l2_offset, l1_index);
  }
  if (!RangeWithin(l2_offset, cluster_size_, image_->Size())) {
    return Error(Code::kCorrupt,
                 "'{}': L2 table at {:#x} (L1 entry {}) lies past the end of the file", path_,
                 l2_offset, l1_index);
  }
  const uint64_t l2_index = cluster_index & ((uint64_t{1} << l2_bits_) - 1);
  const uint64_t slice_entries = geometry_.entry_bytes / l2_entry_bytes_;
  const uint64_t key = l2_offset + (l2_index / slice_entries) * geometry_.entry_bytes;
  if (hint.key != key || !hint.block) {
    Result<L2Cache::Block> b = LoadSlice(key);
    if (!b.ok()) return b.status();
    hint.block = std::move(*b);
    hint.key = key;
  }
  const uint8_t* p = hint.block->data() + (l2_index % slice_entries) * l2_entry_bytes_;
  const uint64_t entry = LoadBe64(p);
  const uint64_t bitmap = header_.extended_l2() ? LoadBe64(p + 8) : 0;

  if (entry & kFlagCompressed) {
    u.kind = Kind::kCompressed;
    u.end = cluster_start + cluster_size_;
    u.coffset = entry & coffset_mask_;
    const uint64_t sectors = ((entry >> csize_shift_) & csize_mask_) + 1;
    u.csize = sectors * 512 - (u.coffset & 511);
    return u;
  }
  const uint64_t host = entry & kOffsetMask;
  // With an external data file, offset 0 is valid; the copied flag (every
  // data file cluster has refcount 1) tells it from unallocated.
  const bool has_cluster = host != 0 || (data_ && (entry & kFlagCopied));
  if (!header_.extended_l2()) {
    u.end = cluster_start + cluster_size_;
    if ((entry & kFlagZero) && header_.version < 3) {
      // qemu: "Zero cluster entry found in pre-v3 image"; EIO, not zeros.
      return Error(Code::kCorrupt,
                   "'{}': zero cluster entry for guest offset {:#x} in a version 2 (compat 0.10) "
                   "image (L2 table at {:#x}, index {:#x}): the image is corrupt",
                   path_, cluster_start, l2_offset, l2_index);
    }
    if (entry & kFlagZero) {
      u.kind = host != 0 ? Kind::kZeroAlloc : Kind::kZeroPlain;
    } else {
      u.kind = has_cluster ? Kind::kNormal : Kind::kUnallocPlain;
    }
  } else {
    const uint32_t sc = uint32_t((pos >> subcluster_bits_) & 31);
    auto kind_of = [&](uint32_t i) {
      const bool zero = (bitmap >> (32 + i)) & 1;
      const bool alloc = (bitmap >> i) & 1;
      if (has_cluster)
        return zero ? Kind::kZeroAlloc : (alloc ? Kind::kNormal : Kind::kUnallocAlloc);
      return zero ? Kind::kZeroPlain : Kind::kUnallocPlain;
    };
    if (has_cluster && ((bitmap >> 32) & bitmap & kSubclusterBitsMask) != 0) {
      return Error(
          Code::kCorrupt,
          "'{}': L2 entry for guest offset {:#x} marks subclusters both allocated and zero", path_,
          cluster_start);
    }
    if (!has_cluster && (bitmap & kSubclusterBitsMask) != 0) {
      return Error(Code::kCorrupt,
                   "'{}': L2 entry for guest offset {:#x} allocates subclusters of no cluster",
                   path_, cluster_start);
    }
    u.kind = kind_of(sc);
    uint32_t last = sc + 1;
    while (last < 32 && kind_of(last) == u.kind) ++last;
    u.end = cluster_start + (uint64_t{last} << subcluster_bits_);
  }
  if (u.kind == Kind::kNormal || u.kind == Kind::kZeroAlloc || u.kind == Kind::kUnallocAlloc) {
    if ((host & cluster_mask) != 0) {
      return Error(Code::kCorrupt,
                   "'{}': cluster for guest offset {:#x} at host offset {:#x} is not aligned",
                   path_, cluster_start, host);
    }
    if (u.kind == Kind::kNormal && !data_ && host >= image_->Size()) {
      return Error(Code::kCorrupt,
                   "'{}': data cluster for guest offset {:#x} at {:#x} lies past the end of the "
                   "file ({} bytes)",
                   path_, cluster_start, host, image_->Size());
    }
    u.host = host + (pos - cluster_start);
  }
  return u;
}

Result<BlockStatus> Qcow2Reader::GetStatus(uint64_t offset, uint64_t length, bool) const {
  BlockStatus st;
  st.start = offset;
  if (offset >= size_ || length == 0) return st;
  const uint64_t end = offset + std::min(length, size_ - offset);
  SliceHint hint;
  Result<Unit> first = Classify(offset, hint);
  if (!first.ok()) return first.status();
  const Kind kind = first->kind;
  const bool has_host =
      kind == Kind::kNormal || kind == Kind::kZeroAlloc || kind == Kind::kUnallocAlloc;
  switch (kind) {
    case Kind::kNormal:
    case Kind::kCompressed:
      st.allocation = Allocation::kData;
      break;
    case Kind::kZeroPlain:
    case Kind::kZeroAlloc:
      st.allocation = Allocation::kZero;
      break;
    case Kind::kUnallocPlain:
    case Kind::kUnallocAlloc:
      st.allocation = Allocation::kUnallocated;
      break;
  }
  if (has_host) {
    st.host_offset = first->host;
    st.in_data_file = data_ != nullptr;
  }
  if (kind == Kind::kCompressed) {
    st.compressed = true;
    st.compressed_offset = first->coffset;
    st.compressed_size = first->csize;
    st.length = std::min(first->end, end) - offset;
    return st;
  }
  uint64_t pos = std::min(first->end, end);
  while (pos < end) {
    Result<Unit> next = Classify(pos, hint);
    if (!next.ok()) {
      // The part already described is fine; the error shows on the next call.
      break;
    }
    if (next->kind != kind) break;
    if (has_host && next->host != first->host + (pos - offset)) break;
    pos = std::min(next->end, end);
  }
  st.length = pos - offset;
  return st;
}

Result<L2Cache::Block> Qcow2Reader::LoadCluster(uint64_t coffset, uint64_t csize) const {
  if (L2Cache::Block b = cluster_cache_.Find(coffset)) return b;
  const uint64_t fsize = image_->Size();
  if (coffset >= fsize) {
    return Error(Code::kCorrupt, "'{}': compressed cluster at {:#x} lies past the end of the file",
                 path_, coffset);
  }
  // qemu writes the last compressed cluster up to a sector boundary that may
  // lie past the end of the file; what is missing is padding.
  const uint64_t take = std::min(csize, fsize - coffset);
  std::vector<uint8_t> in(take);
  CHAINFS_RETURN_IF_ERROR(ReadExact(*image_, coffset, in, "compressed cluster"));
  std::vector<uint8_t> out(cluster_size_);
  Status s = DecompressCluster(header_.compression_type, in, out);
  if (!s.ok()) {
    return Status(s.code(), fmt::format("'{}': compressed cluster at {:#x}: {}", path_, coffset,
                                        s.message()));
  }
  return cluster_cache_.Insert(coffset,
                               std::make_shared<const std::vector<uint8_t>>(std::move(out)));
}

Status Qcow2Reader::ReadData(uint64_t offset, const BlockStatus& st, std::span<uint8_t> out) const {
  if (offset < st.start || out.size() > st.length || offset - st.start > st.length - out.size()) {
    return Error(Code::kInvalidArgument, "read at {} length {} outside the status range", offset,
                 out.size());
  }
  if (st.compressed) {
    Result<L2Cache::Block> cluster = LoadCluster(st.compressed_offset, st.compressed_size);
    if (!cluster.ok()) return cluster.status();
    const uint64_t in_cluster = offset & (cluster_size_ - 1);
    if (in_cluster + out.size() > cluster_size_) {
      return Error(Code::kInvalidArgument, "read crosses a compressed cluster");
    }
    std::memcpy(out.data(), (*cluster)->data() + in_cluster, out.size());
    return Status::Ok();
  }
  if (!st.host_offset) return Error(Code::kInvalidArgument, "read of a range with no host offset");
  const Reader& r = st.in_data_file ? *data_ : *image_;
  return ReadZeroFilled(r, *st.host_offset + (offset - st.start), out);
}

}  // namespace chainfs::core
