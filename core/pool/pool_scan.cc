#include "core/pool/pool_scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "core/util/escape.h"

namespace chainfs::core {
namespace {

// Names chainfs itself uses in pool folders (temporary files while creating
// an image) start with this, so they never show up as volumes.
constexpr std::string_view kReservedPrefix = ".chainfs";

const char* FileTypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory (not a volume in this pool type)";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  return "not a regular file or block device";
}

// Returns why a name that stat could not follow was left out.
std::string StatFailureReason(int dir_fd, const char* name, int err) {
  if (err == ENOENT) {
    struct stat lst;
    if (::fstatat(dir_fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode)) {
      return "dangling symbolic link";
    }
    return "vanished while scanning";
  }
  if (err == ELOOP) return "too many levels of symbolic links";
  if (err == EACCES) return "unreadable: permission denied";
  return fmt::format("cannot stat: {}", std::strerror(err));
}

}  // namespace

bool PoolListsDirectories(std::string_view pool_type) {
  return pool_type == "dir" || pool_type == "fs" || pool_type == "netfs";
}

Chain DirVolumeChain(const VolumeEntry& entry) {
  ChainElement top;
  top.index = 0;
  top.path = entry.path;
  top.format = "dir";
  top.format_source = FormatSource::kProbed;
  top.stat = entry.stat;
  // libvirt reports no size for a directory: capacity, allocation and
  // physical are all 0, whatever st_blocks says.
  top.stat->allocation = 0;
  auto meta = std::make_shared<ImageMeta>();
  meta->format = "dir";
  meta->virtual_size = 0;
  top.meta = std::move(meta);
  Chain chain;
  chain.elements.push_back(std::move(top));
  chain.complete = true;
  return chain;
}

bool IsAcceptableVolumeName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  if (name.substr(0, kReservedPrefix.size()) == kReservedPrefix) return false;
  for (char c : name) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '/' || u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

// Hidden files (".name") are listed: libvirt's refresh lists every entry but
// "." and "..", and a pool is the administrator's folder, not ours; only
// chainfs's own ".chainfs*" temporaries are left out. A subdirectory is a
// volume as libvirt's dir backend (shared by fs and netfs) makes it one: it
// opens each entry read-only, so a folder it could open is listed, one level
// deep (volumes are not recursive).
PoolScan ScanPool(const PoolDef& pool) {
  PoolScan scan;
  if (pool.target_path.empty()) {
    scan.status = Error(Code::kInvalidArgument, "pool '{}' has no target path", pool.name);
    return scan;
  }
  int dir_fd = ::open(pool.target_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    int err = errno;
    scan.status = Status::FromErrno(
        err, fmt::format("cannot open pool '{}' at '{}': {}", pool.name, pool.target_path,
                         std::strerror(err)));
    return scan;
  }
  DIR* dir = ::fdopendir(dir_fd);
  if (!dir) {
    int err = errno;
    ::close(dir_fd);
    scan.status = Status::FromErrno(
        err, fmt::format("cannot read pool '{}' at '{}': {}", pool.name, pool.target_path,
                         std::strerror(err)));
    return scan;
  }
  const std::string prefix = pool.target_path == "/" ? "/" : pool.target_path + "/";
  const bool list_dirs = PoolListsDirectories(pool.type);
  while (true) {
    errno = 0;
    dirent* entry = ::readdir(dir);
    if (!entry) {
      int err = errno;
      if (err != 0) {
        scan.status = Status::FromErrno(
            err, fmt::format("error reading pool '{}' at '{}': {}", pool.name,
                             pool.target_path, std::strerror(err)));
      }
      break;
    }
    std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    std::string path = prefix + std::string(name);
    if (!IsAcceptableVolumeName(name)) {
      // Keep control characters out of the log line too.
      std::string shown = EscapeOneLine(path);
      const char* reason = name.substr(0, kReservedPrefix.size()) == kReservedPrefix
                               ? "reserved for chainfs"
                               : "name contains control characters";
      scan.skipped.push_back(fmt::format("{}: {}", shown, reason));
      continue;
    }
    struct stat st;
    if (::fstatat(dir_fd, entry->d_name, &st, 0) != 0) {
      int err = errno;
      scan.skipped.push_back(
          fmt::format("{}: {}", path, StatFailureReason(dir_fd, entry->d_name, err)));
      continue;
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode) && !(list_dirs && S_ISDIR(st.st_mode))) {
      scan.skipped.push_back(fmt::format("{}: {}", path, FileTypeName(st.st_mode)));
      continue;
    }
    if (::faccessat(dir_fd, entry->d_name, R_OK, AT_EACCESS) != 0) {
      int err = errno;
      scan.skipped.push_back(fmt::format("{}: unreadable: {}", path, std::strerror(err)));
      continue;
    }
    VolumeEntry volume;
    volume.name = std::string(name);
    volume.path = std::move(path);
    volume.stat = FromStat(st);
    scan.volumes.push_back(std::move(volume));
  }
  ::closedir(dir);  // also closes dir_fd
  std::sort(scan.volumes.begin(), scan.volumes.end(),
            [](const VolumeEntry& a, const VolumeEntry& b) { return a.name < b.name; });
  return scan;
}

}  // namespace chainfs::core
