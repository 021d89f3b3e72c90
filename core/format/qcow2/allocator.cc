#include "core/format/qcow2/allocator.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>

#include "core/io/reader.h"
#include "core/util/endian.h"
#include "core/write/in_use.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // L1 and L2 entries, bits 9..55
constexpr uint64_t kCopied = 1ull << 63;
constexpr uint64_t kCompressed = 1ull << 62;
constexpr uint64_t kZeroFlag = 1ull;
// L1: bits 1..8 and 56..62 are reserved.
constexpr uint64_t kL1Reserved = 0x7f000000000001feull;
// Standard L2 entries: bits 1..8 and 56..61 are reserved.
constexpr uint64_t kL2Reserved = 0x3f000000000001feull;
// Extended L2 descriptors: bit 0 (the zero flag of standard entries) too.
constexpr uint64_t kL2ExtReserved = kL2Reserved | kZeroFlag;
// Subcluster bitmap halves: allocation bits 0..31, zero bits 32..63.
constexpr uint64_t kAllocBits = 0xffffffffull;
constexpr uint32_t kSubclusters = 32;
// Refcount table entries: bits 0..8 are reserved.
constexpr uint64_t kRefTableReserved = 0x1ffull;
// qemu's header field offsets for the refcount table: offset (8 bytes) and
// clusters (4 bytes) are adjacent, so one 12-byte pwrite moves the table.
static_assert(kQcow2OffRefcountTableClusters == kQcow2OffRefcountTableOffset + 8);

// Data written since the last writeback request that triggers a new one.
constexpr uint64_t kWritebackStep = 8ull << 20;
// Bounds the memory of pending L2 updates.
constexpr size_t kMaxPendingClusters = 256 * 1024;

uint64_t CeilDiv(uint64_t a, uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// Reads through a descriptor this file does not own.
class FdReader : public Reader {
 public:
  FdReader(int fd, uint64_t size) : fd_(fd), size_(size) {}
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) const override {
    size_t done = 0;
    while (done < buf.size()) {
      ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done, off_t(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "read");
      }
      if (n == 0) break;
      done += size_t(n);
    }
    return done;
  }
  uint64_t Size() const override { return size_; }

 private:
  int fd_;
  uint64_t size_;
};

// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
Status PwriteAll(int fd, std::span<const uint8_t> bytes, uint64_t offset, const std::string& path,
                 const char* what) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, off_t(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("write {} of {}", what, path));
    }
    done += size_t(n);
  }
  return Status::Ok();
}

// Returns the allocation bits of the subclusters of a cluster that
// [begin, end) (offsets in the cluster, multiples of `sub`) covers.
uint64_t SubclusterMask(uint64_t begin, uint64_t end, uint64_t sub) {
  const uint64_t first = begin / sub, last = (end + sub - 1) / sub;  // [first, last)
  const uint64_t upto = last >= 64 ? ~0ull : (1ull << last) - 1;
  return upto & ~((1ull << first) - 1) & kAllocBits;
}

// Encodes entries [first, last] of a big-endian 64-bit table.
std::vector<uint8_t> EncodeEntries(const std::vector<uint64_t>& table, size_t first, size_t last) {
  std::vector<uint8_t> out((last - first + 1) * 8);
  for (size_t i = first; i <= last; ++i) StoreBe64(out.data() + (i - first) * 8, table[i]);
  return out;
}

}  // namespace

Qcow2Writer::Qcow2Writer(int fd, std::string path, Qcow2Header h, const Qcow2WriterOptions& options)
    : fd_(fd), path_(std::move(path)), h_(std::move(h)), options_(options) {}

