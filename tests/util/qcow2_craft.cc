#include "tests/util/qcow2_craft.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "core/io/file.h"
#include "core/util/endian.h"

namespace chainfs::testutil {
namespace {

using core::Code;
using core::Error;
using core::Qcow2Extension;
using core::Status;

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

uint64_t CeilDiv(uint64_t a, uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

std::vector<uint8_t> FeatureTable(const CraftOptions& opts) {
  std::vector<core::Qcow2FeatureName> names = {
      {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
      {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
      {2, 0, "bitmaps"},          {2, 1, "raw external data"}};
  names.insert(names.end(), opts.extra_feature_names.begin(), opts.extra_feature_names.end());
  std::vector<uint8_t> out(names.size() * core::kQcow2FeatureEntrySize, 0);
  for (size_t i = 0; i < names.size(); ++i) {
    uint8_t* e = out.data() + i * core::kQcow2FeatureEntrySize;
    e[0] = names[i].type;
    e[1] = names[i].bit;
    std::copy_n(names[i].name.begin(), std::min<size_t>(names[i].name.size(), 46), e + 2);
  }
  return out;
}

uint32_t NaturalHeaderLength(const CraftOptions& opts) {
  if (opts.header_length != 0) return opts.header_length;
  return opts.version == 2 ? core::kQcow2V2HeaderLength : 112;
}

// Table placement of a crafted image; all offsets cluster aligned.
struct Layout {
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint64_t refcount_blocks_offset = 0;
  uint64_t refcount_blocks = 0;
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  uint64_t total_clusters = 0;
};

// `extra_clusters` more clusters (placed after the L1 table by the caller)
// are covered by the refcount structures too.
Layout ComputeLayout(const CraftOptions& opts, uint64_t extra_clusters = 0) {
  const uint64_t cs = uint64_t{1} << opts.cluster_bits;
  const bool extended = opts.incompatible_features & core::kQcow2IncompatExtendedL2;
  const uint64_t l2_entries = cs / (extended ? 16 : 8);
  Layout l;
  l.l1_size = uint32_t(CeilDiv(opts.size, cs * l2_entries));
  const uint64_t l1_clusters = CeilDiv(uint64_t{l.l1_size} * 8, cs);
  const uint64_t per_block = (cs * 8) >> opts.refcount_order;
  uint64_t rt = 1, rb = 1;
  for (;;) {  // grow until the refcount structures cover themselves
    uint64_t total = 1 + rt + rb + l1_clusters + extra_clusters;
    uint64_t need_rb = CeilDiv(total, per_block);
    uint64_t need_rt = CeilDiv(need_rb * 8, cs);
    if (need_rb <= rb && need_rt <= rt) break;
    rb = std::max(rb, need_rb);
    rt = std::max(rt, need_rt);
  }
  l.refcount_table_offset = cs;
  l.refcount_table_clusters = uint32_t(rt);
  l.refcount_blocks_offset = cs * (1 + rt);
  l.refcount_blocks = rb;
  l.l1_table_offset = l1_clusters == 0 ? 0 : cs * (1 + rt + rb);
  l.total_clusters = 1 + rt + rb + l1_clusters;
  return l;
}

std::vector<uint8_t> BuildHeaderArea(const CraftOptions& opts, const Layout& l) {
  const uint32_t header_length = NaturalHeaderLength(opts);
  const size_t fixed =
      opts.version == 2 ? core::kQcow2V2HeaderLength : core::kQcow2V3MinHeaderLength;
  std::vector<uint8_t> out(std::max<size_t>(header_length, fixed), 0);
  uint8_t* p = out.data();
  core::StoreBe32(p + core::kQcow2OffMagic, core::kQcow2Magic);
  core::StoreBe32(p + core::kQcow2OffVersion, opts.version);
  core::StoreBe32(p + core::kQcow2OffClusterBits, opts.cluster_bits);
  core::StoreBe64(p + core::kQcow2OffSize, opts.size);
  core::StoreBe32(p + core::kQcow2OffCryptMethod, opts.crypt_method);
  core::StoreBe32(p + core::kQcow2OffL1Size, l.l1_size);
  core::StoreBe64(p + core::kQcow2OffL1TableOffset, l.l1_table_offset);
  core::StoreBe64(p + core::kQcow2OffRefcountTableOffset, l.refcount_table_offset);
  core::StoreBe32(p + core::kQcow2OffRefcountTableClusters, l.refcount_table_clusters);
  if (opts.version >= 3) {
    core::StoreBe64(p + core::kQcow2OffIncompatibleFeatures, opts.incompatible_features);
    core::StoreBe64(p + core::kQcow2OffCompatibleFeatures, opts.compatible_features);
    core::StoreBe64(p + core::kQcow2OffAutoclearFeatures, opts.autoclear_features);
    core::StoreBe32(p + core::kQcow2OffRefcountOrder, opts.refcount_order);
    core::StoreBe32(p + core::kQcow2OffHeaderLength, header_length);
    if (out.size() > core::kQcow2OffCompressionType) {
      out[core::kQcow2OffCompressionType] = opts.compression_type;
    }
  }

  std::vector<Qcow2Extension> exts;
  if (opts.backing_format)
    exts.push_back({core::kQcow2ExtBackingFormat, 0, Bytes(*opts.backing_format)});
  if (opts.data_file) exts.push_back({core::kQcow2ExtDataFile, 0, Bytes(*opts.data_file)});
  if (opts.feature_table) exts.push_back({core::kQcow2ExtFeatureTable, 0, FeatureTable(opts)});
  exts.insert(exts.end(), opts.extra_extensions.begin(), opts.extra_extensions.end());
  std::vector<uint8_t> area = core::EncodeQcow2Extensions(exts);
  out.insert(out.end(), area.begin(), area.end());

  if (opts.backing) {
    core::StoreBe64(out.data() + core::kQcow2OffBackingFileOffset, out.size());
    core::StoreBe32(out.data() + core::kQcow2OffBackingFileSize, uint32_t(opts.backing->size()));
    out.insert(out.end(), opts.backing->begin(), opts.backing->end());
  }
  return out;
}

// Sets the refcount of cluster `index` to 1 in a block of `bits`-wide entries.
void SetRefcountOne(uint8_t* block, uint64_t index, uint32_t bits) {
  if (bits >= 8) {
    const uint64_t bytes = bits / 8;
    block[index * bytes + bytes - 1] = 1;  // big endian: the low byte is last
  } else {
    const uint64_t bit = index * bits;
    block[bit / 8] |= uint8_t(1u << (bit % 8));
  }
}

// Rewrites [0, end of header area) of the open image `fd` with `exts`
// (encoded at header_length) followed by `backing`.
Status RewriteHeaderArea(int fd, const core::Qcow2Header& h,
                         const std::vector<Qcow2Extension>& exts, const std::string& backing) {
  if (backing.size() > core::kQcow2MaxBackingFileSize) {
    return Error(Code::kInvalidArgument, "backing string is {} bytes, over {}", backing.size(),
                 core::kQcow2MaxBackingFileSize);
  }
  std::vector<uint8_t> area = core::EncodeQcow2Extensions(exts);
  const uint64_t new_end = uint64_t{h.header_length} + area.size() + backing.size();
  if (new_end > h.cluster_size()) {
    return Error(Code::kNoSpace, "new header area ({} bytes) does not fit in the first cluster",
                 new_end);
  }
  uint64_t old_end = h.extensions_end;
  if (h.backing_file_offset != 0) {
    old_end = std::max(old_end, h.backing_file_offset + h.backing_file_size);
  }
  std::vector<uint8_t> buf(h.header_length);
  ssize_t got = ::pread(fd, buf.data(), buf.size(), 0);
  if (got != ssize_t(buf.size())) return Status::FromErrno(got < 0 ? errno : EIO, "pread header");
  buf.insert(buf.end(), area.begin(), area.end());
  const uint64_t backing_offset = backing.empty() ? 0 : buf.size();
  buf.insert(buf.end(), backing.begin(), backing.end());
  if (buf.size() < old_end) buf.resize(old_end, 0);  // clear what the old area left
  core::StoreBe64(buf.data() + core::kQcow2OffBackingFileOffset, backing_offset);
  core::StoreBe32(buf.data() + core::kQcow2OffBackingFileSize, uint32_t(backing.size()));
  ssize_t put = ::pwrite(fd, buf.data(), buf.size(), 0);
  if (put != ssize_t(buf.size())) return Status::FromErrno(put < 0 ? errno : EIO, "pwrite header");
  if (::fsync(fd) != 0) return Status::FromErrno(errno, "fsync");
  return Status::Ok();
}

// Opens `path` read-write and parses its qcow2 header.
core::Result<core::File> OpenForRewrite(const std::string& path, core::Qcow2Header& h) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno(e, "fstat " + path);
  }
  core::File file(fd, uint64_t(st.st_size));
  core::Result<core::Qcow2Header> parsed = core::ParseQcow2Header(file);
  if (!parsed.ok()) return parsed.status();
  h = std::move(*parsed);
  return file;
}

}  // namespace

std::vector<uint8_t> CraftQcow2Header(const CraftOptions& opts) {
  // Table offsets as a full image would have them (so they lie past the end
  // of the header area); hostile cluster_bits get a fixed layout instead.
  if (opts.cluster_bits >= core::kQcow2MinClusterBits && opts.cluster_bits <= 30 &&
      opts.refcount_order <= core::kQcow2MaxRefcountOrder) {
    return BuildHeaderArea(opts, ComputeLayout(opts));
  }
  Layout l;
  l.refcount_table_offset = 1 << 16;
  l.refcount_table_clusters = 1;
  l.l1_table_offset = 2 << 16;
  l.l1_size = 1;
  return BuildHeaderArea(opts, l);
}

std::vector<uint8_t> CraftQcow2Image(const CraftOptions& opts) {
  const Layout l = ComputeLayout(opts);
  const uint64_t cs = uint64_t{1} << opts.cluster_bits;
  std::vector<uint8_t> image = BuildHeaderArea(opts, l);
  image.resize(l.total_clusters * cs, 0);
  for (uint64_t i = 0; i < l.refcount_blocks; ++i) {
    core::StoreBe64(image.data() + l.refcount_table_offset + i * 8,
                    l.refcount_blocks_offset + i * cs);
  }
  const uint64_t per_block = (cs * 8) >> opts.refcount_order;
  for (uint64_t c = 0; c < l.total_clusters; ++c) {
    uint8_t* block = image.data() + l.refcount_blocks_offset + (c / per_block) * cs;
    SetRefcountOne(block, c % per_block, 1u << opts.refcount_order);
  }
  return image;
}

Status WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      ::close(fd);
      return Status::FromErrno(e, "write " + path);
    }
    done += size_t(n);
  }
  if (::close(fd) != 0) return Status::FromErrno(errno, "close " + path);
  return Status::Ok();
}

