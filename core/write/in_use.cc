#include "core/write/in_use.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <initializer_list>

namespace chainfs::core {
namespace {

// A byte range that QEMU or libvirt locks.
struct LockRange {
  off_t start;
  off_t length;
};

// Byte 0: virtlockd. 100..: QEMU permission bits; 200..: QEMU "not shared"
// bits. QEMU uses a handful of bits; the ranges leave room for more.
constexpr LockRange kLockRanges[] = {{0, 1}, {100, 64}, {200, 64}};

// Returns true when the error means "this file system has no such locks".
bool LocksUnsupported(int e) {
  return e == EINVAL || e == ENOSYS || e == ENOLCK || e == EOPNOTSUPP;
}

// Owns a descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reports whether another open file description holds a lock on any of
// `ranges` of `fd`.
Result<bool> AnyLockHeld(int fd, std::initializer_list<LockRange> ranges) {
  for (const LockRange& r : ranges) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = r.start;
    fl.l_len = r.length;
    fl.l_pid = 0;  // required 0 for OFD locks
    if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) {
      int e = errno;
      if (LocksUnsupported(e)) return false;
      return Status::FromErrno(e, "F_OFD_GETLK");
    }
    if (fl.l_type != F_UNLCK) return true;
  }
  return false;
}

// Opens `path` read-only, non-blocking, and runs `probe` on it.
Result<bool> ProbeImage(const std::string& path, Result<bool> (*probe)(int fd)) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) return Status::FromErrno(errno, "open " + path);
  return probe(fd.get());
}

// QEMU's byte for BLK_PERM_WRITE (bit 1 above its permission base, 100).
constexpr LockRange kWritePermByte{101, 1};

}  // namespace

Result<bool> FdInUse(int fd) {
  return AnyLockHeld(fd, {kLockRanges[0], kLockRanges[1], kLockRanges[2]});
}

Result<bool> FdHeldForWriting(int fd) { return AnyLockHeld(fd, {kLockRanges[0], kWritePermByte}); }

Result<bool> ImageHeldForWriting(const std::string& path) { return ProbeImage(path, FdHeldForWriting); }

std::vector<int> ElementsHeldForWriting(const Chain& chain, size_t from) {
  std::vector<int> held;
  for (size_t i = from; i < chain.elements.size(); ++i) {
    const ChainElement& e = chain.elements[i];
    if (e.network || !e.stat) continue;
    Result<bool> writing = ImageHeldForWriting(e.path);
    if (writing.ok() && *writing) held.push_back(e.index);
  }
  return held;
}

Result<bool> ImageInUse(const std::string& path) { return ProbeImage(path, FdInUse); }

Status CheckNotInUse(const std::string& path) {
  Result<bool> busy = ImageInUse(path);
  if (!busy.ok()) return busy.status();
  if (*busy) {
    return Error(Code::kBusy, "'{}' is in use: a QEMU process holds its image locks", path);
  }
  return Status::Ok();
}

Status LockForUpdate(int fd, const std::string& path) {
  for (const LockRange& r : kLockRanges) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = r.start;
    fl.l_len = r.length;
    fl.l_pid = 0;
    if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
      int e = errno;
      if (LocksUnsupported(e)) return Status::Ok();
      if (e == EAGAIN || e == EACCES) {
        return Error(Code::kBusy, "'{}' is in use: a QEMU process holds its image locks", path);
      }
      return Status::FromErrno(e, "F_OFD_SETLK " + path);
    }
  }
  return Status::Ok();
}

}  // namespace chainfs::core
