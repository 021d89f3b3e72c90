// LibvirtDaemon: a real libvirtd (and the virtlogd it needs to start domains) run by a test
// suite as root, on the system's default sockets and folders (/etc/libvirt/qemu for
// definitions, /run/libvirt/qemu for status files), for tests that define and start real
// domains with virsh (qemu TCG; no KVM needed).
//
// Starting the daemons and each `virsh define` are slow (tens of seconds: libvirtd probes the
// QEMU binary's capabilities), so make ONE per test suite:
//
//   class MySuite : public ::testing::Test {
//    protected:
//     static void SetUpTestSuite() { daemon_ = testutil::LibvirtDaemon::Start(); }
//     static void TearDownTestSuite() { daemon_.reset(); }  // undefines, stops, reaps
//     void SetUp() override { CHAINFS_REQUIRE_LIBVIRT(daemon_); }
//     static inline std::unique_ptr<testutil::LibvirtDaemon> daemon_;
//   };
//
// The daemons run as plain child processes (no systemd), with only the qemu, storage and
// secret connection drivers loaded (LIBVIRT_DRIVER_DIR), so that no network is autostarted
// and no firewall rule is touched. A libvirtd, virtqemud or virtlogd already running on the
// machine is never touched: the fixture then declines (skip) and says why. Fixtures of
// parallel test processes take turns (an flock on /run/lock/chainfs-libvirt-test.lock).
//
// libvirtd re-probes QEMU at every capability lookup (a define costs 36 s instead of 0.03 s)
// when /dev/kvm works for QEMU's probe but the qemu user may not open it: the fixture gives
// /dev/kvm to group kvm (0660, as udev does on a normal host) while it runs, then restores it.
//
// QEMU runs domains as libvirt-qemu (Debian's qemu.conf default): images must lie in a folder
// that user can traverse (see MakeWorldReadableDir).
//
// Not thread-safe: use from the test thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "util/run.h"

namespace chainfs::testutil {

class LibvirtDaemon {
 public:
  enum class State {
    kReady,     // both daemons answer; use the fixture
    kDeclined,  // not root, packages missing or another libvirtd running: skip the tests
    kFailed,    // the daemons were started but did not come up: fail the tests
  };

  // How long a single virsh command may take unless told otherwise (a define takes ~36 s
  // on a slow machine without KVM).
  static constexpr std::chrono::seconds kVirshTimeout{300};

  // Starts virtlogd then libvirtd and waits (up to `ready_timeout`) until
  // `virsh -c qemu:///system version` answers. Never throws and never returns null; check
  // state(). With CHAINFS_REQUIRE_LIBVIRT=1 in the environment, missing packages or a
  // non-root user give kFailed instead of kDeclined (for CI, where they must be present).
  static std::unique_ptr<LibvirtDaemon> Start(
      std::chrono::seconds ready_timeout = std::chrono::seconds(60));

  // Destroys and undefines every domain this fixture defined or created, stops libvirtd and
  // virtlogd by PID (SIGTERM, SIGKILL after a bounded wait), reaps them, and removes their
  // domains' logs and its own work folder.
  ~LibvirtDaemon();
  LibvirtDaemon(const LibvirtDaemon&) = delete;
  LibvirtDaemon& operator=(const LibvirtDaemon&) = delete;

  State state() const { return state_; }
  bool ready() const { return state_ == State::kReady; }
  // Returns why the fixture is not ready (empty when ready).
  const std::string& reason() const { return reason_; }
  // Returns the seconds the daemons took to answer `virsh version`.
  double startup_seconds() const { return startup_seconds_; }

  // Runs `virsh -c qemu:///system ARGS...` (LC_ALL=C) and returns its exit code and
  // output; a command still running after `timeout` is killed (exit code 124, as timeout(1)).
  RunResult Virsh(const std::vector<std::string>& args,
                  std::chrono::seconds timeout = kVirshTimeout) const;
  // Runs one virsh session reading `commands` (one per line) from its stdin: much cheaper
  // than one virsh per command.
  RunResult VirshSession(const std::string& commands,
                         std::chrono::seconds timeout = kVirshTimeout) const;

