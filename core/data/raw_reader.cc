#include "core/data/raw_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace chainfs::core {

Status ReadZeroFilled(const Reader& file, uint64_t offset, std::span<uint8_t> out) {
  size_t done = 0;
  const uint64_t fsize = file.Size();
  if (offset < fsize) {
    size_t want = size_t(std::min<uint64_t>(out.size(), fsize - offset));
    while (done < want) {
      Result<size_t> n = file.ReadAt(offset + done, out.subspan(done, want - done));
      if (!n.ok()) return n.status();
      if (*n == 0) break;  // the file shrank since it was opened
      done += *n;
    }
  }
  if (done < out.size()) std::memset(out.data() + done, 0, out.size() - done);
  return Status::Ok();
}

RawReader::RawReader(std::string path, File file)
    : path_(std::move(path)),
      file_(std::move(file)),
      size_(RawVirtualSize(file_.Size())) {}

Result<std::unique_ptr<RawReader>> RawReader::Open(const std::string& path) {
  Result<File> f = File::OpenRead(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<RawReader>(new RawReader(path, std::move(*f)));
}

Result<BlockStatus> RawReader::GetStatus(uint64_t offset, uint64_t length, bool want_zero) const {
  BlockStatus st;
  st.start = offset;
  st.length = std::min(length, size_ - std::min(offset, size_));
  st.allocation = Allocation::kData;
  st.host_offset = offset;
  if (!want_zero) return st;
  const uint64_t fsize = file_.Size();
  if (offset >= fsize) {  // the rounded-up tail of the last sector
    st.allocation = Allocation::kZero;
    return st;
  }
  // lseek(SEEK_DATA/SEEK_HOLE) moves the shared file position, which nothing
  // else uses (every read is a pread), so concurrent callers are harmless.
  off_t data = ::lseek(file_.fd(), off_t(offset), SEEK_DATA);
  if (data < 0) {
    int err = errno;
    if (err == ENXIO) {  // a hole up to the end of the file
      st.allocation = Allocation::kZero;
      return st;
    }
    return st;  // no information: everything is data
  }
  if (uint64_t(data) > offset) {
    st.allocation = Allocation::kZero;
    st.length = std::min<uint64_t>(st.length, uint64_t(data) - offset);
    return st;
  }
  off_t hole = ::lseek(file_.fd(), off_t(offset), SEEK_HOLE);
  if (hole < 0 || uint64_t(hole) <= offset) return st;
  st.length = std::min<uint64_t>(st.length, uint64_t(hole) - offset);
  return st;
}

Status RawReader::ReadData(uint64_t offset, const BlockStatus&, std::span<uint8_t> out) const {
  return ReadZeroFilled(file_, offset, out);
}

}  // namespace chainfs::core
