#include "mount/mount_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace chainfs::mounttest {

testutil::RunResult MustRun(const std::vector<std::string>& argv) {
  testutil::RunResult r = testutil::Run(argv);
  std::string cmd;
  for (const std::string& a : argv) cmd += a + " ";
  EXPECT_EQ(r.exit_code, 0) << cmd << "\nstderr: " << r.err;
  return r;
}

void QemuImgCreate(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img", "create", "-q"};
  argv.insert(argv.end(), args.begin(), args.end());
  MustRun(argv);
}

std::string ReadFile(const std::string& path, bool expect_ok) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (expect_ok) ADD_FAILURE() << "cannot open " << path;
    return "";
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int WriteValue(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = 0;
  if (::write(fd, value.data(), value.size()) < 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

int WriteInPlace(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "cannot open " << path << ": " << std::strerror(errno);
    return -1;
  }
  int err = ::write(fd, value.data(), value.size()) < 0 ? errno : 0;
  ::close(fd);
  return err;
}

core::Json QemuInfo(const std::string& path) {
  testutil::RunResult r = testutil::Run({"qemu-img", "info", "-U", "--output=json", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  core::Result<core::Json> j = core::Json::Parse(r.out);
  EXPECT_TRUE(j.ok()) << r.out;
  return j.ok() ? *j : core::Json();
}

std::string InfoString(const core::Json& info, const char* key) {
  const core::Json* v = info.is_object() ? info.Find(key) : nullptr;
  return v && v->is_string() ? v->as_string() : std::string("<none>");
}

uint64_t InfoNumber(const core::Json& info, const char* key) {
  const core::Json* v = info.is_object() ? info.Find(key) : nullptr;
  return v && v->is_number() ? v->as_uint() : 0;
}

bool IsQcow2(const std::string& path) {
  char magic[4] = {};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::pread(fd, magic, 4, 0) == 4 && std::memcmp(magic, "QFI\xfb", 4) == 0;
  ::close(fd);
  return ok;
}

void ExpectQemuCheckClean(const std::string& path) {
  ASSERT_TRUE(IsQcow2(path)) << path << " is not a qcow2 image";
  testutil::RunResult r = testutil::Run({"qemu-img", "check", "-U", path});
  EXPECT_EQ(r.exit_code, 0) << path << ": " << r.out << r.err;
}

void ExpectSameGuestContent(const std::string& a, const std::string& b) {
  testutil::RunResult r = testutil::Run({"qemu-img", "compare", "-U", a, b});
  EXPECT_EQ(r.exit_code, 0) << a << " vs " << b << ": " << r.out << r.err;
}

bool IsMounted(const std::string& path) {
  std::ifstream in("/proc/self/mounts");
  std::string dev, dir, rest;
  while (in >> dev >> dir) {
    std::getline(in, rest);
    if (dir == path) return true;
  }
  return false;
}

bool Mount::Start(const std::vector<std::string>& args, const std::string& mountpoint) {
  mountpoint_ = mountpoint;
  output_path_ = mountpoint + ".daemon-output";
  std::vector<std::string> full = {CHAINFS_BINARY, "-f"};
  full.insert(full.end(), args.begin(), args.end());
  full.push_back(mountpoint);
  std::vector<char*> argv;
  for (std::string& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out = ::open(output_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    ADD_FAILURE() << "cannot create " << output_path_;
    return false;
  }
  exit_status_ = -1;
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out);
  if (pid_ < 0) {
    ADD_FAILURE() << "fork failed";
    return false;
  }
  StartWatchdog();
  std::string probe = mountpoint + "/.chainfs/version";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    struct stat st {};
    if (::stat(probe.c_str(), &st) == 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      ADD_FAILURE() << "chainfs exited early (status " << status << "):\n" << DaemonOutput();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "chainfs did not come up:\n" << DaemonOutput();
  Stop();
  return false;
}

int Mount::WaitExit(double seconds) {
  if (pid_ <= 0) return 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      pid_ = -1;
      exit_status_ = status;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < deadline);
  return -1;
}

void Mount::StartWatchdog() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    ADD_FAILURE() << "socketpair: " << std::strerror(errno);
    return;
  }
  int seconds = 420;
  if (const char* env = std::getenv("CHAINFS_TEST_WATCHDOG")) seconds = std::max(1, std::atoi(env));
  // Everything the child uses is prepared before fork: after it, only
  // async-signal-safe calls.
  const std::string where = mountpoint_;
  const std::string message = "mount test watchdog: freeing " + mountpoint_ + "\n";
  const pid_t daemon = pid_;
  pid_t w = ::fork();
  if (w == 0) {
    ::close(fds[0]);
    ::setsid();  // a kill of the test's process group spares it
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, STDIN_FILENO);
      ::dup2(devnull, STDOUT_FILENO);
    }
    struct pollfd p = {fds[1], POLLIN, 0};
    int n = ::poll(&p, 1, seconds * 1000);
    char c = 0;
    if (n > 0 && ::read(fds[1], &c, 1) == 1 && c == 'd') ::_exit(0);  // dismissed
    (void)!::write(STDERR_FILENO, message.data(), message.size());
    ::umount2(where.c_str(), MNT_FORCE);  // aborts this FUSE connection only
    ::kill(daemon, SIGKILL);
    ::umount2(where.c_str(), MNT_DETACH);
    ::_exit(1);
  }
  ::close(fds[1]);
  if (w < 0) {
    ::close(fds[0]);
    ADD_FAILURE() << "fork of the watchdog failed";
    return;
  }
  watchdog_pid_ = w;
  watchdog_fd_ = fds[0];
}

