#include "bench/common/bench_util.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <filesystem>
#include <fstream>
#include <thread>

extern char** environ;

namespace chainfs::bench {
namespace {

// Fills `path` with random bytes: `fraction` of a `size`-byte file, in runs
// of 64 KiB..1 MiB at 4 KiB-aligned offsets.
bool Scribble(const std::string& path, uint64_t size, double fraction, uint64_t seed) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> buf((1 << 20) / 8);
  uint64_t written = 0;
  const uint64_t target = uint64_t(double(size) * fraction);
  bool ok = true;
  while (written < target && ok) {
    const uint64_t len = std::min<uint64_t>(size, 65536 * (1 + rng() % 16));
    const uint64_t off = (rng() % ((size - len) / 4096 + 1)) * 4096;
    for (size_t i = 0; i < len / 8; ++i) buf[i] = rng();
    ok = ::pwrite(fd, buf.data(), len, off_t(off)) == ssize_t(len);
    written += len;
  }
  ::close(fd);
  return ok;
}

// Creates `path` holding `bytes` random bytes.
bool RandomFile(const std::string& path, size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> buf(bytes / 8);
  for (uint64_t& v : buf) v = rng();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const bool ok = ::write(fd, buf.data(), bytes) == ssize_t(bytes);
  ::close(fd);
  return ok;
}

// Writes random data over `fraction` of a qcow2 overlay with qemu-io (runs
// of 64 KiB..1 MiB at 4 KiB-aligned offsets, so clusters are partly copied
// up from the backing), taking the bytes from the `sources` files.
bool OverlayWrites(const std::string& path, uint64_t size, double fraction,
                   const std::vector<std::string>& sources, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> argv = {"qemu-io", "-f", "qcow2"};
  uint64_t written = 0;
  while (written < uint64_t(double(size) * fraction)) {
    const uint64_t len = 65536 * (1 + rng() % 16);
    const uint64_t off = (rng() % ((size - len) / 4096)) * 4096;
    argv.insert(argv.end(), {"-c", fmt::format("write -q -s {} {} {}",
                                               sources[rng() % sources.size()], off, len)});
    written += len;
  }
  argv.push_back(path);
  return RunQuiet(argv) == 0;
}

}  // namespace


double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

namespace {

pid_t SpawnWith(const std::vector<std::string>& argv, int out_fd) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

int Wait(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int RunQuiet(const std::vector<std::string>& argv, std::string* capture) {
  if (!capture) {
    pid_t pid = SpawnWith(argv, -1);
    return pid < 0 ? -1 : Wait(pid);
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  pid_t pid = SpawnWith(argv, fds[1]);
  close(fds[1]);
  char buf[65536];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) capture->append(buf, size_t(n));
  close(fds[0]);
  return pid < 0 ? -1 : Wait(pid);
}

pid_t Spawn(const std::vector<std::string>& argv) { return SpawnWith(argv, -1); }

bool DropCaches() {
  sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  if (!f) return false;
  f << "3\n";
  return bool(f.flush());
}

long PeakRssKiB(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

std::string MakeBenchDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp ? tmp : "/var/tmp") + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  return buf.data();
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

Mount::Mount(const std::vector<std::string>& args) {
  mountpoint_ = MakeBenchDir("chainfs-bench-mnt");
#ifdef CHAINFS_BINARY
  std::vector<std::string> argv = {CHAINFS_BINARY, "-f"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(mountpoint_);
  pid_ = Spawn(argv);
  if (pid_ < 0) return;
  std::string probe = mountpoint_ + "/.chainfs/version";
  for (int i = 0; i < 500; ++i) {
    struct stat st;
    if (stat(probe.c_str(), &st) == 0) {
      mounted_ = true;
      return;
    }
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
#endif
}

void Mount::Unmount() {
  if (pid_ > 0) {
    if (mounted_) RunQuiet({"fusermount3", "-u", mountpoint_});
    mounted_ = false;
    for (int i = 0; i < 250 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (waitpid(pid_, nullptr, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  if (!mountpoint_.empty()) {
    rmdir(mountpoint_.c_str());
    mountpoint_.clear();
  }
}

Mount::~Mount() { Unmount(); }

void PrintRow(const std::string& name, double seconds, const std::string& note) {
  std::printf("  %-52s %9.3f s  %s\n", name.c_str(), seconds, note.c_str());
  std::fflush(stdout);
}

std::map<std::string, long> ReadStats(const std::string& mount) {
  std::map<std::string, long> stats;
  std::ifstream in(mount + "/.chainfs/stats");
  std::string name;
  long value;
  while (in >> name >> value) stats[name] = value;
  return stats;
}

bool MakeRandomChain(const std::string& dir, uint64_t size, RandomChain* out) {
  const std::string base_raw = dir + "/base.raw";
  out->base = dir + "/base.qcow2";
  out->mid = dir + "/mid.qcow2";
  out->top = dir + "/top.qcow2";
  out->top_raw = dir + "/top.raw";
  std::vector<std::string> sources;
  bool ok = true;
  for (int i = 0; i < 16 && ok; ++i) {
    sources.push_back(fmt::format("{}/src{}.bin", dir, i));
    ok = RandomFile(sources.back(), 1 << 20, 100 + uint64_t(i));
  }
  auto step = [&](bool done, const char* what) {
    if (ok && !done) std::fprintf(stderr, "bench: %s failed\n", what);
    ok = ok && done;
  };
  step(ok, "source data");
  if (ok) step(RunQuiet({"truncate", "-s", std::to_string(size), base_raw}) == 0, "truncate");
  if (ok) step(Scribble(base_raw, size, 1.6, 1), "base data");  // ~80% covered
  if (ok) step(RunQuiet({"qemu-img", "convert", "-O", "qcow2", base_raw, out->base}) == 0, "convert base");
  if (ok) {
    step(RunQuiet({"qemu-img", "create", "-f", "qcow2", "-b", out->base, "-F", "qcow2", out->mid}) == 0,
         "create mid");
  }
  if (ok) step(OverlayWrites(out->mid, size, 0.25, sources, 2), "mid writes");
  if (ok) {
    step(RunQuiet({"qemu-img", "create", "-f", "qcow2", "-b", out->mid, "-F", "qcow2", out->top}) == 0,
         "create top");
  }
  if (ok) step(OverlayWrites(out->top, size, 0.10, sources, 3), "top writes");
  if (ok) step(RunQuiet({"qemu-img", "convert", "-O", "raw", out->top, out->top_raw}) == 0, "export top");
  ::unlink(base_raw.c_str());
  for (const std::string& src : sources) ::unlink(src.c_str());
  return ok;
}

}  // namespace chainfs::bench
