#include "core/format/qcow2/writer.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>

#include "core/io/file.h"
#include "core/util/endian.h"
#include "core/write/in_use.h"

namespace chainfs::core {
namespace {

// qemu keeps L1 tables below 32 MiB.
constexpr uint64_t kMaxL1Entries = kQcow2MaxL1Bytes / 8;
// The v3 header qemu writes: 104 bytes plus the compression type byte,
// padded to a multiple of 8.
constexpr uint32_t kV3HeaderLength = 112;
constexpr uint32_t kRefcountOrder = 4;  // refcount_bits 16, qemu's default

uint64_t CeilDiv(uint64_t a, uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// Owns a descriptor; -1 means none.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  // Takes ownership of `fd`, closing any descriptor held before.
  void Reset(int fd) {
    Reset();
    fd_ = fd;
  }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
Status PwriteAll(int fd, std::span<const uint8_t> bytes, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, off_t(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("write {}", what));
    }
    if (n == 0) return Error(Code::kIo, "write {}: no progress", what);
    done += size_t(n);
  }
  return Status::Ok();
}

// The feature name table qemu 7.2 writes (qcow2 spec names).
std::vector<uint8_t> FeatureTableData() {
  struct Entry {
    uint8_t type, bit;
    std::string_view name;
  };
  static constexpr Entry kEntries[] = {
      {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
      {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
      {2, 0, "bitmaps"},          {2, 1, "raw external data"},
  };
  std::vector<uint8_t> out(std::size(kEntries) * kQcow2FeatureEntrySize, 0);
  for (size_t i = 0; i < std::size(kEntries); ++i) {
    uint8_t* e = out.data() + i * kQcow2FeatureEntrySize;
    e[0] = kEntries[i].type;
    e[1] = kEntries[i].bit;
    std::copy(kEntries[i].name.begin(), kEntries[i].name.end(), e + 2);
  }
  return out;
}

std::vector<uint8_t> Bytes(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// Splits "DIR/NAME" into an openable directory and the name.
Status SplitPath(const std::string& path, std::string& dir, std::string& name) {
  size_t slash = path.find_last_of('/');
  // assign(count, char) rather than string literals: GCC 12 -O2 warns
  // falsely (-Wrestrict) on assigning a literal to an out-parameter.
  if (slash == std::string::npos) {
    dir.assign(1, '.');
    name = path;
  } else {
    dir = slash == 0 ? std::string(1, '/') : path.substr(0, slash);
    name = path.substr(slash + 1);
  }
  if (name.empty() || name == "." || name == "..") {
    return Error(Code::kInvalidArgument, "'{}' does not name a file", path);
  }
  if (name.size() > NAME_MAX) {
    return Error(Code::kInvalidArgument, "file name '{}' is too long", name);
  }
  return Status::Ok();
}

// A temporary file in the target directory: unnamed (O_TMPFILE) or hidden.
struct TempFile {
  Fd fd;
  std::string name;  // empty for O_TMPFILE
};

Status OpenTemp(int dirfd, const std::string& dir, const std::string& final_name,
                const NewFileOptions& opts, TempFile& tmp) {
  if (opts.allow_o_tmpfile) {
    int fd = ::openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
      tmp.fd.Reset(fd);
      return Status::Ok();
    }
    int e = errno;
    // Fall back to a named file where the file system has no O_TMPFILE.
    if (e != EOPNOTSUPP && e != EISDIR && e != EINVAL && e != ENOSYS) {
      return Status::FromErrno(e, fmt::format("create a temporary file in {}", dir));
    }
  }
  std::random_device rd;
  std::mt19937_64 rng((uint64_t{rd()} << 32) ^ rd());
  // Keep the temporary name within NAME_MAX.
  std::string stem = final_name.substr(0, std::min<size_t>(final_name.size(), 200));
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string name = fmt::format(".{}.chainfs-tmp-{:08x}", stem, uint32_t(rng()));
    int fd =
        ::openat(dirfd, name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
      tmp.fd.Reset(fd);
      tmp.name = std::move(name);
      return Status::Ok();
    }
    if (errno != EEXIST) {
      return Status::FromErrno(errno, fmt::format("create a temporary file in {}", dir));
    }
  }
  return Error(Code::kIo, "could not find a free temporary name in {}", dir);
}

// Gives the temporary file its final name without replacing anything.
Status LinkIntoPlace(int dirfd, const TempFile& tmp, const std::string& name,
                     const std::string& path) {
  int rc;
  if (tmp.name.empty()) {
    std::string proc = fmt::format("/proc/self/fd/{}", tmp.fd.get());
    rc = ::linkat(AT_FDCWD, proc.c_str(), dirfd, name.c_str(), AT_SYMLINK_FOLLOW);
    if (rc != 0 && errno == ENOENT && ::access("/proc/self/fd", F_OK) != 0) {
      rc = ::linkat(tmp.fd.get(), "", dirfd, name.c_str(), AT_EMPTY_PATH);  // no /proc
    }
  } else {
    rc = ::linkat(dirfd, tmp.name.c_str(), dirfd, name.c_str(), 0);
    if (rc != 0 && (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS)) {
      // A file system without hard links: an atomic rename that refuses to
      // replace an existing name does the same.
      rc = ::renameat2(dirfd, tmp.name.c_str(), dirfd, name.c_str(), RENAME_NOREPLACE);
    }
  }
  if (rc != 0) {
    int e = errno;
    if (e == EEXIST) return Error(Code::kExists, "'{}' already exists", path);
    return Status::FromErrno(e, fmt::format("link {}", path));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateBackingString(std::string_view backing) {
  if (backing.empty()) return Error(Code::kInvalidArgument, "empty backing string");
  if (backing.size() > kQcow2MaxBackingFileSize) {
    return Error(Code::kInvalidArgument, "backing string is {} bytes, qcow2 allows at most {}",
                 backing.size(), kQcow2MaxBackingFileSize);
  }
  if (backing.find('\0') != std::string_view::npos) {
    return Error(Code::kInvalidArgument, "backing string contains a NUL byte");
  }
  return Status::Ok();
}

Status ValidateBackingFormatName(std::string_view format) {
  if (format.empty() || format.size() > kQcow2MaxBackingFormatSize) {
    return Error(Code::kInvalidArgument, "backing format name must be 1..{} bytes",
                 kQcow2MaxBackingFormatSize);
  }
  for (char c : format) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) return Error(Code::kInvalidArgument, "'{}' is not a format name", format);
  }
  return Status::Ok();
}

Status ValidateQcow2CreateOptions(const Qcow2CreateOptions& o) {
  if (o.version != 2 && o.version != 3) {
    return Error(Code::kInvalidArgument, "qcow2 version must be 2 (compat 0.10) or 3 (compat 1.1)");
  }
  const uint64_t cs = o.cluster_size;
  if (cs < (uint64_t{1} << kQcow2MinClusterBits) || cs > (uint64_t{1} << kQcow2MaxClusterBits) ||
      (cs & (cs - 1)) != 0) {
    return Error(Code::kInvalidArgument,
                 "cluster size {} must be a power of two between 512 and 2M", cs);
  }
  if (o.version == 2 && (o.lazy_refcounts || o.extended_l2)) {
    return Error(Code::kInvalidArgument, "{} needs compat 1.1",
                 o.lazy_refcounts ? "lazy_refcounts" : "extended_l2");
  }
  if (o.extended_l2 && cs < kQcow2ExtendedL2MinCluster) {
    return Error(Code::kInvalidArgument, "extended_l2 needs a cluster size of at least 16K");
  }
  if (o.size > (uint64_t{1} << 62)) {
    return Error(Code::kInvalidArgument, "virtual size {} is too large", o.size);
  }
  if (o.backing) CHAINFS_RETURN_IF_ERROR(ValidateBackingString(*o.backing));
  if (o.backing_format) {
    if (!o.backing) {
      return Error(Code::kInvalidArgument, "a backing format needs a backing file");
    }
    CHAINFS_RETURN_IF_ERROR(ValidateBackingFormatName(*o.backing_format));
  }
  return Status::Ok();
}

Result<ImagePlan> PlanQcow2Image(const Qcow2CreateOptions& o) {
  CHAINFS_RETURN_IF_ERROR(ValidateQcow2CreateOptions(o));
  const uint64_t cs = o.cluster_size;
  const uint64_t size = (o.size + 511) / 512 * 512;
  const uint64_t l2_entries = cs / (o.extended_l2 ? 16 : 8);
  const uint64_t l1_size = CeilDiv(size, cs * l2_entries);
  if (l1_size > kMaxL1Entries) {
    return Error(Code::kInvalidArgument,
                 "virtual size {} needs an L1 table larger than qemu's 32 MiB limit", size);
  }
  const uint64_t l1_clusters = CeilDiv(l1_size * 8, cs);
  const uint64_t per_block = (cs * 8) >> kRefcountOrder;  // refcounts per block
  uint64_t rt = 1, rb = 1;
  for (;;) {  // grow until the refcount structures cover themselves
    uint64_t total = 1 + rt + rb + l1_clusters;
    uint64_t need_rb = CeilDiv(total, per_block);
    uint64_t need_rt = CeilDiv(need_rb * 8, cs);
    if (need_rb <= rb && need_rt <= rt) break;
    rb = std::max(rb, need_rb);
    rt = std::max(rt, need_rt);
  }
  const uint64_t total_clusters = 1 + rt + rb + l1_clusters;
  const uint64_t rt_offset = cs;
  const uint64_t rb_offset = cs * (1 + rt);
  const uint64_t l1_offset = l1_size == 0 ? 0 : cs * (1 + rt + rb);

  // Header cluster.
  const uint32_t header_length = o.version == 2 ? kQcow2V2HeaderLength : kV3HeaderLength;
  std::vector<uint8_t> header(header_length, 0);
  uint8_t* p = header.data();
  StoreBe32(p + kQcow2OffMagic, kQcow2Magic);
  StoreBe32(p + kQcow2OffVersion, o.version);
  StoreBe32(p + kQcow2OffClusterBits, uint32_t(__builtin_ctzll(cs)));
  StoreBe64(p + kQcow2OffSize, size);
  StoreBe32(p + kQcow2OffCryptMethod, kQcow2CryptNone);
  StoreBe32(p + kQcow2OffL1Size, uint32_t(l1_size));
  StoreBe64(p + kQcow2OffL1TableOffset, l1_offset);
  StoreBe64(p + kQcow2OffRefcountTableOffset, rt_offset);
  StoreBe32(p + kQcow2OffRefcountTableClusters, uint32_t(rt));
  if (o.version == 3) {
    StoreBe64(p + kQcow2OffIncompatibleFeatures, o.extended_l2 ? kQcow2IncompatExtendedL2 : 0);
    StoreBe64(p + kQcow2OffCompatibleFeatures, o.lazy_refcounts ? kQcow2CompatLazyRefcounts : 0);
    StoreBe32(p + kQcow2OffRefcountOrder, kRefcountOrder);
    StoreBe32(p + kQcow2OffHeaderLength, header_length);
  }
  std::vector<Qcow2Extension> exts;
  if (o.backing_format) exts.push_back({kQcow2ExtBackingFormat, 0, Bytes(*o.backing_format)});
  if (o.version == 3 && cs >= kQcow2FeatureTableMinCluster) {
    exts.push_back({kQcow2ExtFeatureTable, 0, FeatureTableData()});
  }
  std::vector<uint8_t> ext_bytes = EncodeQcow2Extensions(exts);
  header.insert(header.end(), ext_bytes.begin(), ext_bytes.end());
  if (o.backing) {
    if (header.size() + o.backing->size() > cs) {
      return Error(Code::kInvalidArgument,
                   "backing string of {} bytes does not fit in a header cluster of {} bytes",
                   o.backing->size(), cs);
    }
    StoreBe64(header.data() + kQcow2OffBackingFileOffset, header.size());
    StoreBe32(header.data() + kQcow2OffBackingFileSize, uint32_t(o.backing->size()));
    header.insert(header.end(), o.backing->begin(), o.backing->end());
  }

  ImagePlan plan;
  plan.extents.push_back({0, std::move(header)});
  // Refcount table: one entry per refcount block.
  std::vector<uint8_t> table(rb * 8, 0);
  for (uint64_t i = 0; i < rb; ++i) StoreBe64(table.data() + i * 8, rb_offset + i * cs);
  plan.extents.push_back({rt_offset, std::move(table)});
  // Refcount blocks: 1 for every used cluster; only the non-zero prefix of
  // each block is written, the rest stays a hole.
  for (uint64_t i = 0; i < rb; ++i) {
    uint64_t first = i * per_block;
    uint64_t count = std::min(per_block, total_clusters - first);
    std::vector<uint8_t> block(count * 2, 0);
    for (uint64_t j = 0; j < count; ++j) StoreBe16(block.data() + j * 2, 1);
    plan.extents.push_back({rb_offset + i * cs, std::move(block)});
  }
  plan.file_size = total_clusters * cs;
  return plan;
}

Status CreateFileAtomically(const std::string& path, const NewFileOptions& opts,
                            const FillFunction& fill) {
  std::string dir, name;
  CHAINFS_RETURN_IF_ERROR(SplitPath(path, dir, name));
  Fd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirfd.get() < 0) return Status::FromErrno(errno, fmt::format("open directory {}", dir));
  struct stat st;
  if (::fstatat(dirfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    return Error(Code::kExists, "'{}' already exists", path);
  }

  TempFile tmp;
  CHAINFS_RETURN_IF_ERROR(OpenTemp(dirfd.get(), dir, name, opts, tmp));
  Status s = fill(tmp.fd.get());
  if (s.ok() && ::fchmod(tmp.fd.get(), opts.mode & 07777) != 0) {
    s = Status::FromErrno(errno, fmt::format("chmod {}", path));
  }
  if (s.ok() && (opts.uid || opts.gid)) {
    if (::fchown(tmp.fd.get(), opts.uid ? *opts.uid : uid_t(-1),
                 opts.gid ? *opts.gid : gid_t(-1)) != 0) {
      s = Status::FromErrno(errno, fmt::format("chown {}", path));
    }
  }
  if (s.ok() && ::fsync(tmp.fd.get()) != 0) {
    s = Status::FromErrno(errno, fmt::format("fsync {}", path));
  }
  if (s.ok()) s = LinkIntoPlace(dirfd.get(), tmp, name, path);
  // The temporary name goes in every case: after a successful link the file
  // lives on under its final name.
  if (!tmp.name.empty()) ::unlinkat(dirfd.get(), tmp.name.c_str(), 0);
  tmp.fd.Reset();
  if (!s.ok()) return s;
  if (::fsync(dirfd.get()) != 0) {
    return Status::FromErrno(errno, fmt::format("fsync directory {}", dir));
  }
  return Status::Ok();
}

Status CreateQcow2(const std::string& path, const Qcow2CreateOptions& opts) {
  Result<ImagePlan> plan = PlanQcow2Image(opts);
  if (!plan.ok()) return plan.status();
  return CreateFileAtomically(path, opts.file, [&](int fd) -> Status {
    for (const ImageExtent& e : plan->extents) {
      CHAINFS_RETURN_IF_ERROR(PwriteAll(fd, e.bytes, e.offset, path));
    }
    if (::ftruncate(fd, off_t(plan->file_size)) != 0) {
      return Status::FromErrno(errno, fmt::format("truncate {}", path));
    }
    return Status::Ok();
  });
}

Status CreateRaw(const std::string& path, uint64_t size, const NewFileOptions& opts) {
  if (size > uint64_t(INT64_MAX))
    return Error(Code::kInvalidArgument, "size {} is too large", size);
  return CreateFileAtomically(path, opts, [&](int fd) -> Status {
    if (::ftruncate(fd, off_t(size)) != 0) {
      return Status::FromErrno(errno, fmt::format("truncate {}", path));
    }
    return Status::Ok();
  });
}

Result<std::vector<uint8_t>> BuildQcow2HeaderArea(
    const Qcow2Header& h, std::span<const uint8_t> fixed, const std::optional<std::string>& backing,
    const std::optional<std::string>& backing_format) {
  if (fixed.size() != h.header_length || h.header_length < kQcow2V2HeaderLength) {
    return Error(Code::kInvalidArgument, "header bytes ({}) do not match header_length {}",
                 fixed.size(), h.header_length);
  }
  // An empty string means no backing file. (A plain string and a flag rather
  // than a copied optional: GCC 12 at -O2 warns falsely on the latter.)
  const bool has_str = backing.has_value() && !backing->empty();
  const std::string str = has_str ? *backing : std::string();
  if (has_str) CHAINFS_RETURN_IF_ERROR(ValidateBackingString(str));
  if (backing_format) {
    if (!has_str) return Error(Code::kInvalidArgument, "a backing format needs a backing file");
    CHAINFS_RETURN_IF_ERROR(ValidateBackingFormatName(*backing_format));
  }

  // The extensions in their order, the backing format one replaced, added
  // first (where qemu writes it) or dropped.
  std::vector<Qcow2Extension> exts;
  bool placed = false;
  if (backing_format &&
      std::none_of(h.extensions.begin(), h.extensions.end(),
                   [](const Qcow2Extension& e) { return e.type == kQcow2ExtBackingFormat; })) {
    exts.push_back({kQcow2ExtBackingFormat, 0, Bytes(*backing_format)});
    placed = true;
  }
  for (const Qcow2Extension& e : h.extensions) {
    if (e.type == kQcow2ExtBackingFormat) {
      if (backing_format && !placed) {
        exts.push_back({kQcow2ExtBackingFormat, 0, Bytes(*backing_format)});
        placed = true;
      }
      continue;  // a second one (malformed image) is dropped
    }
    exts.push_back(e);
  }

  const uint64_t cs = h.cluster_size();
  const uint64_t str_len = str.size();
  std::vector<uint8_t> ext_bytes = EncodeQcow2Extensions(exts);
  if (h.header_length + ext_bytes.size() + str_len > cs) {
    // The feature name table only names bits; leaving it out is harmless.
    auto is_table = [](const Qcow2Extension& e) { return e.type == kQcow2ExtFeatureTable; };
    exts.erase(std::remove_if(exts.begin(), exts.end(), is_table), exts.end());
    ext_bytes = EncodeQcow2Extensions(exts);
  }
  if (h.header_length + ext_bytes.size() + str_len > cs) {
    return Error(Code::kNoSpace,
                 "no space left in the qcow2 header: the header area would take {} bytes, "
                 "the header cluster holds {}",
                 h.header_length + ext_bytes.size() + str_len, cs);
  }

  std::vector<uint8_t> out(fixed.begin(), fixed.end());
  out.insert(out.end(), ext_bytes.begin(), ext_bytes.end());
  StoreBe64(out.data() + kQcow2OffBackingFileOffset, has_str ? out.size() : 0);
  StoreBe32(out.data() + kQcow2OffBackingFileSize, uint32_t(str_len));
  out.insert(out.end(), str.begin(), str.end());
  return out;
}

namespace {

// The backing string and format a header update should leave.
struct BackingChange {
  std::optional<std::string> backing;
  std::optional<std::string> backing_format;
};
using DecideFunction = std::function<Result<BackingChange>(const Qcow2Header&)>;

// Opens `path` for writing, locks it against QEMU, parses its header, asks
// `decide` what to write and rewrites the header cluster with one pwrite.
Status UpdateBacking(const std::string& path, const DecideFunction& decide) {
  int raw_fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (raw_fd < 0) return Status::FromErrno(errno, fmt::format("open {}", path));
  struct stat st;
  if (::fstat(raw_fd, &st) != 0) {
    int e = errno;
    ::close(raw_fd);
    return Status::FromErrno(e, fmt::format("stat {}", path));
  }
  File file(raw_fd, uint64_t(st.st_size));  // owns raw_fd from here on
  if (!S_ISREG(st.st_mode)) {
    return Error(Code::kUnsupported, "'{}' is not a regular file; its header is not rewritten",
                 path);
  }
  CHAINFS_RETURN_IF_ERROR(LockForUpdate(file.fd(), path));

  uint8_t magic[4] = {};
  if (file.Size() < sizeof(magic) || !ReadExact(file, 0, magic, "magic").ok() ||
      LoadBe32(magic) != kQcow2Magic) {
    return Error(Code::kUnsupported, "'{}' is not a qcow2 image; only qcow2 records a backing",
                 path);
  }
  Result<Qcow2Header> parsed = ParseQcow2Header(file);
  if (!parsed.ok()) {
    return Status(parsed.status().code(), fmt::format("{}: {}", path, parsed.status().message()));
  }
  const Qcow2Header& h = *parsed;
  if (h.corrupt()) {
    return Error(Code::kCorrupt, "'{}' is marked corrupt; run qemu-img check -r first", path);
  }
  if (uint64_t unknown = h.unknown_incompatible_features(); unknown != 0) {
    return Error(Code::kUnsupported, "'{}' has unknown incompatible features {:#x}", path, unknown);
  }
  Result<BackingChange> change = decide(h);
  if (!change.ok()) return change.status();

  std::vector<uint8_t> fixed(h.header_length);
  CHAINFS_RETURN_IF_ERROR(ReadExact(file, 0, fixed, "qcow2 header"));
  Result<std::vector<uint8_t>> area =
      BuildQcow2HeaderArea(h, fixed, change->backing, change->backing_format);
  if (!area.ok()) {
    return Status(area.status().code(), fmt::format("{}: {}", path, area.status().message()));
  }
  // The whole header cluster, zero past the new area, so nothing of the old
  // area survives; clipped to the file for images shorter than a cluster.
  std::vector<uint8_t> cluster = std::move(*area);
  uint64_t len =
      std::max<uint64_t>(cluster.size(), std::min<uint64_t>(h.cluster_size(), file.Size()));
  cluster.resize(len, 0);
  CHAINFS_RETURN_IF_ERROR(PwriteAll(file.fd(), cluster, 0, path));
  if (::fsync(file.fd()) != 0) return Status::FromErrno(errno, fmt::format("fsync {}", path));
  return Status::Ok();
}

}  // namespace

Status RewriteBacking(const std::string& path, std::optional<std::string> backing,
                      std::optional<std::string> backing_format) {
  if (backing && backing->empty()) backing.reset();
  if (backing) CHAINFS_RETURN_IF_ERROR(ValidateBackingString(*backing));
  if (backing_format) {
    if (!backing) return Error(Code::kInvalidArgument, "a backing format needs a backing file");
    CHAINFS_RETURN_IF_ERROR(ValidateBackingFormatName(*backing_format));
  }
  return UpdateBacking(path, [&](const Qcow2Header&) -> Result<BackingChange> {
    return BackingChange{backing, backing_format};
  });
}

Status RewriteBackingFormat(const std::string& path, const std::string& backing_format) {
  CHAINFS_RETURN_IF_ERROR(ValidateBackingFormatName(backing_format));
  return UpdateBacking(path, [&](const Qcow2Header& h) -> Result<BackingChange> {
    if (!h.backing_file) {
      return Error(Code::kInvalidArgument, "'{}' has no backing file to declare a format for",
                   path);
    }
    return BackingChange{h.backing_file, backing_format};
  });
}

}  // namespace chainfs::core
