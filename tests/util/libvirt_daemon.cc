#include "util/libvirt_daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace chainfs::testutil {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kLibvirtd = "/usr/sbin/libvirtd";
constexpr const char* kVirtlogd = "/usr/sbin/virtlogd";
constexpr const char* kVirsh = "/usr/bin/virsh";
constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";
constexpr const char* kKvm = "/dev/kvm";
constexpr const char* kUri = "qemu:///system";
constexpr const char* kLibvirtSocket = "/run/libvirt/libvirt-sock";
constexpr const char* kVirtlogdSocket = "/run/libvirt/virtlogd-sock";
// The connection drivers loaded: enough to define and start qemu domains and to resolve
// volume disks, without the network driver (it autostarts networks and edits the firewall).
constexpr const char* kDrivers[] = {"qemu", "storage", "secret"};
constexpr const char* kDriverDirs[] = {
    "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver",
    "/usr/lib64/libvirt/connection-driver",
    "/usr/lib/libvirt/connection-driver",
};
constexpr auto kStopGrace = std::chrono::seconds(30);
// Taken by every fixture for its lifetime: test processes that ctest runs in parallel take
// turns instead of seeing each other's libvirtd as foreign (and skipping).
constexpr const char* kLockFile = "/run/lock/chainfs-libvirt-test.lock";
constexpr auto kLockWait = std::chrono::seconds(900);

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool RequireLibvirt() {
  const char* v = std::getenv("CHAINFS_REQUIRE_LIBVIRT");
  return v != nullptr && std::string(v) == "1";
}

// Returns "NAME (PID N)" of a libvirt daemon running on this machine, or "".
std::string RunningLibvirtDaemon() {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return "";
  std::string found;
  while (dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string comm = ReadFile(std::string("/proc/") + e->d_name + "/comm");
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    if (comm == "libvirtd" || comm == "virtqemud" || comm == "virtlogd" || comm == "virtproxyd") {
      found = comm + " (PID " + e->d_name + ")";
      break;
    }
  }
  ::closedir(proc);
  return found;
}

// Returns true when something accepts connections on the Unix socket `path`.
bool SocketAnswers(const char* path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// Starts `binary` (no arguments) with the current environment plus `extra_env`, stdin from
// /dev/null and stdout/stderr appended to `log`. The child gets SIGTERM if the test process
// dies, so that a crashed test leaves no daemon behind. Returns the PID, or -1 with `err`.
pid_t Spawn(const std::string& binary, const std::vector<std::string>& extra_env,
            const std::string& log, std::string* err) {
  // getenv takes the first entry of a name: ours go first.
  std::vector<std::string> env_strings(extra_env);
  env_strings.emplace_back("LC_ALL=C");
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg0 = binary;
  char* argv[] = {arg0.data(), nullptr};

  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    *err = "open " + log + ": " + std::strerror(errno);
    return -1;
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    *err = std::string("fork: ") + std::strerror(errno);
    ::close(log_fd);
    return -1;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execve(binary.c_str(), argv, envp.data());
    ::_exit(127);
  }
  ::close(log_fd);
  return pid;
}

// Returns true (and reaps it) when child `pid` has exited.
bool Exited(pid_t pid) {
  int status = 0;
  pid_t r = ::waitpid(pid, &status, WNOHANG);
  return r == pid || (r < 0 && errno == ECHILD);
}