Qcow2Writer::~Qcow2Writer() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<Qcow2Writer>> Qcow2Writer::Open(const std::string& path,
                                                       const Qcow2WriterOptions& options) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return Status::FromErrno(errno, fmt::format("open {}", path));
  // From here on the writer (or this guard) owns fd.
  std::unique_ptr<Qcow2Writer> w;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno(e, fmt::format("stat {}", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(Code::kUnsupported, "'{}' is not a regular file", path);
  }
  Status locked = LockForUpdate(fd, path);
  if (!locked.ok()) {
    ::close(fd);
    return locked;
  }
  const uint64_t file_size = uint64_t(st.st_size);
  FdReader reader(fd, file_size);
  uint8_t magic[4] = {};
  if (file_size < sizeof(magic) || !ReadExact(reader, 0, magic, "magic").ok() ||
      LoadBe32(magic) != kQcow2Magic) {
    ::close(fd);
    return Error(Code::kUnsupported, "'{}' is not a qcow2 image", path);
  }
  Result<Qcow2Header> parsed = ParseQcow2Header(reader);
  if (!parsed.ok()) {
    ::close(fd);
    return Status(parsed.status().code(), fmt::format("{}: {}", path, parsed.status().message()));
  }
  w.reset(new Qcow2Writer(fd, path, std::move(*parsed), options));
  const Qcow2Header& h = w->h_;
  if (h.corrupt()) {
    return Error(Code::kCorrupt, "'{}' is marked corrupt; run qemu-img check -r all first", path);
  }
  if (uint64_t unknown = h.unknown_incompatible_features(); unknown != 0) {
    return Error(Code::kUnsupported, "'{}' has unknown incompatible features {:#x}", path, unknown);
  }
  if (h.dirty()) {
    return Error(Code::kUnsupported,
                 "'{}' has the dirty bit set (refcounts not up to date); repair it with "
                 "qemu-img check -r all first",
                 path);
  }
  if (h.crypt_method != kQcow2CryptNone) {
    return Error(Code::kUnsupported, "'{}' is encrypted; writing encrypted images is not supported",
                 path);
  }
  if (h.has_data_file()) {
    return Error(Code::kUnsupported, "'{}' has an external data file; writing it is not supported",
                 path);
  }
  if (h.extended_l2() && h.cluster_bits < 14) {
    return Error(Code::kCorrupt,
                 "'{}' uses extended L2 entries with clusters of {} bytes (at least 16 KiB needed)",
                 path, h.cluster_size());
  }
  if (h.nb_snapshots != 0) {
    return Error(Code::kUnsupported,
                 "'{}' has {} internal snapshot(s); writing images with snapshots is not supported",
                 path, h.nb_snapshots);
  }
  if ((h.autoclear_features & kQcow2AutoclearBitmaps) && h.bitmaps_extension) {
    return Error(Code::kUnsupported,
                 "'{}' has persistent bitmaps, which a write would leave stale; remove them first",
                 path);
  }
  CHAINFS_RETURN_IF_ERROR(w->Load(file_size));
  return w;
}

Status Qcow2Writer::Load(uint64_t file_size) {
  cbits_ = h_.cluster_bits;
  cs_ = h_.cluster_size();
  ext_ = h_.extended_l2();
  entry_bytes_ = ext_ ? 16 : 8;
  granule_ = ext_ ? cs_ / kSubclusters : cs_;
  l2_entries_ = cs_ / entry_bytes_;
  refblock_entries_ = cs_ * 8 / h_.refcount_bits();
  file_size_at_open_ = file_size;
  FdReader reader(fd_, file_size);

  // L1 table.
  const uint64_t needed_l1 = CeilDiv(h_.size, cs_ * l2_entries_);
  if (uint64_t(h_.l1_size) * 8 > kQcow2MaxL1Bytes || h_.l1_size < needed_l1) {
    return Error(Code::kCorrupt, "'{}': L1 table of {} entries does not fit a {}-byte disk", path_,
                 h_.l1_size, h_.size);
  }
  if (h_.l1_size > 0) {
    if (h_.l1_table_offset % cs_ != 0) {
      return Error(Code::kCorrupt, "'{}': misaligned L1 table", path_);
    }
    Result<std::vector<uint8_t>> raw = ReadVector(
        reader, h_.l1_table_offset, uint64_t(h_.l1_size) * 8, kQcow2MaxL1Bytes, "L1 table");
    if (!raw.ok()) return raw.status();
    l1_.resize(h_.l1_size);
    for (size_t i = 0; i < l1_.size(); ++i) l1_[i] = LoadBe64(raw->data() + i * 8);
  }

  // Refcount table.
  const uint64_t rt_bytes = uint64_t(h_.refcount_table_clusters) * cs_;
  if (rt_bytes == 0 || rt_bytes > kQcow2MaxRefTableBytes || h_.refcount_table_offset % cs_ != 0) {
    return Error(Code::kCorrupt, "'{}': unusable refcount table ({} clusters at {:#x})", path_,
                 h_.refcount_table_clusters, h_.refcount_table_offset);
  }
  Result<std::vector<uint8_t>> raw = ReadVector(reader, h_.refcount_table_offset, rt_bytes,
                                                kQcow2MaxRefTableBytes, "refcount table");
  if (!raw.ok()) return raw.status();
  reftable_.resize(rt_bytes / 8);
  for (size_t i = 0; i < reftable_.size(); ++i) reftable_[i] = LoadBe64(raw->data() + i * 8);

  // Allocate past both the end of the file and the last cluster with a
  // refcount, so nothing in use is ever handed out again.
  end_ = CeilDiv(file_size, cs_) * cs_;
  for (size_t i = reftable_.size(); i-- > 0;) {
    if (reftable_[i] == 0) continue;
    std::map<uint64_t, std::vector<uint8_t>> blocks;
    Result<std::vector<uint8_t>*> block = RefBlock(i, blocks, {});
    if (!block.ok()) return block.status();
    std::optional<uint64_t> last;
    for (uint64_t k = refblock_entries_; k-- > 0;) {
      if (GetRefcount(**block, k) != 0) {
        last = k;
        break;
      }
    }
    if (!last) continue;
    end_ = std::max(end_, (i * refblock_entries_ + *last + 1) * cs_);
    break;
  }
  if (end_ == 0) end_ = cs_;
  return Status::Ok();
}