Status WriteCraftedQcow2(const std::string& path, const CraftOptions& opts) {
  return WriteBytes(path, CraftQcow2Image(opts));
}

Status StripBackingFormat(const std::string& path) {
  core::Qcow2Header h;
  core::Result<core::File> file = OpenForRewrite(path, h);
  if (!file.ok()) return file.status();
  if (!h.backing_format) {
    return Error(Code::kInvalidArgument, "{} records no backing format", path);
  }
  std::vector<Qcow2Extension> kept;
  for (const Qcow2Extension& e : h.extensions) {
    if (e.type != core::kQcow2ExtBackingFormat) kept.push_back(e);
  }
  return RewriteHeaderArea(file->fd(), h, kept, h.backing_file.value_or(""));
}

Status SetBackingString(const std::string& path, const std::string& backing,
                        const std::optional<std::string>& format) {
  core::Qcow2Header h;
  core::Result<core::File> file = OpenForRewrite(path, h);
  if (!file.ok()) return file.status();
  std::vector<Qcow2Extension> exts;
  if (format && !backing.empty()) {
    exts.push_back({core::kQcow2ExtBackingFormat, 0, Bytes(*format)});
  }
  for (const Qcow2Extension& e : h.extensions) {
    if (e.type != core::kQcow2ExtBackingFormat) exts.push_back(e);
  }
  return RewriteHeaderArea(file->fd(), h, exts, backing);
}

