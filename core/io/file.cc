#include "core/io/file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>

namespace chainfs::core {

FileStat FromStat(const struct stat& st) {
  FileStat s;
  s.id.dev = st.st_dev;
  s.id.ino = st.st_ino;
  s.id.size = uint64_t(st.st_size);
  s.id.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  s.id.ctime_ns = int64_t(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  s.mode = st.st_mode;
  s.uid = st.st_uid;
  s.gid = st.st_gid;
  s.allocation = uint64_t(st.st_blocks) * 512;
  s.atime = st.st_atim;
  s.mtime = st.st_mtim;
  s.ctime = st.st_ctim;
  return s;
}

Result<FileStat> StatPath(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    return Status::FromErrno(err, fmt::format("cannot stat '{}'", path));
  }
  return FromStat(st);
}

Result<File> File::OpenRead(const std::string& path) {
  // O_NONBLOCK so that opening a FIFO never blocks; regular files ignore it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    return Status::FromErrno(err, fmt::format("cannot open '{}'", path));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, fmt::format("cannot stat '{}'", path));
  }
  uint64_t size = uint64_t(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) == 0) size = bytes;
  } else if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(Code::kUnsupported, "'{}' is neither a regular file nor a block device", path);
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return File(fd, size);
}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    size_ = o.size_;
    o.fd_ = -1;
  }
  return *this;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

void File::Advise(uint64_t offset, uint64_t length) const {
  if (fd_ < 0 || length == 0 || offset > uint64_t(std::numeric_limits<off_t>::max())) return;
  (void)::posix_fadvise(fd_, off_t(offset), off_t(std::min<uint64_t>(length, 1ull << 40)),
                        POSIX_FADV_WILLNEED);
}

Result<size_t> File::ReadAt(uint64_t offset, std::span<uint8_t> buf) const {
  for (;;) {
    ssize_t n = ::pread(fd_, buf.data(), buf.size(), off_t(offset));
    if (n >= 0) return size_t(n);
    int err = errno;
    if (err == EINTR) continue;
    return Status::FromErrno(err, fmt::format("read at offset {} failed", offset));
  }
}

Result<FileStat> File::Stat() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) {
    int err = errno;
    return Status::FromErrno(err, "fstat failed");
  }
  return FromStat(st);
}

}  // namespace chainfs::core
