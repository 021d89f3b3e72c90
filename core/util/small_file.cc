#include "core/util/small_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace chainfs::core {

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    return Status::FromErrno(err, "cannot open");
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "cannot stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(Code::kInvalidArgument, "not a regular file");
  }
  if (uint64_t(st.st_size) > max_bytes) {
    ::close(fd);
    return Error(Code::kInvalidArgument, "larger than {} bytes", max_bytes);
  }
  std::string data;
  std::array<char, 65536> buf;
  while (data.size() <= max_bytes) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "cannot read");
    }
    if (n == 0) break;
    data.append(buf.data(), size_t(n));
  }
  ::close(fd);
  if (data.size() > max_bytes) return Error(Code::kInvalidArgument, "larger than {} bytes", max_bytes);
  return data;
}

}  // namespace chainfs::core