namespace {

constexpr uint64_t kL2OffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kCopiedFlag = 1ull << 63;

core::Qcow2Header MustParse(const std::vector<uint8_t>& image) {
  core::Result<core::Qcow2Header> h = core::ParseQcow2Header(core::MemoryReader(image));
  if (!h.ok()) std::abort();  // a helper misused by a test: not an image
  return std::move(*h);
}

// Returns the file offset of the L2 entry for guest cluster `cluster`, or
// kNotFound.
core::Result<uint64_t> L2EntryOffset(const core::File& f, const core::Qcow2Header& h,
                                     uint64_t cluster) {
  const uint64_t l2_entries = h.cluster_size() / (h.extended_l2() ? 16 : 8);
  const uint64_t l1_index = cluster / l2_entries;
  if (l1_index >= h.l1_size) return Error(Code::kNotFound, "cluster {} is past the L1 table", cluster);
  uint8_t b[8];
  CHAINFS_RETURN_IF_ERROR(core::ReadExact(f, h.l1_table_offset + l1_index * 8, b, "L1 entry"));
  const uint64_t l2 = core::LoadBe64(b) & kL2OffsetMask;
  if (l2 == 0) return Error(Code::kNotFound, "no L2 table maps cluster {}", cluster);
  return l2 + (cluster % l2_entries) * (h.extended_l2() ? 16 : 8);
}

}  // namespace

uint64_t CraftAppendCluster(std::vector<uint8_t>& image, uint8_t fill) {
  const uint64_t cs = MustParse(image).cluster_size();
  const uint64_t at = CeilDiv(image.size(), cs) * cs;
  image.resize(at, 0);
  image.resize(at + cs, fill);
  return at;
}

uint64_t CraftAppendL2Table(std::vector<uint8_t>& image, uint64_t l1_index) {
  const core::Qcow2Header h = MustParse(image);
  if (l1_index >= h.l1_size || h.l1_table_offset + (l1_index + 1) * 8 > image.size()) std::abort();
  const uint64_t at = CraftAppendCluster(image, 0);
  core::StoreBe64(image.data() + h.l1_table_offset + l1_index * 8, at | kCopiedFlag);
  return at;
}