Status Qcow2Writer::Sync() {
  if (!options_.sync) return Status::Ok();
  if (::fdatasync(fd_) != 0) return Status::FromErrno(errno, fmt::format("fdatasync {}", path_));
  return Status::Ok();
}

void Qcow2Writer::StartWriteback(uint64_t offset, uint64_t length) {
  if (!options_.sync) return;
  // Start writing the new data back now (without waiting), so the data
  // sync at the next Flush has little left to do. Contiguous appends are
  // gathered into one request per kWritebackStep bytes.
  if (writeback_end_ != offset) {
    writeback_start_ = offset;
  }
  writeback_end_ = offset + length;
  if (writeback_end_ - writeback_start_ >= kWritebackStep) {
    ::sync_file_range(fd_, off_t(writeback_start_), off_t(writeback_end_ - writeback_start_),
                      SYNC_FILE_RANGE_WRITE);
    writeback_start_ = writeback_end_;
  }
}

Status Qcow2Writer::ReadCluster(uint64_t host, std::vector<uint8_t>& out, const char* what) const {
  const uint64_t limit = std::max(file_size_at_open_, end_);
  if (host % cs_ != 0 || !RangeWithin(host, cs_, limit)) {
    return Error(Code::kCorrupt, "'{}': {} at {:#x} is misaligned or past the end of the file",
                 path_, what, host);
  }
  out.resize(cs_);
  FdReader reader(fd_, limit);
  Result<size_t> n = reader.ReadAt(host, out);
  if (!n.ok()) return n.status();
  if (*n != cs_) {
    return Error(Code::kCorrupt, "'{}': {} at {:#x} is truncated", path_, what, host);
  }
  return Status::Ok();
}

Result<Qcow2Writer::L2*> Qcow2Writer::L2Table(uint64_t l1_index) {
  auto it = l2_cache_.find(l1_index);
  if (it != l2_cache_.end()) return &it->second;
  const uint64_t l1e = l1_[l1_index];
  if (l1e & kL1Reserved) {
    return Error(Code::kCorrupt, "'{}': L1 entry {} has reserved bits set", path_, l1_index);
  }
  if (!(l1e & kCopied)) {
    return Error(Code::kUnsupported, "'{}': L2 table {} is shared (refcount > 1)", path_, l1_index);
  }
  std::vector<uint8_t> raw;
  CHAINFS_RETURN_IF_ERROR(ReadCluster(l1e & kOffsetMask, raw, "L2 table"));
  L2 table(l2_entries_);
  for (size_t i = 0; i < table.size(); ++i) {
    table[i].desc = LoadBe64(raw.data() + i * entry_bytes_);
    if (ext_) table[i].bitmap = LoadBe64(raw.data() + i * entry_bytes_ + 8);
  }
  return &l2_cache_.emplace(l1_index, std::move(table)).first->second;
}

