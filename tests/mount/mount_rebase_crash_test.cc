// Crash safety of `echo PATH > VOL/rebase` (issue 5): the chainfs daemon is
// SIGKILLed at random points of a rebase of a 1 GiB 3-image chain, many times
// over. After each kill, `qemu-img check` finds no corruption (leaked
// clusters are allowed) and `qemu-img compare` shows the guest-visible
// content unchanged; at the end the rebase is run to completion and checked
// the same way. CHAINFS_MOUNT_REBASE_CRASH_ITERS sets the number of kills.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "mount/mount_fixture.h"
#include "util/run.h"

namespace chainfs::mounttest {
namespace {

int Iterations() {
  const char* env = std::getenv("CHAINFS_MOUNT_REBASE_CRASH_ITERS");
  int n = env ? std::atoi(env) : 12;
  return n > 0 ? n : 12;
}

void QemuIo(const std::string& format, const std::string& image, const std::string& cmd) {
  MustRun({"qemu-io", "-f", format, "-c", cmd, image});
}

class MountRebaseCrash : public MountTest {
 protected:
  // base.raw (1 GiB, data in 48 places) <- mid.qcow2 (overlays in 40 places)
  // <- top.qcow2 (overlays in 24 places). Rebasing top onto base must copy
  // what mid provides into top.
  void MakeBigChain() {
    std::mt19937_64 rng(20261121);
    auto offset = [&](uint64_t unit) { return (rng() % ((1ull << 30) / unit)) * unit; };
    QemuImgCreate({"-f", "raw", P("base.raw"), "1G"});
    for (int i = 0; i < 48; ++i) {
      QemuIo("raw", P("base.raw"), fmt::format("write -P {} {} 4M", 1 + i, offset(4 << 20)));
    }
    QemuImgCreate({"-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
    for (int i = 0; i < 40; ++i) {
      QemuIo("qcow2", P("mid.qcow2"), fmt::format("write -P {} {} 2M", 100 + i, offset(64 << 10)));
    }
    QemuImgCreate({"-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
    for (int i = 0; i < 24; ++i) {
      QemuIo("qcow2", P("top.qcow2"), fmt::format("write -P {} {} 1M", 200 + i, offset(64 << 10)));
    }
    MustRun({"qemu-img", "convert", "-O", "raw", P("top.qcow2"), tmp_.Sub("before.raw")});
  }

  // Asserts the image is consistent and shows the original guest content.
  void ExpectIntact(const std::string& when) {
    testutil::RunResult check = testutil::Run({"qemu-img", "check", P("top.qcow2")});
    // 0: clean; 3: leaked clusters only. 2 would be corruption.
    EXPECT_TRUE(check.exit_code == 0 || check.exit_code == 3)
        << when << ": qemu-img check exit " << check.exit_code << "\n" << check.out << check.err;
    testutil::RunResult cmp =
        testutil::Run({"qemu-img", "compare", P("top.qcow2"), tmp_.Sub("before.raw")});
    EXPECT_EQ(cmp.exit_code, 0) << when << ": " << cmp.out << cmp.err;
  }
};

TEST_F(MountRebaseCrash, SigkillOfTheDaemonAtRandomPointsNeverChangesGuestContent) {
  MakeBigChain();
  std::mt19937 rng(7);
  int interrupted = 0;
  for (int i = 0; i < Iterations(); ++i) {
    ASSERT_TRUE(MountPool());
    int err = WriteValue(M("p/top.qcow2/rebase"), "base.raw\n");
    ASSERT_EQ(err, 0) << "iteration " << i << ": " << std::strerror(err);
    auto delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 350)(rng));
    std::this_thread::sleep_for(delay);
    std::string status = ReadFile(M("p/top.qcow2/rebase"), false);
    if (status.rfind("running:", 0) == 0) ++interrupted;
    ASSERT_EQ(::kill(mount_.pid(), SIGKILL), 0);
    mount_.Stop();
    ExpectIntact("after kill " + std::to_string(i) + " (" + status + ")");
    if (HasFailure()) return;
    // A finished rebase leaves top on base: put it back for the next round.
    testutil::RunResult info = testutil::Run({"qemu-img", "info", "--output=json", P("top.qcow2")});
    if (info.out.find("\"backing-filename\": \"base.raw\"") != std::string::npos) {
      MustRun({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "mid.qcow2",
               P("top.qcow2")});
      ExpectIntact("after putting back " + std::to_string(i));
    }
  }
  // The kills must have landed inside rebases, or this proved nothing.
  EXPECT_GT(interrupted, 0) << "no kill interrupted a running rebase";
  // Finish the job for real and check once more.
  ASSERT_TRUE(MountPool());
  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base.raw\n"), 0);
  std::string status;
  for (int t = 0; t < 600; ++t) {
    status = ReadFile(M("p/top.qcow2/rebase"), false);
    if (status.rfind("running:", 0) != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(status.rfind("done:", 0), 0u) << status;
  mount_.Stop();
  testutil::RunResult check = testutil::Run({"qemu-img", "check", P("top.qcow2")});
  EXPECT_TRUE(check.exit_code == 0 || check.exit_code == 3) << check.out;
  testutil::RunResult info = testutil::Run({"qemu-img", "info", "--output=json", P("top.qcow2")});
  EXPECT_NE(info.out.find("\"backing-filename\": \"base.raw\""), std::string::npos) << info.out;
  ExpectIntact("after the completed rebase");
}

}  // namespace
}  // namespace chainfs::mounttest
