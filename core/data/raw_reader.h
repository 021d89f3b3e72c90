// RawReader: the guest-visible bytes of a raw image are the file's bytes.
// The virtual size is the file size rounded up to 512 bytes, as qemu reports
// it; bytes past the end of the file read as zeros.
//
// Thread-safety: immutable after Open; safe for concurrent callers.
#pragma once

#include <memory>
#include <string>

#include "core/data/image_reader.h"
#include "core/io/file.h"

namespace chainfs::core {

class RawReader : public ImageReader {
 public:
  // Opens `path` read-only.
  static Result<std::unique_ptr<RawReader>> Open(const std::string& path);

  uint64_t Size() const override { return size_; }
  // Reports holes as kZero and the rest as kData when `want_zero`
  // (SEEK_DATA/SEEK_HOLE, as qemu's file driver), else everything as kData.
  Result<BlockStatus> GetStatus(uint64_t offset, uint64_t length, bool want_zero) const override;
  Status ReadData(uint64_t offset, const BlockStatus& st, std::span<uint8_t> out) const override;
  const std::string& HostPath(bool) const override { return path_; }
  void AdviseHost(uint64_t host_offset, uint64_t length, bool) const override {
    file_.Advise(host_offset, length);
  }

 private:
  RawReader(std::string path, File file);
  std::string path_;
  File file_;
  uint64_t size_;
};

// Reads `out.size()` bytes at `offset` of `r`, zero-filling what lies past
// its end (as qemu's file driver does). Errors are those of r.ReadAt.
Status ReadZeroFilled(const Reader& r, uint64_t offset, std::span<uint8_t> out);

}  // namespace chainfs::core