std::vector<uint8_t> Qcow2Writer::EncodeL2(const L2& table, size_t first, size_t last) const {
  std::vector<uint8_t> out((last - first + 1) * entry_bytes_);
  for (size_t i = first; i <= last; ++i) {
    uint8_t* p = out.data() + (i - first) * entry_bytes_;
    StoreBe64(p, table[i].desc);
    if (ext_) StoreBe64(p + 8, table[i].bitmap);
  }
  return out;
}

Result<Qcow2Writer::Entry> Qcow2Writer::CurrentEntry(uint64_t guest_cluster) {
  if (auto it = pending_.find(guest_cluster); it != pending_.end()) return it->second;
  const uint64_t l1_index = guest_cluster / l2_entries_;
  if (l1_index >= l1_.size()) {
    return Error(Code::kCorrupt, "'{}': guest cluster {} lies past the L1 table", path_,
                 guest_cluster);
  }
  if ((l1_[l1_index] & kOffsetMask) == 0) return Entry{};
  Result<L2*> table = L2Table(l1_index);
  if (!table.ok()) return table.status();
  const Entry e = (**table)[guest_cluster % l2_entries_];
  if (e.desc & kCompressed) return e;  // refused by every caller
  if (e.desc & (ext_ ? kL2ExtReserved : kL2Reserved)) {
    return Error(Code::kCorrupt, "'{}': L2 entry of guest cluster {} has reserved bits set", path_,
                 guest_cluster);
  }
  // A host cluster past the allocation pointer could be handed out again.
  const uint64_t host = e.desc & kOffsetMask;
  if (host % cs_ != 0 || host >= end_) {
    return Error(Code::kCorrupt,
                 "'{}': host cluster {:#x} of guest cluster {} is misaligned or past the end of "
                 "the image",
                 path_, host, guest_cluster);
  }
  if (!ext_) {
    if (host != 0 && h_.version < 3 && (e.desc & kZeroFlag)) {
      return Error(Code::kCorrupt, "'{}': zero flag in a version 2 image", path_);
    }
    return e;
  }
  const uint64_t alloc = e.bitmap & kAllocBits;
  if (alloc & (e.bitmap >> 32)) {
    return Error(Code::kCorrupt,
                 "'{}': L2 entry of guest cluster {} marks subclusters both allocated and zero "
                 "(bitmap {:#018x})",
                 path_, guest_cluster, e.bitmap);
  }
  if (host == 0 && alloc != 0) {
    return Error(Code::kCorrupt,
                 "'{}': L2 entry of guest cluster {} allocates subclusters of no host cluster "
                 "(bitmap {:#018x})",
                 path_, guest_cluster, e.bitmap);
  }
  return e;
}

uint64_t Qcow2Writer::Allocate(uint64_t clusters) {
  const uint64_t at = end_;
  end_ += clusters * cs_;
  return at;
}

Status Qcow2Writer::CheckRange(uint64_t offset, uint64_t length, const char* what) const {
  // Up to the end of the last cluster, which may lie past the virtual size.
  const uint64_t limit = CeilDiv(h_.size, cs_) * cs_;
  if (offset % granule_ != 0 || length % granule_ != 0 || offset > limit ||
      length > limit - offset) {
    return Error(Code::kInvalidArgument,
                 "'{}': {} of {} bytes at {} is not whole {} inside the disk", path_, what, length,
                 offset, ext_ ? "subclusters" : "clusters");
  }
  return Status::Ok();
}

Status Qcow2Writer::WriteInto(uint64_t host, std::span<const uint8_t> bytes) {
  Status s = PwriteAll(fd_, bytes, host, path_, "data");
  if (!s.ok()) failed_ = true;
  return s;
}

