#include "fs/wedge_guardian.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace chainfs::fs {

namespace {

// How often the guardian looks, and how many looks in a row the daemon must
// be in the wedged state before the connection is aborted.
constexpr long kPollNs = 200L * 1000 * 1000;
constexpr int kWedgedLooks = 5;

// Reads up to `size - 1` bytes of `path` into `buf` (NUL-terminated);
// returns the length or -1. Async-signal-safe (no allocation).
ssize_t ReadSmallFile(const char* path, char* buf, size_t size) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = ::read(fd, buf, size - 1);
  ::close(fd);
  if (n < 0) return -1;
  buf[n] = '\0';
  return n;
}

// Writes "/proc/PID/LEAF" into `out`.
void ProcPath(char* out, size_t size, pid_t pid, const char* leaf) {
  char digits[24];
  size_t nd = 0;
  unsigned long v = static_cast<unsigned long>(pid);
  do {
    digits[nd++] = char('0' + v % 10);
    v /= 10;
  } while (v != 0 && nd < sizeof(digits));
  size_t k = 0;
  auto put = [&](char c) {
    if (k + 1 < size) out[k++] = c;
  };
  for (const char* p = "/proc/"; *p; ++p) put(*p);
  while (nd > 0) put(digits[--nd]);
  put('/');
  for (const char* p = leaf; *p; ++p) put(*p);
  out[k] = '\0';
}

// Returns true if `pid`'s main thread has exited (state Z or X in
// /proc/PID/stat) while the process still has another thread
// ("Threads: N" > 1 in /proc/PID/status): the state a thread blocked in
// the kernel leaves a killed process in.
bool Wedged(pid_t pid) {
  char path[64];
  char buf[1024];
  ProcPath(path, sizeof(path), pid, "stat");
  if (ReadSmallFile(path, buf, sizeof(buf)) <= 0) return false;
  const char* close_paren = nullptr;
  for (const char* p = buf; *p; ++p) {
    if (*p == ')') close_paren = p;  // the name may hold ')': take the last
  }
  if (close_paren == nullptr || close_paren[1] != ' ') return false;
  char state = close_paren[2];
  if (state != 'Z' && state != 'X') return false;
  ProcPath(path, sizeof(path), pid, "status");
  if (ReadSmallFile(path, buf, sizeof(buf)) <= 0) return false;
  const char* key = "Threads:";
  for (const char* p = buf; *p; ++p) {
    const char* a = p;
    const char* b = key;
    while (*b && *a == *b) ++a, ++b;
    if (*b != '\0') continue;
    while (*a == ' ' || *a == '\t') ++a;
    long threads = 0;
    while (*a >= '0' && *a <= '9') threads = threads * 10 + (*a++ - '0');
    return threads > 1;
  }
  return false;
}

[[noreturn]] void GuardianMain(pid_t daemon, const char* mountpoint) {
  int looks = 0;
  struct timespec pause = {0, kPollNs};
  while (true) {
    ::nanosleep(&pause, nullptr);
    // The daemon's last thread is gone: we were handed to another parent.
    if (::getppid() != daemon) ::_exit(0);
    looks = Wedged(daemon) ? looks + 1 : 0;
    if (looks >= kWedgedLooks) {
      // Aborts this mount's FUSE connection (umount_begin), whether or not
      // the unmount itself then succeeds.
      ::umount2(mountpoint, MNT_FORCE);
      looks = 0;
    }
  }
}

}  // namespace

pid_t StartWedgeGuardian(const std::string& mountpoint) {
  pid_t daemon = ::getpid();
  const char* where = mountpoint.c_str();  // stays valid in the child's copy
  pid_t pid = ::fork();
  if (pid != 0) return pid;  // parent (or -1)
  // No descriptor of the daemon's: above all not /dev/fuse, whose last
  // close is what ends a dead daemon's connection.
  ::close_range(0, ~0U, 0);
  ::prctl(PR_SET_NAME, "chainfs-guard", 0, 0, 0);
  // No PR_SET_PDEATHSIG: it fires when the forking thread exits, which is
  // exactly what happens when the daemon is wedged.
  if (::getppid() != daemon) ::_exit(0);
  // SIGTERM/SIGINT/SIGHUP sent to the daemon's process group are not ours.
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  GuardianMain(daemon, where);
}

}  // namespace chainfs::fs
