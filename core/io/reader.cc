#include "core/io/reader.h"

#include <algorithm>
#include <cstring>

namespace chainfs::core {

Status ReadExact(const Reader& r, uint64_t offset, std::span<uint8_t> buf, std::string_view what) {
  if (!RangeWithin(offset, buf.size(), r.Size())) {
    return Error(Code::kCorrupt, "{} at offset {} length {} lies past the end of the file ({} bytes)",
                 what, offset, buf.size(), r.Size());
  }
  size_t done = 0;
  while (done < buf.size()) {
    Result<size_t> n = r.ReadAt(offset + done, buf.subspan(done));
    if (!n.ok()) return n.status();
    if (*n == 0) {
      return Error(Code::kCorrupt, "{} at offset {}: file ended early", what, offset + done);
    }
    done += *n;
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ReadVector(const Reader& r, uint64_t offset, uint64_t length,
                                        uint64_t max_length, std::string_view what) {
  if (length > max_length) {
    return Error(Code::kCorrupt, "{} length {} exceeds the limit of {} bytes", what, length, max_length);
  }
  std::vector<uint8_t> out(length);
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, offset, out, what));
  return out;
}

Result<size_t> MemoryReader::ReadAt(uint64_t offset, std::span<uint8_t> buf) const {
  if (offset >= bytes_.size()) return size_t{0};
  size_t n = std::min<uint64_t>(buf.size(), bytes_.size() - offset);
  std::memcpy(buf.data(), bytes_.data() + offset, n);
  return n;
}

}  // namespace chainfs::core