  // Writes `xml` to a file of the work folder and runs `virsh define FILE`; on success,
  // records the domain (its <name>) for teardown.
  RunResult Define(const std::string& xml);
  // Defines every document of `xmls` in one virsh session; each one defined is recorded.
  // Returns the session's result (stderr holds the errors of those that failed).
  RunResult DefineMany(const std::vector<std::string>& xmls);
  // Starts a transient domain from `xml` (`virsh create`), recorded for teardown.
  RunResult Create(const std::string& xml);
  // Runs `virsh start NAME`.
  RunResult StartDomain(const std::string& name) const;
  // Runs `virsh destroy NAME`.
  RunResult Destroy(const std::string& name) const;
  // Runs `virsh undefine NAME`; the domain is no longer recorded when it succeeds.
  RunResult Undefine(const std::string& name);
  // Runs `virsh dumpxml NAME` (with --inactive when asked).
  RunResult DumpXml(const std::string& name, bool inactive = false) const;

  // Returns the status file libvirtd keeps for a running domain: /run/libvirt/qemu/NAME.xml.
  static std::string StatusFile(const std::string& name);
  // Returns the definition file libvirtd keeps: /etc/libvirt/qemu/NAME.xml.
  static std::string DefinitionFile(const std::string& name);
  // Returns the first <name> of a domain document ("" when none).
  static std::string DomainName(const std::string& xml);
  // Creates a fresh folder (mode 0755, under /var/tmp so that every path to it is searchable)
  // for images that QEMU, running as libvirt-qemu, must open. Caller removes it (RemoveTree).
  static std::string MakeWorldReadableDir();

  // Returns the last `max_bytes` of libvirtd's own log (stderr), for failure messages.
  std::string LibvirtdLogTail(size_t max_bytes = 4000) const;
  // Returns the domains recorded for teardown, in the order they were defined.
  const std::vector<std::string>& domains() const { return domains_; }

 private:
  LibvirtDaemon() = default;
  void Bring(std::chrono::seconds ready_timeout);
  void Decline(std::string why);
  void Fail(std::string why);
  void Record(const std::string& name);
  std::string WriteXml(const std::string& xml);
  // Gives /dev/kvm to group kvm (rw) for the fixture's lifetime if it is not already.
  void OpenKvmToQemu();

  State state_ = State::kFailed;
  std::string reason_;
  double startup_seconds_ = 0;
  std::string work_dir_;  // XML files and daemon logs
  pid_t virtlogd_pid_ = -1;
  pid_t libvirtd_pid_ = -1;
  std::vector<std::string> domains_;
  int xml_counter_ = 0;
  int lock_fd_ = -1;          // flock on kLockFile, held for the fixture's lifetime
  bool kvm_changed_ = false;  // /dev/kvm's owner and mode to restore
  uid_t kvm_uid_ = 0;
  gid_t kvm_gid_ = 0;
  mode_t kvm_mode_ = 0;
};

}  // namespace chainfs::testutil

// Skips (declined) or fails (failed) the current test unless `daemon` (a
// std::unique_ptr<LibvirtDaemon>) is ready. Use in SetUp() or a TEST body.
#define CHAINFS_REQUIRE_LIBVIRT(daemon)                                                  \
  do {                                                                                   \
    if ((daemon) == nullptr) FAIL() << "LibvirtDaemon was not started (SetUpTestSuite)"; \
    if ((daemon)->state() == ::chainfs::testutil::LibvirtDaemon::State::kDeclined)       \
      GTEST_SKIP() << "no libvirtd for this test: " << (daemon)->reason();               \
    if ((daemon)->state() == ::chainfs::testutil::LibvirtDaemon::State::kFailed)         \
      FAIL() << "libvirtd did not come up: " << (daemon)->reason();                      \
  } while (0)
