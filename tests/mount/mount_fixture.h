// Helpers for mount tests: a pool folder with qemu-img images, and a real
// chainfs mount of it in a fresh temporary mountpoint that is always
// unmounted (fusermount3 -u, then kill + waitpid of the daemon by PID).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/util/json.h"
#include "util/run.h"

namespace chainfs::mounttest {

// Runs a command, failing the current test (with its stderr) if it exits non-zero.
testutil::RunResult MustRun(const std::vector<std::string>& argv);

// Makes images with qemu-img: `args` after "qemu-img create -q".
void QemuImgCreate(const std::vector<std::string>& args);

// Reads a whole file (through the mount or not); "" plus a test failure if
// it cannot be opened and `expect_ok`.
std::string ReadFile(const std::string& path, bool expect_ok = true);

// Returns true if `path` is a mountpoint listed in /proc/self/mounts.
bool IsMounted(const std::string& path);

// Writes `value` the way `echo` does (open O_WRONLY|O_TRUNC, one write,
// close); returns the errno of the first failing call, 0 on success.
int WriteValue(const std::string& path, const std::string& value);
// Writes `value` to `path` opened without O_TRUNC (which the kernel lets
// root do on any file, the mount having no open requests); returns the
// errno of write(2), 0 on success, or -1 (and fails the test) if the open
// itself failed.
int WriteInPlace(const std::string& path, const std::string& value);

// Returns `qemu-img info -U --output=json` of `path` (null Json plus a test
// failure if it fails).
core::Json QemuInfo(const std::string& path);
// Returns the string member `key` of a qemu-img info object, or "<none>".
std::string InfoString(const core::Json& info, const char* key);
// Returns the number member `key` of a qemu-img info object, or 0.
uint64_t InfoNumber(const core::Json& info, const char* key);

// Returns true if `path` starts with the qcow2 magic.
bool IsQcow2(const std::string& path);
// Expects `path` to be a qcow2 image that `qemu-img check` finds clean.
void ExpectQemuCheckClean(const std::string& path);
// Expects `qemu-img compare` to find the same guest content in `a` and `b`.
void ExpectSameGuestContent(const std::string& a, const std::string& b);

// A chainfs daemon in the foreground (-f), started by fork/exec.
class Mount {
 public:
  Mount() = default;
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  ~Mount() { Stop(); }

  // Starts `chainfs -f ARGS... MOUNTPOINT` and waits (up to 20 s) until
  // MOUNTPOINT/.chainfs/version exists. Returns false (with a test failure
  // and the daemon's output) if it does not come up. Also starts this
  // mount's watchdog (see StartWatchdog).
  bool Start(const std::vector<std::string>& args, const std::string& mountpoint);
  // Unmounts with fusermount3 -u, waits for the daemon, kills it if it
  // lingers, and lazily unmounts as a last resort; then dismisses the
  // watchdog. Idempotent.
  void Stop();
  // Aborts this mount's FUSE connection the way `umount -f` does (the
  // kernel's umount_begin aborts a FUSE connection; no fusectl needed), so
  // that every request on it fails and a daemon thread blocked in the
  // kernel on it returns; then detaches the mountpoint.
  void ForceAbort();
  // Waits up to `seconds` for the daemon to exit; returns its wait status
  // or -1 if it is still running.
  int WaitExit(double seconds);

  pid_t pid() const { return pid_; }
  // Returns the daemon's wait status once it has been reaped (-1 before,
  // or if it had to be killed).
  int exit_status() const { return exit_status_; }
  const std::string& mountpoint() const { return mountpoint_; }
  // Returns what the daemon wrote to stdout/stderr so far.
  std::string DaemonOutput() const;

 private:
  // Forks the watchdog: a process in a session of its own that waits for
  // Stop() to dismiss it. If the test outlives its bound
  // (CHAINFS_TEST_WATCHDOG seconds, default 420, below CTest's 600) or dies
  // without dismissing it (a CTest timeout kill), it aborts this mount's
  // connection only (ForceAbort's way), SIGKILLs this daemon by PID and
  // detaches the mountpoint: a hung mount test fails, it never hangs.
  void StartWatchdog();
  void DismissWatchdog();

  pid_t pid_ = -1;
  pid_t watchdog_pid_ = -1;
  int watchdog_fd_ = -1;  // our end of the socket pair; EOF alone means "rescue"
  int exit_status_ = -1;
  std::string mountpoint_;
  std::string output_path_;
};

// A test with a pool folder POOL (= pool_) exposed as pool "p" and a
// mountpoint; the mount is always torn down before the folder is removed.
class MountTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // Stops the mount; on failure, shows what the daemon printed.
  void TearDown() override;
  // Mounts with `--pool p=POOL` plus `extra` options.
  bool MountPool(const std::vector<std::string>& extra = {});
  // Returns MOUNT/rel.
  std::string M(const std::string& rel) const { return mnt_ + "/" + rel; }
  // Returns POOL/name.
  std::string P(const std::string& name) const { return pool_ + "/" + name; }
  // Makes base.raw <- mid.qcow2 <- top.qcow2 (relative backing strings).
  void MakeChain();
  // Runs chainctl with the same pool and returns its stdout; `exit_code`
  // receives the exit status when given (else non-zero fails the test).
  std::string Chainctl(const std::vector<std::string>& args, int* exit_code = nullptr);

  // Returns the mount's .chainfs/log.
  std::string Log() { return ReadFile(M(".chainfs/log")); }
  // Returns counter `name` of .chainfs/stats (a test failure if absent).
  uint64_t Stat(const std::string& name);
  // Converts `image` with `qemu-img convert -U -O raw` to file `name` in
  // the temp folder and returns that file.
  std::string Converted(const std::string& image, const std::string& name);
  // Expects `cmp a b` to find the files identical.
  void ExpectSameBytes(const std::string& a, const std::string& b);
  // Expects the last log line for `op` `path` `result` to contain `reason_part`.
  void ExpectLogged(const std::string& op, const std::string& path, const std::string& result,
                    const std::string& reason_part);
  testutil::ScopedTempDir tmp_;  // destroyed after mount_
  std::string pool_;
  std::string mnt_;
  Mount mount_;
};

}  // namespace chainfs::mounttest
