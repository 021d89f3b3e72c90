#include "core/data/block_map_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/data/raw_reader.h"
#include "core/io/file.h"
#include "core/util/endian.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kPageBytes = 4096;
// 4 MiB of table pages and 4 MiB of inflated units per image at most.
constexpr size_t kTablePages = 1024;
constexpr uint64_t kInflatedBytes = 4ull << 20;  // the largest unit inflated
constexpr size_t kInflatedUnits = 16;
// The most table entries one GetStatus merges: bounds its latency on huge
// images; the map iterator merges across calls anyway.
constexpr int kMaxMergedUnits = 1 << 16;
// Host file indexes live in the top bits of cache keys.
constexpr unsigned kFileShift = 56;

// Narrows `st` (a data range at a host offset of `r`) to its first run of
// data or holes, when `r` is a file that can tell (SEEK_DATA/SEEK_HOLE, as
// qemu's file driver). Returns true when that run is a hole.
bool NarrowToHoles(const Reader& r, uint64_t host, uint64_t& length) {
  const auto* f = dynamic_cast<const File*>(&r);
  if (f == nullptr) return false;
  if (host >= f->Size()) return true;
  off_t data = ::lseek(f->fd(), off_t(host), SEEK_DATA);
  if (data < 0) return errno == ENXIO;  // ENXIO: a hole to the end
  if (uint64_t(data) > host) {
    length = std::min<uint64_t>(length, uint64_t(data) - host);
    return true;
  }
  off_t hole = ::lseek(f->fd(), off_t(host), SEEK_HOLE);
  if (hole > 0 && uint64_t(hole) > host) length = std::min<uint64_t>(length, uint64_t(hole) - host);
  return false;
}

}  // namespace

Result<ImageMeta> ParseForData(std::string_view format, const Reader& image,
                               const std::string& path) {
  const FormatDriver* driver = FindDriver(format);
  if (driver == nullptr) return Error(Code::kUnsupported, "unknown format {}", format);
  Result<ImageMeta> m = driver->Parse(image);
  if (!m.ok()) {
    return Status(m.status().code(), fmt::format("'{}': {}", path, m.status().message()));
  }
  if (m->format != format) {
    return Error(Code::kCorrupt, "'{}' is not a {} image", path, format);
  }
  return m;
}

BlockMapReader::BlockMapReader(std::string path, std::unique_ptr<Reader> image, uint64_t size)
    : size_(size), tables_(kTablePages), inflated_(kInflatedUnits) {
  files_.push_back({std::move(path), std::move(image)});
}

std::vector<std::string> BlockMapReader::OtherFiles() const {
  std::vector<std::string> out;
  for (size_t i = 1; i < files_.size(); ++i) out.push_back(files_[i].path);
  return out;
}

size_t BlockMapReader::AddFile(std::string path, std::unique_ptr<Reader> reader) {
  files_.push_back({std::move(path), std::move(reader)});
  return files_.size() - 1;
}

Result<uint64_t> BlockMapReader::LoadEntry(size_t file, uint64_t offset, unsigned width,
                                           bool big_endian, std::string_view what) const {
  const Reader& r = *files_[file].reader;
  if (!RangeWithin(offset, width, r.Size())) {
    return Error(Code::kCorrupt, "'{}': {} at {:#x} lies past the end of the file",
                 files_[file].path, what, offset);
  }
  uint8_t bytes[8];
  const uint64_t page = offset & ~(kPageBytes - 1);
  if (offset - page + width > kPageBytes) {  // straddles two pages: read it directly
    CHAINFS_RETURN_IF_ERROR(ReadExact(r, offset, std::span(bytes, width), what));
  } else {
    const uint64_t key = (uint64_t{file} << kFileShift) | page;
    L2Cache::Block b = tables_.Find(key);
    if (!b) {
      Result<std::vector<uint8_t>> raw =
          ReadVector(r, page, std::min(kPageBytes, r.Size() - page), kPageBytes, what);
      if (!raw.ok()) return raw.status();
      b = tables_.Insert(key, std::make_shared<const std::vector<uint8_t>>(std::move(*raw)));
    }
    std::memcpy(bytes, b->data() + (offset - page), width);
  }
  if (width == 4) return uint64_t{big_endian ? LoadBe32(bytes) : LoadLe32(bytes)};
  return big_endian ? LoadBe64(bytes) : LoadLe64(bytes);
}

Result<size_t> BlockMapReader::Inflate(std::span<const uint8_t>, std::span<uint8_t>) const {
  return Error(Code::kUnsupported, "'{}': compressed data is not supported", path());
}

