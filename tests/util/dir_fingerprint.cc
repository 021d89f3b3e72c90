#include "util/dir_fingerprint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

namespace chainfs::testutil {

std::map<std::string, std::string> DirectoryFingerprint(const std::string& dir) {
  std::map<std::string, std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;
    uint64_t h = 1469598103934665603ull;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
      std::vector<char> buf(1 << 16);
      ssize_t n;
      while ((n = ::read(fd, buf.data(), buf.size())) > 0) {
        for (ssize_t i = 0; i < n; ++i) h = (h ^ uint8_t(buf[i])) * 1099511628211ull;
      }
      ::close(fd);
    }
    out[name] =
        std::to_string(st.st_size) + ":" + std::to_string(h) + ":" + std::to_string(st.st_mode);
  }
  ::closedir(d);
  return out;
}

}  // namespace chainfs::testutil
