#include "fs/daemon.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "fs/demo.h"
#include "fs/fuse_api.h"
#include "fs/operations.h"
#include "fs/state.h"
#include "fs/watcher.h"
#include "fs/wedge_guardian.h"

namespace chainfs::fs {

namespace {

void Fail(const std::string& message) { std::fprintf(stderr, "chainfs: %s\n", message.c_str()); }

// Prints libfuse's messages ("fuse: unknown option(s): ...", "fuse:
// mountpoint is not empty") with every line starting "chainfs: ", as ours
// do. libfuse writes some lines in several calls, so the prefix goes where
// a line starts, not at each call. -d's request trace is printed as is.
// Thread-safe (the loop's workers log too).
void LogFuseMessage(enum fuse_log_level level, const char* fmt, va_list ap) {
  if (level >= FUSE_LOG_DEBUG) {
    std::vfprintf(stderr, fmt, ap);
    return;
  }
  char buf[2048];
  int n = std::vsnprintf(buf, sizeof(buf), fmt, ap);
  if (n < 0) return;
  size_t len = std::min(size_t(n), sizeof(buf) - 1);
  static std::mutex mu;
  static bool at_line_start = true;  // guarded by mu
  std::lock_guard<std::mutex> lock(mu);
  for (size_t i = 0; i < len; ++i) {
    if (at_line_start) std::fputs("chainfs: ", stderr);
    std::fputc(buf[i], stderr);
    at_line_start = buf[i] == '\n';
  }
}

// Owns a fuse_session: unmounts (if mounted) and destroys it.
struct SessionDeleter {
  void operator()(struct fuse_session* se) const { fuse_session_destroy(se); }
};

// Owns the fuse_args built for libfuse.
struct Args {
  std::vector<std::string> storage;
  std::vector<char*> argv;
  struct fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~Args() { fuse_opt_free_args(&args); }
  void Build() {
    for (std::string& s : storage) argv.push_back(s.data());
    args.argc = int(argv.size());
    args.argv = argv.data();
    args.allocated = 0;
  }
};

// Returns the mount point field of /proc/self/mountinfo with its octal
// escapes (\040 for a space, ...) decoded.
std::string UnescapeMountField(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() &&
        field[i + 1] >= '0' && field[i + 1] <= '3') {
      out += char((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// Returns the device (MAJ:MIN) of the newest chainfs mount at `path`
// (absolute, lexically normalized), or nullopt. Reads /proc/self/mountinfo
// only: the mountpoint itself is not touched, since a wedged mount there
// could hang a stat (and before INIT is answered, any access would).
std::optional<std::string> ChainfsMountDevice(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<std::string> found;
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    if (!(fields >> id >> parent >> dev >> root >> point)) continue;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype;
    tail >> fstype;
    if (fstype == "fuse.chainfs" && UnescapeMountField(point) == path) found = dev;
  }
  return found;
}

bool ChainfsMountedAt(const std::string& path) { return ChainfsMountDevice(path).has_value(); }

// The kernel reads ahead at most 128 KiB on a FUSE mount unless told
// otherwise, and a sequential read of VOL/data then costs a request per
// 128 KiB although a request may carry 1 MiB (libfuse's 256 pages). Sets
// the mount's read_ahead_kb to that size. After INIT has been answered:
// the INIT reply would lower it again. Logs what it did.
void RaiseReadahead(FsState& state, const std::string& mountpoint) {
  constexpr unsigned kReadaheadKib = 1024;
  std::optional<std::string> dev = ChainfsMountDevice(mountpoint);
  if (!dev) {
    state.log.Add("mount", mountpoint, "skipped", "readahead left as the kernel set it: mount not found");
    return;
  }
  const std::string knob = "/sys/class/bdi/" + *dev + "/read_ahead_kb";
  std::string before;
  {
    std::ifstream in(knob);
    std::getline(in, before);
  }
  std::ofstream out(knob);
  out << kReadaheadKib << "\n";
  out.flush();
  if (!out) {
    state.log.Add("mount", mountpoint, "skipped",
                  fmt::format("readahead left at {} KiB: {} cannot be written", before, knob));
    return;
  }
  state.log.Add("mount", mountpoint, "ok",
                fmt::format("readahead {} KiB (was {} KiB; {})", kReadaheadKib, before, knob));
}

}  // namespace

int RunMount(const MountOptions& options) {
  fuse_set_log_func(LogFuseMessage);
  MountOptions opts = options;
  std::string demo_dir;
  if (opts.demo) {
    core::Result<std::string> dir = MakeDemoPool();
    if (!dir.ok()) {
      Fail("--demo: " + dir.status().message());
      return 1;
    }
    demo_dir = *dir;
    opts.sources.pool_specs.push_back("demo=" + demo_dir);
    if (!opts.sources.pool_dir) opts.sources.pool_dir = std::string();  // only the demo pool
    std::printf("chainfs: demo pool in %s\n", demo_dir.c_str());
    std::fflush(stdout);
  }
  struct DemoCleanup {
    std::string dir;
    ~DemoCleanup() {
      if (!dir.empty()) RemoveDemoPool(dir);
    }
  } demo_cleanup{demo_dir};

  // What the user named must exist: a typo must not mount an empty tree.
  core::Status named = core::PoolCatalog::CheckExplicitSources(opts.sources);
  if (!named.ok()) {
    Fail(named.message());
    return 1;
  }
  core::Result<core::PoolLoad> load = core::PoolCatalog::LoadPools(opts.sources);
  if (!load.ok()) {
    Fail(load.status().message());
    return 1;
  }
  core::Status domains_named = core::CheckDomainSources(opts.domain_dir, opts.run_dir);
  if (!domains_named.ok()) {
    Fail(domains_named.message());
    return 1;
  }
  const core::DomainSources domain_sources = core::ChooseDomainSources(
      opts.sources.pool_dir.has_value() || !opts.sources.pool_specs.empty(), opts.domain_dir,
      opts.run_dir);

  std::string absolute = opts.mountpoint;
  if (absolute.empty() || absolute[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) != nullptr) absolute = std::string(cwd) + "/" + absolute;
  }
  absolute = core::NormalizePathLexically(absolute);
  if (ChainfsMountedAt(absolute)) {
    Fail(fmt::format("{}: chainfs is already mounted there (unmount it first: fusermount3 -u {})",
                     absolute, absolute));
    return 1;
  }

  char* real = realpath(opts.mountpoint.c_str(), nullptr);
  if (!real) {
    int saved = errno;
    Fail(fmt::format("mountpoint {}: {}", opts.mountpoint, std::strerror(saved)));
    return 1;
  }
  MountConfig config;
  config.mountpoint = real;
  std::free(real);
  config.read_only = opts.read_only;
  config.cache_timeout = opts.cache_timeout;
  const char* fault = std::getenv("CHAINFS_FAULT_WEDGE_RENAME");
  config.fault_wedge_rename = fault != nullptr && std::string(fault) == "1";

  auto state = std::make_unique<FsState>(config, opts.foreground);
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  state->tree.set_owner(getuid(), getgid(), now);
  for (const std::string& line : load->skipped) state->log.Add("pools", "-", "skipped", line);
  for (const core::PoolDef& pool : load->pools) {
    if (!pool.Browsable()) {
      state->log.Add("pools", "/" + pool.name, "skipped",
                     fmt::format("pool type '{}' has no local target path: not browsable", pool.type));
    }
  }
  state->log.Add("pools", "-", "ok", fmt::format("{} pool definitions", load->pools.size()));
  state->catalog.SetPools(std::move(load->pools));
  state->domains.SetSources(domain_sources);
  if (state->domains.enabled()) {
    std::shared_ptr<const core::DomainSet> domains = state->domains.Current();
    for (const std::string& line : domains->skipped) {
      state->log.Add("domains", "-", "skipped", line);
    }
    state->log.Add("domains", "-", "ok",
                   fmt::format("{} domains from {}{}", domains->domains.size(),
                               domain_sources.domain_dir.empty() ? "-" : domain_sources.domain_dir,
                               domain_sources.run_dir.empty() ? "" : " and " + domain_sources.run_dir));
  }

  Args args;
  args.storage.push_back("chainfs");
  std::string mount_opts = "default_permissions,fsname=chainfs,subtype=chainfs";
  for (const std::string& o : opts.fuse_options) mount_opts += "," + o;
  args.storage.push_back("-o");
  args.storage.push_back(mount_opts);
  if (opts.debug) args.storage.push_back("-d");
  args.Build();

  std::unique_ptr<struct fuse_session, SessionDeleter> se(
      fuse_session_new(&args.args, &MakeOperations(), sizeof(struct fuse_lowlevel_ops), state.get()));
  if (!se) {
    Fail("cannot create the FUSE session (see the message above)");
    return 1;
  }
  if (fuse_session_mount(se.get(), config.mountpoint.c_str()) != 0) {
    Fail("cannot mount on " + config.mountpoint);
    return 1;
  }
  state->session = se.get();
  if (fuse_daemonize(opts.foreground ? 1 : 0) != 0) {
    fuse_session_unmount(se.get());
    return 1;
  }

  // Forked while the process has one thread (the watcher and the loop's
  // workers start below).
  pid_t guardian = StartWedgeGuardian(config.mountpoint);
  int rc = 0;
  {
    Watcher watcher(*state, opts.sources);
    watcher.Start();
    struct fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, 16);
    // The first request of a new connection is INIT: served here, so that
    // the readahead set next is not lowered again by the INIT reply.
    struct fuse_buf init {};
    if (fuse_session_receive_buf(se.get(), &init) > 0) {
      fuse_session_process_buf(se.get(), &init);
      RaiseReadahead(*state, config.mountpoint);
    }
    std::free(init.mem);
    rc = fuse_session_loop_mt(se.get(), cfg);
    fuse_loop_cfg_destroy(cfg);
    state->tree.StopPrefetch();  // its tasks report new chains to the watcher
    watcher.Stop();
  }
  state->log.Add("unmount", config.mountpoint, rc == 0 ? "ok" : "error",
                 rc == 0 ? "session ended" : fmt::format("loop returned {}", rc));
  fuse_session_unmount(se.get());
  state->session = nullptr;
  se.reset();
  if (guardian > 0) {
    ::kill(guardian, SIGKILL);
    ::waitpid(guardian, nullptr, 0);
  }
  int exit_code = rc == 0 || rc == SIGTERM || rc == SIGINT ? 0 : 1;
  // A running rebase cannot be stopped between chunks: wait for it, bounded.
  // The mount is already gone, so nobody hangs on it meanwhile.
  if (!state->rebases.WaitAll(std::chrono::milliseconds(0))) {
    state->log.Add("unmount", config.mountpoint, "waiting",
                   fmt::format("a rebase is running; waiting up to {} s for it to finish",
                               kRebaseShutdownWait.count()));
    if (!state->rebases.WaitAll(kRebaseShutdownWait)) {
      state->log.Add("unmount", config.mountpoint, "abandoned",
                     "the rebase did not finish in time; its image keeps its old backing and "
                     "content (write the value to VOL/rebase again to finish it)");
      std::fflush(nullptr);
      std::_Exit(exit_code);  // the job's thread still uses the state: no destructors
    }
  }
  return exit_code;
}

}  // namespace chainfs::fs