Status Qcow2Writer::WriteClusters(uint64_t offset, std::span<const uint8_t> data) {
  if (failed_) return Error(Code::kIo, "'{}': an earlier write failed", path_);
  CHAINFS_RETURN_IF_ERROR(CheckRange(offset, data.size(), "write"));
  const uint64_t end = offset + data.size();
  auto bytes = [&](uint64_t from, uint64_t to) { return data.subspan(from - offset, to - from); };
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t c = pos / cs_;
    const uint64_t cstart = c * cs_;
    const uint64_t cend = std::min(cstart + cs_, end);
    Result<Entry> e = CurrentEntry(c);
    if (!e.ok()) return e.status();
    if (e->desc & kCompressed) {
      return Error(Code::kUnsupported, "'{}': guest cluster {} is compressed", path_, c);
    }
    // Subclusters written: allocated from now on, no longer zero.
    const uint64_t mask = ext_ ? SubclusterMask(pos - cstart, cend - cstart, granule_) : 0;
    const uint64_t host = e->desc & kOffsetMask;
    if (host != 0) {
      if (!(e->desc & kCopied)) {
        return Error(Code::kUnsupported, "'{}': guest cluster {} is shared (refcount > 1)", path_,
                     c);
      }
      CHAINFS_RETURN_IF_ERROR(WriteInto(host + (pos - cstart), bytes(pos, cend)));
      Entry next =
          ext_ ? Entry{e->desc, (e->bitmap | mask) & ~(mask << 32)} : Entry{host | kCopied, 0};
      if (!(next == *e)) pending_[c] = next;
      ++stats_.data_clusters;
      pos = cend;
      continue;
    }
    if (pos != cstart || cend != cstart + cs_) {
      // Part of a cluster that has no host cluster (extended L2 only): a new
      // one, written only where the data goes; the file is extended to its
      // end at the next Flush.
      const uint64_t at = Allocate(1);
      CHAINFS_RETURN_IF_ERROR(WriteInto(at + (pos - cstart), bytes(pos, cend)));
      pending_[c] = Entry{at | kCopied, (e->bitmap & ~(mask << 32)) | mask};
      new_data_.push_back(at);
      partial_end_ = std::max(partial_end_, at + cs_);
      pending_bytes_ += cend - pos;
      ++stats_.data_clusters;
      pos = cend;
      continue;
    }
    // A run of whole clusters without a host cluster gets one contiguous run
    // at the end of the file, written with one pwrite.
    uint64_t m = 1;
    while (cstart + (m + 1) * cs_ <= end) {
      Result<Entry> next = CurrentEntry(c + m);
      if (!next.ok()) return next.status();
      if ((next->desc & kCompressed) || (next->desc & kOffsetMask) != 0) break;
      ++m;
    }
    const uint64_t at = Allocate(m);
    CHAINFS_RETURN_IF_ERROR(WriteInto(at, bytes(cstart, cstart + m * cs_)));
    StartWriteback(at, m * cs_);
    for (uint64_t k = 0; k < m; ++k) {
      pending_[c + k] = Entry{(at + k * cs_) | kCopied, ext_ ? kAllocBits : 0};
      new_data_.push_back(at + k * cs_);
    }
    pending_bytes_ += m * cs_;
    stats_.data_clusters += m;
    pos = cstart + m * cs_;
  }
  if (pending_bytes_ >= options_.max_pending_bytes || pending_.size() >= kMaxPendingClusters) {
    return Flush();
  }
  return Status::Ok();
}

Status Qcow2Writer::WriteZeroClusters(uint64_t offset, uint64_t length) {
  if (failed_) return Error(Code::kIo, "'{}': an earlier write failed", path_);
  CHAINFS_RETURN_IF_ERROR(CheckRange(offset, length, "zero write"));
  if (h_.version < 3) {
    // No zero flag in version 2: write zero-filled clusters.
    const uint64_t step = std::max<uint64_t>(cs_, (1u << 20) / cs_ * cs_);
    std::vector<uint8_t> zeros(std::min(step, length));
    for (uint64_t done = 0; done < length;) {
      const uint64_t n = std::min<uint64_t>(zeros.size(), length - done);
      CHAINFS_RETURN_IF_ERROR(WriteClusters(offset + done, std::span(zeros).first(n)));
      done += n;
    }
    return Status::Ok();
  }
  const uint64_t end = offset + length;
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t c = pos / cs_;
    const uint64_t cstart = c * cs_;
    const uint64_t cend = std::min(cstart + cs_, end);
    Result<Entry> e = CurrentEntry(c);
    if (!e.ok()) return e.status();
    if (e->desc & kCompressed) {
      return Error(Code::kUnsupported, "'{}': guest cluster {} is compressed", path_, c);
    }
    const uint64_t host = e->desc & kOffsetMask;
    if (host != 0 && !(e->desc & kCopied)) {
      return Error(Code::kUnsupported, "'{}': guest cluster {} is shared (refcount > 1)", path_, c);
    }
    if (ext_) {
      // The zero bits of the covered subclusters; a host cluster stays.
      const uint64_t mask = SubclusterMask(pos - cstart, cend - cstart, granule_);
      pending_[c] = Entry{e->desc, (e->bitmap & ~mask) | (mask << 32)};
    } else {
      // A cluster with a host cluster keeps it (a preallocated zero cluster).
      pending_[c] = Entry{host != 0 ? (host | kCopied | kZeroFlag) : kZeroFlag, 0};
    }
    ++stats_.zero_clusters;
    pos = cend;
  }
  if (pending_.size() >= kMaxPendingClusters) return Flush();
  return Status::Ok();
}

