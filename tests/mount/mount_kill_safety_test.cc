// A killed daemon never wedges the mount (fs/dir_gate.h): no daemon thread
// may be left blocked in the kernel on a lock that a request in flight
// holds, so SIGKILL always ends the process and frees /dev/fuse, with no
// fusectl. And the entry invalidations that the gate defers or skips still
// keep what the kernel shows current.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/format/qcow2/writer.h"
#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

bool WaitFor(const std::function<bool()>& done, double seconds = 5) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void MakeOverlay(const std::string& path) {
  core::Qcow2CreateOptions o;
  o.size = 1 << 20;
  o.backing = "base.raw";
  o.backing_format = "raw";
  ASSERT_TRUE(core::CreateQcow2(path, o).ok()) << path;
}

// Outside changes (create, rename, delete: entry invalidations for names
// the kernel holds) race with lookups, listings, ln -s and mv through the
// mount (requests that hold the pool directory's lock); the daemon is
// SIGKILLed at a random moment and must exit by itself, every round.
TEST_F(MountTest, KillWhileOutsideChangesRaceWithRequestsNeverWedges) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  std::mt19937 rng(12345);
  constexpr int kRounds = 8;
  for (int round = 0; round < kRounds; ++round) {
    for (int i = 0; i < 20; ++i) MakeOverlay(P("o" + std::to_string(i) + ".qcow2"));
    ASSERT_TRUE(MountPool());
    std::atomic<bool> stop{false};
    std::thread outside([&] {
      for (int i = 0; !stop; i = (i + 1) % 20) {
        std::string a = P("o" + std::to_string(i) + ".qcow2");
        std::string b = P("moved" + std::to_string(i) + ".qcow2");
        (void)!::rename(a.c_str(), b.c_str());
        (void)!::rename(b.c_str(), a.c_str());
        (void)!::unlink(P("tmp" + std::to_string(i)).c_str());
      }
    });
    std::thread readers([&] {
      for (int i = 0; !stop; i = (i + 1) % 20) {
        Exists(M("p/o" + std::to_string(i) + ".qcow2/format"));
        Exists(M("p/moved" + std::to_string(i) + ".qcow2"));
        std::error_code ec;
        for (auto it = std::filesystem::directory_iterator(M("p"), ec);
             !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        }
      }
    });
    std::thread writers([&] {
      for (int i = 0; !stop; ++i) {
        std::string n = M("p/l" + std::to_string(i % 50));
        if (::symlink("base.raw", n.c_str()) == 0) (void)!::rename(n.c_str(), (n + "x").c_str());
        (void)!::rmdir((n + "x").c_str());
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
    pid_t pid = mount_.pid();
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = mount_.WaitExit(20);
    stop = true;
    if (status == -1) {
      ADD_FAILURE() << "round " << round << ": the killed daemon did not exit (wedged)";
      mount_.ForceAbort();
    }
    outside.join();
    readers.join();
    writers.join();
    mount_.Stop();
    ASSERT_FALSE(IsMounted(mnt_));
    for (const auto& e : std::filesystem::directory_iterator(pool_)) {
      if (e.path().filename() != "base.raw") std::filesystem::remove(e.path());
    }
  }
}

// The window the gate cannot close (a request the kernel queued, holding
// the directory's lock, that the daemon has not read yet) is forced here:
// with CHAINFS_FAULT_WEDGE_RENAME=1 a rename invalidates an entry of its own
// directory before replying, so its thread blocks in the kernel for good.
// SIGKILL then leaves that thread behind; the wedge guardian must see it and
// abort the connection, so that the process ends and the rename returns.
TEST_F(MountTest, WedgeGuardianFreesADaemonKilledWhileBlockedInTheKernel) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  ASSERT_EQ(::setenv("CHAINFS_FAULT_WEDGE_RENAME", "1", 1), 0);
  bool mounted = MountPool();
  ::unsetenv("CHAINFS_FAULT_WEDGE_RENAME");
  ASSERT_TRUE(mounted);
  std::atomic<int> rename_errno{-1};
  std::thread mover([&] {
    int rc = ::rename(M("p/base.raw").c_str(), M("p/moved.raw").c_str());
    rename_errno = rc == 0 ? 0 : errno;
  });
  // The rename is stuck in its handler (the image is renamed, no reply).
  ASSERT_TRUE(WaitFor([&] { return Exists(P("moved.raw")) && !Exists(P("base.raw")); }, 20));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(rename_errno.load(), -1) << "the rename was expected to hang";
  ASSERT_EQ(::kill(mount_.pid(), SIGKILL), 0);
  auto killed = std::chrono::steady_clock::now();
  int status = mount_.WaitExit(20);
  double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  if (status == -1) {
    ADD_FAILURE() << "the wedged daemon was not freed by its guardian";
    mount_.ForceAbort();
  }
  mover.join();
  EXPECT_NE(rename_errno.load(), -1);
  std::printf("guardian freed the killed daemon in %.2f s (rename errno %d)\n", took,
              rename_errno.load());
  EXPECT_LT(took, 10.0);
  mount_.Stop();
  EXPECT_FALSE(IsMounted(mnt_));
  EXPECT_TRUE(Exists(P("moved.raw")));
}

// rmdir through the mount: the kernel drops the entry itself. When the name
// comes back outside the mount, is looked up, and goes again, the kernel's
// new entry must be dropped.
TEST_F(MountTest, NameRemovedThroughTheMountThenRecreatedAndRemovedOutsideDisappears) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  MakeOverlay(P("x.qcow2"));
  ASSERT_TRUE(MountPool());
  ASSERT_TRUE(Exists(M("p/x.qcow2/format")));
  ASSERT_EQ(::rmdir(M("p/x.qcow2").c_str()), 0);
  EXPECT_FALSE(Exists(M("p/x.qcow2")));
  MakeOverlay(P("x.qcow2"));
  EXPECT_TRUE(WaitFor([&] { return Exists(M("p/x.qcow2/format")); }));
  ASSERT_EQ(::unlink(P("x.qcow2").c_str()), 0);
  EXPECT_TRUE(WaitFor([&] { return !Exists(M("p/x.qcow2")); }))
      << "the kernel still shows the volume removed outside the mount";
  // And the name can be made again through the mount.
  EXPECT_EQ(::symlink("base.raw", M("p/x.qcow2").c_str()), 0) << std::strerror(errno);
  EXPECT_TRUE(WaitFor([&] { return Exists(M("p/x.qcow2/format")); }));
}

// A volume removed outside the mount while a long request (a rename with
// many dependents) holds the pool directory: its entry is dropped once
// the request has answered.
TEST_F(MountTest, EntryRemovedOutsideDuringALongRenameIsDroppedAfterIt) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  for (int i = 0; i < 150; ++i) MakeOverlay(P("d" + std::to_string(i) + ".qcow2"));
  MakeOverlay(P("victim.qcow2"));
  ASSERT_TRUE(MountPool());
  ASSERT_TRUE(Exists(M("p/victim.qcow2/format")));
  std::thread mover([&] {
    EXPECT_EQ(::rename(M("p/base.raw").c_str(), M("p/moved.raw").c_str()), 0)
        << std::strerror(errno);
  });
  ASSERT_EQ(::unlink(P("victim.qcow2").c_str()), 0);
  mover.join();
  EXPECT_TRUE(WaitFor([&] { return !Exists(M("p/victim.qcow2")); }));
  EXPECT_TRUE(Exists(M("p/moved.raw/format")));
  EXPECT_FALSE(Exists(M("p/base.raw")));
}

}  // namespace
}  // namespace chainfs::mounttest