// Ends child `pid`: SIGTERM, then SIGKILL after kStopGrace; always reaps it.
void Stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  const auto deadline = Clock::now() + kStopGrace;
  while (Clock::now() < deadline) {
    if (Exited(pid)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// Removes a daemon's pidfile if it still names `pid` (left behind when it had to be killed).
void RemoveStalePidfile(const std::string& path, pid_t pid) {
  std::string text = ReadFile(path);
  if (!text.empty() && std::atol(text.c_str()) == long(pid)) ::unlink(path.c_str());
}

std::vector<std::string> VirshArgv(std::chrono::seconds timeout) {
  return {"env",  "LC_ALL=C", "timeout", "-k", "10", std::to_string(timeout.count()),
          kVirsh, "-c",       kUri};
}

}  // namespace

std::unique_ptr<LibvirtDaemon> LibvirtDaemon::Start(std::chrono::seconds ready_timeout) {
  std::unique_ptr<LibvirtDaemon> d(new LibvirtDaemon());
  d->Bring(ready_timeout);
  return d;
}

void LibvirtDaemon::Decline(std::string why) {
  state_ = RequireLibvirt() ? State::kFailed : State::kDeclined;
  reason_ = std::move(why);
  if (state_ == State::kFailed) reason_ += " (and CHAINFS_REQUIRE_LIBVIRT=1)";
}

void LibvirtDaemon::Fail(std::string why) {
  state_ = State::kFailed;
  reason_ = std::move(why);
}

void LibvirtDaemon::OpenKvmToQemu() {
  // QEMU's capability probe sees a working KVM, but libvirtd judges KVM by whether the qemu
  // user may open /dev/kvm: with /dev/kvm root-only (0600, as on hosts without udev's rule)
  // the two disagree, every capability lookup declares the cache stale and re-probes QEMU
  // (about 4 s, 9 times per define: 36 s). root:kvm 0660 is what udev gives /dev/kvm on a
  // normal host (libvirt-qemu is in group kvm); the old owner and mode come back at teardown.
  struct stat st;
  const group* kvm = ::getgrnam("kvm");
  if (kvm == nullptr || ::stat(kKvm, &st) != 0 || !S_ISCHR(st.st_mode)) return;
  if (st.st_gid == kvm->gr_gid && (st.st_mode & 0060) == 0060) return;
  if (::chown(kKvm, st.st_uid, kvm->gr_gid) != 0) return;
  kvm_changed_ = true;
  kvm_uid_ = st.st_uid;
  kvm_gid_ = st.st_gid;
  kvm_mode_ = st.st_mode & 07777;
  ::chmod(kKvm, kvm_mode_ | 0060);
}

void LibvirtDaemon::Bring(std::chrono::seconds ready_timeout) {
  if (::geteuid() != 0) return Decline("needs root (libvirtd on qemu:///system)");
  for (const char* tool : {kLibvirtd, kVirtlogd, kVirsh, kQemu}) {
    if (::access(tool, X_OK) != 0) {
      return Decline(std::string(tool) +
                     " is missing (packages libvirt-daemon-system, libvirt-clients, "
                     "qemu-system-x86)");
    }
  }
  std::string driver_dir;
  for (const char* dir : kDriverDirs) {
    if (Exists(std::string(dir) + "/libvirt_driver_qemu.so")) {
      driver_dir = dir;
      break;
    }
  }
  if (driver_dir.empty()) {
    return Decline("libvirt_driver_qemu.so not found (package libvirt-daemon-driver-qemu)");
  }
  lock_fd_ = ::open(kLockFile, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return Fail(std::string("open ") + kLockFile + ": " + std::strerror(errno));
  const auto lock_deadline = Clock::now() + kLockWait;
  while (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (Clock::now() > lock_deadline) {
      return Fail(std::string("another test's libvirtd held ") + kLockFile + " for " +
                  std::to_string(kLockWait.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::string other = RunningLibvirtDaemon();
  if (!other.empty()) {
    return Decline("a " + other + " that this test did not start is running; not touching it");
  }
  for (const char* sock : {kLibvirtSocket, kVirtlogdSocket}) {
    if (SocketAnswers(sock)) {
      return Decline(std::string("something this test did not start listens on ") + sock +
                     "; not touching it");
    }
  }

  work_dir_ = MakeTempDir();
  const std::string drivers = work_dir_ + "/connection-driver";
  ::mkdir(drivers.c_str(), 0755);
  for (const char* name : kDrivers) {
    std::string file = std::string("libvirt_driver_") + name + ".so";
    std::string from = driver_dir + "/" + file;
    if (Exists(from)) ::symlink(from.c_str(), (drivers + "/" + file).c_str());
  }

  OpenKvmToQemu();
  const auto started = Clock::now();
  std::string err;
  virtlogd_pid_ = Spawn(kVirtlogd, {}, work_dir_ + "/virtlogd.log", &err);
  if (virtlogd_pid_ < 0) return Fail("cannot start virtlogd: " + err);
  libvirtd_pid_ =
      Spawn(kLibvirtd, {"LIBVIRT_DRIVER_DIR=" + drivers}, work_dir_ + "/libvirtd.log", &err);
  if (libvirtd_pid_ < 0) return Fail("cannot start libvirtd: " + err);

  const auto deadline = started + ready_timeout;
  RunResult last;
  while (Clock::now() < deadline) {
    if (Exited(libvirtd_pid_)) {
      libvirtd_pid_ = -1;
      return Fail("libvirtd exited at start: " + LibvirtdLogTail());
    }
    if (Exited(virtlogd_pid_)) {
      virtlogd_pid_ = -1;
      return Fail("virtlogd exited at start: " + ReadFile(work_dir_ + "/virtlogd.log"));
    }
    last = Virsh({"version"}, std::chrono::seconds(10));
    if (last.exit_code == 0 && SocketAnswers(kVirtlogdSocket)) {
      startup_seconds_ = std::chrono::duration<double>(Clock::now() - started).count();
      state_ = State::kReady;
      reason_.clear();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  Fail("`virsh -c qemu:///system version` did not answer within " +
       std::to_string(ready_timeout.count()) + " s: " + last.err +
       "\nlibvirtd log: " + LibvirtdLogTail());
}

LibvirtDaemon::~LibvirtDaemon() {
  if (libvirtd_pid_ > 0 && !Exited(libvirtd_pid_)) {
    for (auto it = domains_.rbegin(); it != domains_.rend(); ++it) {
      Virsh({"destroy", *it}, std::chrono::seconds(60));
      Virsh({"undefine", *it}, std::chrono::seconds(60));  // fails for a transient one: fine
    }
  }
  Stop(libvirtd_pid_);
  RemoveStalePidfile("/run/libvirtd.pid", libvirtd_pid_);
  Stop(virtlogd_pid_);
  RemoveStalePidfile("/run/virtlogd.pid", virtlogd_pid_);
  if (kvm_changed_) {
    if (::chown(kKvm, kvm_uid_, kvm_gid_) == 0) ::chmod(kKvm, kvm_mode_);
  }
  for (const std::string& name : domains_) {
    ::unlink(("/var/log/libvirt/qemu/" + name + ".log").c_str());
  }
  if (!work_dir_.empty()) RemoveTree(work_dir_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

RunResult LibvirtDaemon::Virsh(const std::vector<std::string>& args,
                               std::chrono::seconds timeout) const {
  std::vector<std::string> argv = VirshArgv(timeout);
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

RunResult LibvirtDaemon::VirshSession(const std::string& commands,
                                      std::chrono::seconds timeout) const {
  // One argument holding the commands separated by ';', which virsh runs in order in one
  // connection (it goes on after a failed command).
  std::string joined;
  std::istringstream lines(commands);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    if (!joined.empty()) joined += " ; ";
    joined += line;
  }
  std::vector<std::string> argv = VirshArgv(timeout);
  argv.push_back(joined);
  return Run(argv);
}

std::string LibvirtDaemon::WriteXml(const std::string& xml) {
  std::string path = work_dir_ + "/domain-" + std::to_string(++xml_counter_) + ".xml";
  std::ofstream(path, std::ios::binary) << xml;
  return path;
}

void LibvirtDaemon::Record(const std::string& name) {
  if (name.empty()) return;
  for (const std::string& d : domains_) {
    if (d == name) return;
  }
  domains_.push_back(name);
}

RunResult LibvirtDaemon::Define(const std::string& xml) {
  RunResult r = Virsh({"define", WriteXml(xml)});
  if (r.exit_code == 0) Record(DomainName(xml));
  return r;
}

RunResult LibvirtDaemon::DefineMany(const std::vector<std::string>& xmls) {
  std::string commands;
  std::vector<std::pair<std::string, std::string>> files;  // path, domain name
  for (const std::string& xml : xmls) {
    files.emplace_back(WriteXml(xml), DomainName(xml));
    commands += "define " + files.back().first + "\n";
  }
  RunResult r = VirshSession(commands, kVirshTimeout * std::max<size_t>(1, xmls.size()));
  for (const auto& [path, name] : files) {
    // virsh confirms each one with "Domain 'NAME' defined from PATH".
    if (r.out.find(" defined from " + path + "\n") != std::string::npos) Record(name);
  }
  return r;
}

RunResult LibvirtDaemon::Create(const std::string& xml) {
  RunResult r = Virsh({"create", WriteXml(xml)});
  if (r.exit_code == 0) Record(DomainName(xml));
  return r;
}

RunResult LibvirtDaemon::StartDomain(const std::string& name) const {
  return Virsh({"start", name});
}

RunResult LibvirtDaemon::Destroy(const std::string& name) const { return Virsh({"destroy", name}); }

RunResult LibvirtDaemon::Undefine(const std::string& name) {
  RunResult r = Virsh({"undefine", name});
  if (r.exit_code == 0) std::erase(domains_, name);
  return r;
}

RunResult LibvirtDaemon::DumpXml(const std::string& name, bool inactive) const {
  if (inactive) return Virsh({"dumpxml", "--inactive", name});
  return Virsh({"dumpxml", name});
}

std::string LibvirtDaemon::StatusFile(const std::string& name) {
  return "/run/libvirt/qemu/" + name + ".xml";
}

std::string LibvirtDaemon::DefinitionFile(const std::string& name) {
  return "/etc/libvirt/qemu/" + name + ".xml";
}

std::string LibvirtDaemon::DomainName(const std::string& xml) {
  size_t open = xml.find("<name>");
  if (open == std::string::npos) return "";
  open += 6;
  size_t close = xml.find("</name>", open);
  if (close == std::string::npos) return "";
  std::string name = xml.substr(open, close - open);
  const char* space = " \t\r\n";
  size_t first = name.find_first_not_of(space);
  if (first == std::string::npos) return "";
  return name.substr(first, name.find_last_not_of(space) - first + 1);
}

std::string LibvirtDaemon::MakeWorldReadableDir() {
  std::string tmpl = "/var/tmp/chainfs-libvirt-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) tmpl = MakeTempDir();
  ::chmod(tmpl.c_str(), 0755);
  return tmpl;
}

std::string LibvirtDaemon::LibvirtdLogTail(size_t max_bytes) const {
  if (work_dir_.empty()) return "";
  std::string log = ReadFile(work_dir_ + "/libvirtd.log");
  return log.size() > max_bytes ? log.substr(log.size() - max_bytes) : log;
}

}  // namespace chainfs::testutil