void CraftSetL2Entry(std::vector<uint8_t>& image, uint64_t l2_offset, uint64_t index,
                     uint64_t entry) {
  if (l2_offset + (index + 1) * 8 > image.size()) std::abort();
  core::StoreBe64(image.data() + l2_offset + index * 8, entry);
}

core::Result<uint64_t> ReadL2Entry(const std::string& path, uint64_t cluster) {
  core::Result<core::File> f = core::File::OpenRead(path);
  if (!f.ok()) return f.status();
  core::Result<core::Qcow2Header> h = core::ParseQcow2Header(*f);
  if (!h.ok()) return h.status();
  core::Result<uint64_t> at = L2EntryOffset(*f, *h, cluster);
  if (!at.ok()) return at.status();
  uint8_t b[8];
  CHAINFS_RETURN_IF_ERROR(core::ReadExact(*f, *at, b, "L2 entry"));
  return core::LoadBe64(b);
}

Status WriteL2Entry(const std::string& path, uint64_t cluster, uint64_t entry) {
  core::Qcow2Header h;
  core::Result<core::File> f = OpenForRewrite(path, h);
  if (!f.ok()) return f.status();
  core::Result<uint64_t> at = L2EntryOffset(*f, h, cluster);
  if (!at.ok()) return at.status();
  uint8_t b[8];
  core::StoreBe64(b, entry);
  if (::pwrite(f->fd(), b, sizeof(b), off_t(*at)) != ssize_t(sizeof(b))) {
    return Status::FromErrno(errno, "pwrite " + path);
  }
  if (::fsync(f->fd()) != 0) return Status::FromErrno(errno, "fsync " + path);
  return Status::Ok();
}

std::vector<uint8_t> CraftQcow2WithClusters(const CraftOptions& opts,
                                           const std::function<CraftCluster(uint64_t)>& kind) {
  const uint64_t cs = uint64_t{1} << opts.cluster_bits;
  const bool extended = opts.incompatible_features & core::kQcow2IncompatExtendedL2;
  if (extended) std::abort();  // standard L2 entries only
  const uint64_t l2_entries = cs / 8;
  const uint64_t guest = CeilDiv(opts.size, cs);
  // First pass: which L2 tables are needed, how many data clusters.
  std::vector<bool> table_needed(CeilDiv(guest, l2_entries), false);
  uint64_t tables = 0, data = 0;
  for (uint64_t i = 0; i < guest; ++i) {
    const CraftCluster k = kind(i);
    if (k == CraftCluster::kZero && opts.version < 3) std::abort();  // no zero flag in v2
    if (k == CraftCluster::kUnallocated) continue;
    if (k == CraftCluster::kData) ++data;
    if (!table_needed[i / l2_entries]) {
      table_needed[i / l2_entries] = true;
      ++tables;
    }
  }
  const Layout l = ComputeLayout(opts, tables + data);
  const uint64_t total = l.total_clusters + tables + data;
  std::vector<uint8_t> image = BuildHeaderArea(opts, l);
  image.resize(total * cs, 0);
  for (uint64_t i = 0; i < l.refcount_blocks; ++i) {
    core::StoreBe64(image.data() + l.refcount_table_offset + i * 8,
                    l.refcount_blocks_offset + i * cs);
  }
  const uint64_t per_block = (cs * 8) >> opts.refcount_order;
  for (uint64_t c = 0; c < total; ++c) {
    uint8_t* block = image.data() + l.refcount_blocks_offset + (c / per_block) * cs;
    SetRefcountOne(block, c % per_block, 1u << opts.refcount_order);
  }
  // Second pass: tables and data after the L1 table, in guest order.
  uint64_t next = l.total_clusters;
  uint64_t table = 0;
  for (uint64_t i = 0; i < guest; ++i) {
    const uint64_t j = i / l2_entries;
    if (!table_needed[j]) {
      i = (j + 1) * l2_entries - 1;
      continue;
    }
    if (i % l2_entries == 0) {
      table = next++ * cs;
      core::StoreBe64(image.data() + l.l1_table_offset + j * 8, table | kCopiedFlag);
    }
    uint64_t entry = 0;
    switch (kind(i)) {
      case CraftCluster::kUnallocated:
        break;
      case CraftCluster::kZero:
        entry = 1;
        break;
      case CraftCluster::kData: {
        const uint64_t host = next++ * cs;
        std::fill_n(image.begin() + int64_t(host), cs, CraftDataByte(i));
        entry = host | kCopiedFlag;
        break;
      }
    }
    core::StoreBe64(image.data() + table + (i % l2_entries) * 8, entry);
  }
  return image;
}

}  // namespace chainfs::testutil