void Mount::DismissWatchdog() {
  if (watchdog_fd_ >= 0) {
    (void)!::send(watchdog_fd_, "d", 1, MSG_NOSIGNAL);
    ::close(watchdog_fd_);
    watchdog_fd_ = -1;
  }
  if (watchdog_pid_ > 0) {
    int status = 0;
    ::waitpid(watchdog_pid_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "the mount test watchdog had to free " << mountpoint_ << " (the test hung)";
    watchdog_pid_ = -1;
  }
}

void Mount::ForceAbort() {
  if (mountpoint_.empty()) return;
  ::umount2(mountpoint_.c_str(), MNT_FORCE);
  if (IsMounted(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
}

void Mount::Stop() {
  if (mountpoint_.empty()) return;
  if (IsMounted(mountpoint_)) testutil::Run({"fusermount3", "-u", mountpoint_});
  if (pid_ > 0 && WaitExit(10) == -1) {
    ::kill(pid_, SIGKILL);
    if (WaitExit(10) == -1) {
      // A thread of the killed daemon is blocked in the kernel on this
      // mount: abort the connection so that it can exit.
      ADD_FAILURE() << "the killed daemon does not exit; aborting its connection";
      ForceAbort();
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }
  if (IsMounted(mountpoint_)) testutil::Run({"fusermount3", "-uz", mountpoint_});
  if (IsMounted(mountpoint_)) testutil::Run({"umount", "-l", mountpoint_});
  DismissWatchdog();
  mountpoint_.clear();
}

std::string Mount::DaemonOutput() const { return ReadFile(output_path_, false); }

void MountTest::SetUp() {
  pool_ = tmp_.Sub("pool");
  mnt_ = tmp_.Sub("mnt");
  // World-traversable, so that the unprivileged-user tests can reach the mount.
  ASSERT_EQ(::chmod(tmp_.path().c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(pool_.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
}

void MountTest::TearDown() {
  bool was_running = mount_.pid() > 0;
  if (was_running) {
    mount_.Stop();
    // A clean unmount ends the daemon with status 0 (under ASan this also
    // means no leak and no error report).
    int status = mount_.exit_status();
    EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "chainfs did not exit cleanly, wait status " << status;
  }
  if (HasFailure()) {
    std::string out = mount_.DaemonOutput();
    if (out.size() > 20000) out = out.substr(out.size() - 20000);
    std::fprintf(stderr, "--- chainfs output ---\n%s--- end ---\n", out.c_str());
  }
  mount_.Stop();
}

uint64_t MountTest::Stat(const std::string& name) {
  std::string stats = "\n" + ReadFile(M(".chainfs/stats"));
  size_t at = stats.find("\n" + name + " ");
  if (at == std::string::npos) {
    ADD_FAILURE() << "no " << name << " in stats:" << stats;
    return 0;
  }
  return std::strtoull(stats.c_str() + at + name.size() + 2, nullptr, 10);
}

std::string MountTest::Converted(const std::string& image, const std::string& name) {
  std::string out = tmp_.Sub(name);
  MustRun({"qemu-img", "convert", "-U", "-O", "raw", image, out});
  return out;
}

void MountTest::ExpectSameBytes(const std::string& a, const std::string& b) {
  testutil::RunResult r = testutil::Run({"cmp", a, b});
  EXPECT_EQ(r.exit_code, 0) << a << " vs " << b << ": " << r.out << r.err;
}

void MountTest::ExpectLogged(const std::string& op, const std::string& path,
                             const std::string& result, const std::string& reason_part) {
  std::string log = Log();
  std::string needle = " " + op + " " + path + " " + result + " ";
  size_t at = log.rfind(needle);
  ASSERT_NE(at, std::string::npos) << "no '" << needle << "' in log:\n" << log;
  std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find(reason_part), std::string::npos) << line;
}

bool MountTest::MountPool(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--pool", "p=" + pool_};
  args.insert(args.end(), extra.begin(), extra.end());
  return mount_.Start(args, mnt_);
}

void MountTest::MakeChain() {
  QemuImgCreate({"-f", "raw", P("base.raw"), "64M"});
  QemuImgCreate({"-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
  QemuImgCreate({"-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
}

std::string MountTest::Chainctl(const std::vector<std::string>& args, int* exit_code) {
  std::vector<std::string> argv = {CHAINCTL_BINARY, "--pool", "p=" + pool_};
  argv.insert(argv.end(), args.begin(), args.end());
  testutil::RunResult r = testutil::Run(argv);
  if (exit_code) {
    *exit_code = r.exit_code;
  } else {
    EXPECT_EQ(r.exit_code, 0) << "chainctl failed: " << r.err;
  }
  return r.out;
}

}  // namespace chainfs::mounttest
