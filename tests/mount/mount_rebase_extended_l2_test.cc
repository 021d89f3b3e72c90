// VOL/rebase on images with extended L2 entries (subclusters): `echo PATH >
// VOL/rebase` and `echo "" > VOL/rebase` through a real mount, on a chain
// made by qemu-img -o extended_l2=on and written by qemu-io with writes
// smaller than a cluster. Checked with qemu-img check, qemu-img compare
// against a raw export taken before, and the new backing in qemu-img info.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "core/util/json.h"
#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

using Clock = std::chrono::steady_clock;

class MountRebaseExtendedL2Test : public MountTest {
 protected:
  // base.qcow2 <- top.qcow2, base2.qcow2 beside them; all extended L2 with
  // 64 KiB clusters (2 KiB subclusters), 8 MiB.
  void MakeExtendedChain() {
    const std::string o = "extended_l2=on,cluster_size=64k";
    QemuImgCreate({"-f", "qcow2", "-o", o, P("base.qcow2"), "8M"});
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 3M", "-c", "write -P 0x12 5M 7k",
             "-c", "write -z 6M 6k", P("base.qcow2")});
    QemuImgCreate({"-f", "qcow2", "-o", o, "-b", "base.qcow2", "-F", "qcow2", P("top.qcow2")});
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x33 2k 4k", "-c", "write -P 0x34 1030k 3k",
             "-c", "write -z 40k 2k", "-c", "write -P 0x35 5M 1k", P("top.qcow2")});
    QemuImgCreate({"-f", "qcow2", "-o", o, P("base2.qcow2"), "8M"});
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x44 1M 2k", "-c", "write -P 0x45 4M 100k",
             P("base2.qcow2")});
  }
  std::string WaitResult(const std::string& vol, double seconds = 120) {
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    std::string text;
    while (Clock::now() < deadline) {
      text = ReadFile(M("p/" + vol + "/rebase"));
      if (text.rfind("done: ", 0) == 0 || text.rfind("failed: ", 0) == 0) return text;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "no result in " << seconds << " s; last: '" << text << "'";
    return "";
  }
};

TEST_F(MountRebaseExtendedL2Test, EchoPathRebasesAndEchoEmptyFlattensKeepingGuestContent) {
  MakeExtendedChain();
  const std::string before = tmp_.Sub("before.raw");
  MustRun({"qemu-img", "convert", "-O", "raw", P("top.qcow2"), before});
  ASSERT_TRUE(MountPool());

  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base2.qcow2\n"), 0);
  std::string result = WaitResult("top.qcow2");
  EXPECT_EQ(result.rfind("done: rebased onto 'base2.qcow2' in ", 0), 0u) << result;
  ExpectQemuCheckClean(P("top.qcow2"));
  core::Json info = QemuInfo(P("top.qcow2"));
  EXPECT_EQ(InfoString(info, "backing-filename"), "base2.qcow2");
  EXPECT_EQ(InfoString(info, "backing-filename-format"), "qcow2");
  ExpectSameGuestContent(P("top.qcow2"), before);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "base2.qcow2\n");

  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "\n"), 0);
  result = WaitResult("top.qcow2");
  EXPECT_EQ(result.rfind("done: flattened in ", 0), 0u) << result;
  ExpectQemuCheckClean(P("top.qcow2"));
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename"), "<none>");
  ExpectSameGuestContent(P("top.qcow2"), before);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "");
}

}  // namespace
}  // namespace chainfs::mounttest