uint64_t Qcow2Writer::GetRefcount(const std::vector<uint8_t>& block, uint64_t index) const {
  const uint32_t bits = h_.refcount_bits();
  if (bits >= 8) {
    const uint32_t bytes = bits / 8;
    const uint8_t* p = block.data() + index * bytes;
    uint64_t v = 0;
    for (uint32_t k = 0; k < bytes; ++k) v = v << 8 | p[k];
    return v;
  }
  const uint64_t bit = index * bits;
  return (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

void Qcow2Writer::SetRefcount(std::vector<uint8_t>& block, uint64_t index, uint64_t value) const {
  const uint32_t bits = h_.refcount_bits();
  if (bits >= 8) {
    const uint32_t bytes = bits / 8;
    uint8_t* p = block.data() + index * bytes;
    for (uint32_t k = bytes; k-- > 0;) {
      p[k] = uint8_t(value);
      value >>= 8;
    }
    return;
  }
  const uint64_t bit = index * bits;
  const uint8_t mask = uint8_t(((1u << bits) - 1) << (bit % 8));
  block[bit / 8] = uint8_t((block[bit / 8] & ~mask) | ((value << (bit % 8)) & mask));
}

Result<std::vector<uint8_t>*> Qcow2Writer::RefBlock(
    uint64_t block_index, std::map<uint64_t, std::vector<uint8_t>>& blocks,
    const std::map<uint64_t, uint64_t>& new_blocks) {
  auto it = blocks.find(block_index);
  if (it != blocks.end()) return &it->second;
  std::vector<uint8_t> content;
  if (new_blocks.count(block_index)) {
    content.assign(cs_, 0);
  } else {
    const uint64_t e = block_index < reftable_.size() ? reftable_[block_index] : 0;
    if (e & kRefTableReserved) {
      return Error(Code::kCorrupt, "'{}': refcount table entry {} is misaligned", path_,
                   block_index);
    }
    if (e == 0) {
      return Error(Code::kCorrupt, "'{}': refcount block {} is missing", path_, block_index);
    }
    CHAINFS_RETURN_IF_ERROR(ReadCluster(e, content, "refcount block"));
  }
  return &blocks.emplace(block_index, std::move(content)).first->second;
}

Status Qcow2Writer::UpdateRefcounts(const std::vector<uint64_t>& clusters) {
  // Plan: which refcount blocks are missing (each new block is itself a new
  // cluster needing a refcount), and whether the table must grow.
  std::map<uint64_t, uint64_t> new_blocks;  // block index -> host offset
  std::vector<uint64_t> all = clusters;
  uint64_t table_entries = reftable_.size();
  std::optional<uint64_t> new_table;
  uint64_t new_table_clusters = 0;
  size_t planned = 0;
  for (;;) {
    for (; planned < all.size(); ++planned) {
      const uint64_t blk = (all[planned] >> cbits_) / refblock_entries_;
      const bool have = (blk < reftable_.size() && reftable_[blk] != 0) || new_blocks.count(blk);
      if (have) continue;
      const uint64_t host = Allocate(1);
      new_blocks[blk] = host;
      all.push_back(host);
    }
    if (new_blocks.empty() || new_blocks.rbegin()->first < table_entries) break;
    if (new_table) {
      return Error(Code::kUnsupported, "'{}': the refcount table would have to grow twice", path_);
    }
    // Grow with headroom so that the new table's own clusters (and the
    // blocks covering them) fit without a second growth.
    const uint64_t need = new_blocks.rbegin()->first + 1;
    new_table_clusters = 2 * CeilDiv(need * 8, cs_) + 1;
    if (new_table_clusters * cs_ > kQcow2MaxRefTableBytes) {
      return Error(Code::kNoSpace, "'{}': the refcount table would exceed qemu's limit", path_);
    }
    new_table = Allocate(new_table_clusters);
    table_entries = new_table_clusters * cs_ / 8;
    for (uint64_t c = 0; c < new_table_clusters; ++c) all.push_back(*new_table + c * cs_);
  }

  // Set refcount 1 on every new cluster; each must have been free.
  std::map<uint64_t, std::vector<uint8_t>> blocks;
  for (uint64_t c : all) {
    const uint64_t cluster = c >> cbits_;
    Result<std::vector<uint8_t>*> b = RefBlock(cluster / refblock_entries_, blocks, new_blocks);
    if (!b.ok()) return b.status();
    const uint64_t idx = cluster % refblock_entries_;
    if (uint64_t old = GetRefcount(**b, idx); old != 0) {
      return Error(Code::kCorrupt,
                   "'{}': cluster {:#x} past the end of the used area already has refcount {}",
                   path_, c, old);
    }
    SetRefcount(**b, idx, 1);
  }
  // Blocks first (new ones are not referenced yet; existing ones only gain
  // counts), then the table entries that make new blocks reachable.
  for (const auto& [blk, content] : blocks) {
    auto nb = new_blocks.find(blk);
    const uint64_t host = nb != new_blocks.end() ? nb->second : reftable_[blk];
    CHAINFS_RETURN_IF_ERROR(PwriteAll(fd_, content, host, path_, "refcount block"));
  }
  if (!new_blocks.empty()) CHAINFS_RETURN_IF_ERROR(Sync());
  stats_.refcount_blocks += new_blocks.size();
  if (new_table) {
    std::vector<uint64_t> table(table_entries, 0);
    std::copy(reftable_.begin(), reftable_.end(), table.begin());
    for (const auto& [blk, host] : new_blocks) table[blk] = host;
    CHAINFS_RETURN_IF_ERROR(PwriteAll(fd_, EncodeEntries(table, 0, table.size() - 1), *new_table,
                                      path_, "refcount table"));
    CHAINFS_RETURN_IF_ERROR(Sync());
    uint8_t field[12];
    StoreBe64(field, *new_table);
    StoreBe32(field + 8, uint32_t(new_table_clusters));
    CHAINFS_RETURN_IF_ERROR(PwriteAll(fd_, field, kQcow2OffRefcountTableOffset, path_, "header"));
    CHAINFS_RETURN_IF_ERROR(Sync());
    const uint64_t old_offset = h_.refcount_table_offset;
    const uint64_t old_clusters = h_.refcount_table_clusters;
    h_.refcount_table_offset = *new_table;
    h_.refcount_table_clusters = uint32_t(new_table_clusters);
    reftable_ = std::move(table);
    ++stats_.table_grows;
    // Free the old table; a crash before this only leaks it.
    std::map<uint64_t, std::vector<uint8_t>> freed;
    for (uint64_t k = 0; k < old_clusters; ++k) {
      const uint64_t cluster = (old_offset >> cbits_) + k;
      Result<std::vector<uint8_t>*> b = RefBlock(cluster / refblock_entries_, freed, {});
      if (!b.ok()) return b.status();
      if (GetRefcount(**b, cluster % refblock_entries_) == 1) {
        SetRefcount(**b, cluster % refblock_entries_, 0);
      }
    }
    for (const auto& [blk, content] : freed) {
      CHAINFS_RETURN_IF_ERROR(PwriteAll(fd_, content, reftable_[blk], path_, "refcount block"));
    }
  } else if (!new_blocks.empty()) {
    for (const auto& [blk, host] : new_blocks) reftable_[blk] = host;
    const size_t lo = size_t(new_blocks.begin()->first);
    const size_t hi = size_t(new_blocks.rbegin()->first);
    CHAINFS_RETURN_IF_ERROR(PwriteAll(fd_, EncodeEntries(reftable_, lo, hi),
                                      h_.refcount_table_offset + lo * 8, path_, "refcount table"));
  }
  return Sync();
}

Status Qcow2Writer::Flush() {
  if (failed_) return Error(Code::kIo, "'{}': an earlier write failed", path_);
  if (pending_.empty() && new_data_.empty()) return Status::Ok();
  Status s = [&]() -> Status {
    // 1. The data is on disk before anything points at it; a new cluster
    // written only in part lies inside the file.
    if (partial_end_ != 0) {
      struct stat st;
      if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, fmt::format("stat {}", path_));
      if (uint64_t(st.st_size) < partial_end_ && ::ftruncate(fd_, off_t(partial_end_)) != 0) {
        return Status::FromErrno(errno, fmt::format("extend {}", path_));
      }
    }
    CHAINFS_RETURN_IF_ERROR(Sync());
    // New L2 tables for L1 entries that have none.
    std::map<uint64_t, uint64_t> new_l2;
    for (const auto& [gc, e] : pending_) {
      const uint64_t l1i = gc / l2_entries_;
      if ((l1_[l1i] & kOffsetMask) == 0 && !new_l2.count(l1i)) new_l2[l1i] = Allocate(1);
    }
    // 2. Refcounts of every new cluster.
    std::vector<uint64_t> fresh = new_data_;
    for (const auto& [l1i, host] : new_l2) fresh.push_back(host);
    CHAINFS_RETURN_IF_ERROR(UpdateRefcounts(fresh));
    stats_.l2_tables += new_l2.size();
    // 3. L2 entries, table by table (pending_ is ordered by guest cluster).
    for (auto it = pending_.begin(); it != pending_.end();) {
      const uint64_t l1i = it->first / l2_entries_;
      auto nl = new_l2.find(l1i);
      L2* table = nullptr;
      if (nl != new_l2.end()) {
        table = &l2_cache_.insert_or_assign(l1i, L2(l2_entries_)).first->second;
      } else {
        Result<L2*> t = L2Table(l1i);
        if (!t.ok()) return t.status();
        table = *t;
      }
      size_t lo = SIZE_MAX, hi = 0;
      for (; it != pending_.end() && it->first / l2_entries_ == l1i; ++it) {
        const size_t idx = size_t(it->first % l2_entries_);
        (*table)[idx] = it->second;
        lo = std::min(lo, idx);
        hi = std::max(hi, idx);
      }
      if (nl != new_l2.end()) {
        CHAINFS_RETURN_IF_ERROR(
            PwriteAll(fd_, EncodeL2(*table, 0, table->size() - 1), nl->second, path_, "L2 table"));
      } else {
        CHAINFS_RETURN_IF_ERROR(PwriteAll(fd_, EncodeL2(*table, lo, hi),
                                          (l1_[l1i] & kOffsetMask) + lo * entry_bytes_, path_,
                                          "L2 table"));
      }
    }
    CHAINFS_RETURN_IF_ERROR(Sync());
    // 4. L1 entries of the new tables.
    if (!new_l2.empty()) {
      for (const auto& [l1i, host] : new_l2) l1_[l1i] = host | kCopied;
      const size_t lo = size_t(new_l2.begin()->first);
      const size_t hi = size_t(new_l2.rbegin()->first);
      CHAINFS_RETURN_IF_ERROR(PwriteAll(fd_, EncodeEntries(l1_, lo, hi),
                                        h_.l1_table_offset + lo * 8, path_, "L1 table"));
      CHAINFS_RETURN_IF_ERROR(Sync());
    }
    return Status::Ok();
  }();
  if (!s.ok()) {
    failed_ = true;
    return s;
  }
  pending_.clear();
  new_data_.clear();
  pending_bytes_ = 0;
  partial_end_ = 0;
  ++stats_.flushes;
  // Bound memory: tables are re-read on demand.
  if (l2_cache_.size() * cs_ > (32ull << 20)) l2_cache_.clear();
  return Status::Ok();
}

}  // namespace chainfs::core
