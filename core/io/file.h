// File: an RAII file descriptor that is also a Reader, plus stat helpers.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "core/io/reader.h"

namespace chainfs::core {

// Identifies one version of a file: a cache key for parsed metadata.
struct FileIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};

// What the engine keeps of a stat(2) result.
struct FileStat {
  FileIdentity id;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t allocation = 0;  // st_blocks * 512
  struct timespec atime {};
  struct timespec mtime {};
  struct timespec ctime {};
  bool IsRegular() const { return S_ISREG(mode); }
  bool IsBlockDevice() const { return S_ISBLK(mode); }
};

// Converts a struct stat.
FileStat FromStat(const struct stat& st);
// Stats `path`, following symlinks. kNotFound / kPermissionDenied / kIo.
Result<FileStat> StatPath(const std::string& path);

// An open file. Move-only; ReadAt is safe for concurrent callers.
class File : public Reader {
 public:
  // Opens read-only with O_CLOEXEC (and O_NOCTTY, O_NONBLOCK off after open
  // so a FIFO cannot hang us: callers check S_ISREG/S_ISBLK first).
  static Result<File> OpenRead(const std::string& path);
  File() = default;
  explicit File(int fd, uint64_t size) : fd_(fd), size_(size) {}
  File(File&& o) noexcept : fd_(o.fd_), size_(o.size_) { o.fd_ = -1; }
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() override;

  int fd() const { return fd_; }
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) const override;
  uint64_t Size() const override { return size_; }
  void Advise(uint64_t offset, uint64_t length) const override;
  // Stats the open descriptor.
  Result<FileStat> Stat() const;

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace chainfs::core