Result<BlockStatus> BlockMapReader::GetStatus(uint64_t offset, uint64_t length,
                                              bool want_zero) const {
  BlockStatus st;
  st.start = offset;
  if (offset >= size_ || length == 0) return st;
  const uint64_t end = offset + std::min(length, size_ - offset);
  Result<Unit> first = Classify(offset);
  if (!first.ok()) return first.status();
  if (first->end <= offset) {
    return Error(Code::kCorrupt, "'{}': no progress at guest offset {:#x}", path(), offset);
  }
  st.allocation = first->allocation;
  st.host_offset = first->host;
  if (first->file != 0) st.host_path = &files_[first->file].path;
  if (first->compressed) {
    st.compressed = true;
    st.compressed_offset = first->coffset;
    st.compressed_size = first->csize;
    st.length = std::min(first->end, end) - offset;
    return st;
  }
  uint64_t pos = std::min(first->end, end);
  for (int merged = 1; pos < end && merged < kMaxMergedUnits; ++merged) {
    Result<Unit> next = Classify(pos);
    if (!next.ok()) break;  // the part described is fine; the error shows on the next call
    if (next->allocation != first->allocation || next->compressed || next->end <= pos ||
        next->file != first->file || next->holes != first->holes ||
        next->host.has_value() != first->host.has_value()) {
      break;
    }
    if (first->host && *next->host != *first->host + (pos - offset)) break;
    pos = std::min(next->end, end);
  }
  st.length = pos - offset;
  if (want_zero && first->holes != Holes::kIgnore && st.allocation == Allocation::kData &&
      st.host_offset) {
    if (NarrowToHoles(*files_[first->file].reader, *st.host_offset, st.length)) {
      if (first->holes == Holes::kZero) {
        st.allocation = Allocation::kZero;
      } else {
        st.reads_zero = true;
      }
    }
  }
  return st;
}

size_t BlockMapReader::FileOf(const BlockStatus& st) const {
  if (st.host_path == nullptr) return 0;
  for (size_t i = 0; i < files_.size(); ++i) {
    if (&files_[i].path == st.host_path) return i;
  }
  return 0;
}

Result<L2Cache::Block> BlockMapReader::LoadUnit(const BlockStatus& st, size_t file) const {
  const uint64_t key = (uint64_t{file} << kFileShift) | st.compressed_offset;
  if (L2Cache::Block b = inflated_.Find(key)) return b;
  const Reader& r = *files_[file].reader;
  if (st.compressed_offset >= r.Size()) {
    return Error(Code::kCorrupt, "'{}': compressed data at {:#x} lies past the end of the file",
                 files_[file].path, st.compressed_offset);
  }
  // Compressed data may end in padding past the end of the file.
  const uint64_t take = std::min(st.compressed_size, r.Size() - st.compressed_offset);
  std::vector<uint8_t> in(take);
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, st.compressed_offset, in, "compressed data"));
  std::vector<uint8_t> out(compressed_unit_bytes_);
  Result<size_t> n = Inflate(in, out);
  if (!n.ok()) {
    return Status(n.status().code(),
                  fmt::format("'{}': compressed data at {:#x}: {}", files_[file].path,
                              st.compressed_offset, n.status().message()));
  }
  out.resize(*n);
  return inflated_.Insert(key, std::make_shared<const std::vector<uint8_t>>(std::move(out)));
}

Status BlockMapReader::ReadData(uint64_t offset, const BlockStatus& st,
                                std::span<uint8_t> out) const {
  if (offset < st.start || out.size() > st.length || offset - st.start > st.length - out.size()) {
    return Error(Code::kInvalidArgument, "read at {} length {} outside the status range", offset,
                 out.size());
  }
  const size_t file = FileOf(st);
  if (st.compressed) {
    if (compressed_unit_bytes_ == 0 || compressed_unit_bytes_ > kInflatedBytes) {
      return Error(Code::kUnsupported, "'{}': compressed data is not supported", path());
    }
    Result<L2Cache::Block> unit = LoadUnit(st, file);
    if (!unit.ok()) return unit.status();
    const uint64_t in_unit = offset % compressed_unit_bytes_;
    if (in_unit + out.size() > (*unit)->size()) {
      return Error(Code::kCorrupt,
                   "'{}': compressed data at {:#x} inflates to {} bytes, too few for guest "
                   "offset {:#x}",
                   files_[file].path, st.compressed_offset, (*unit)->size(), offset);
    }
    std::memcpy(out.data(), (*unit)->data() + in_unit, out.size());
    return Status::Ok();
  }
  if (!st.host_offset) return Error(Code::kInvalidArgument, "read of a range with no host offset");
  return ReadZeroFilled(*files_[file].reader, *st.host_offset + (offset - st.start), out);
}

}  // namespace chainfs::core
