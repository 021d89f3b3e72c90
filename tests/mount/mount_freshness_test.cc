// External changes while mounted (created, deleted, rebased, resized,
// renamed images) show on the next access, both with the default kernel
// caching (inotify invalidation reaching the kernel) and with
// -o cache_timeout=0 (revalidation on every access).
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

class FreshnessTest : public MountTest, public ::testing::WithParamInterface<bool> {
 protected:
  bool Cached() const { return GetParam(); }
  bool Start() {
    MakeChain();
    QemuImgCreate({"-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("over.qcow2")});
    if (Cached()) return MountPool();
    return MountPool({"-o", "cache_timeout=0"});
  }
  // Checks `value()` == expected: at once without kernel caching; with it,
  // within the time inotify needs to reach us (a few milliseconds; 5 s cap).
  void ExpectSoon(const std::function<std::string()>& value, const std::string& expected) {
    if (!Cached()) {
      EXPECT_EQ(value(), expected);
      return;
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    std::string got;
    do {
      got = value();
      if (got == expected) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (std::chrono::steady_clock::now() < deadline);
    EXPECT_EQ(got, expected);
  }
  std::string Ls(const std::string& rel) { return testutil::Run({"ls", M(rel)}).out; }
  std::string StatSize(const std::string& rel) {
    return testutil::Run({"stat", "-c", "%s", M(rel)}).out;
  }
};

TEST_P(FreshnessTest, CreatedImageAppears) {
  ASSERT_TRUE(Start());
  EXPECT_EQ(Ls("p"), "base.raw\nmid.qcow2\nover.qcow2\ntop.qcow2\n");
  struct stat st {};
  EXPECT_NE(::stat(M("p/new.qcow2").c_str(), &st), 0);  // also primes a negative lookup
  QemuImgCreate({"-f", "qcow2", P("new.qcow2"), "2M"});
  ExpectSoon([&] { return Ls("p"); }, "base.raw\nmid.qcow2\nnew.qcow2\nover.qcow2\ntop.qcow2\n");
  ExpectSoon([&] { return ReadFile(M("p/new.qcow2/capacity"), false); }, "2097152\n");
}

TEST_P(FreshnessTest, DeletedImageDisappears) {
  ASSERT_TRUE(Start());
  EXPECT_EQ(ReadFile(M("p/over.qcow2/format")), "qcow2\n");
  ASSERT_EQ(::unlink(P("over.qcow2").c_str()), 0);
  ExpectSoon([&] { return Ls("p"); }, "base.raw\nmid.qcow2\ntop.qcow2\n");
  ExpectSoon(
      [&] {
        struct stat st {};
        return std::string(::stat(M("p/over.qcow2/format").c_str(), &st) == 0 ? "present" : "gone");
      },
      "gone");
}

TEST_P(FreshnessTest, RebaseIsVisible) {
  ASSERT_TRUE(Start());
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "mid.qcow2\n");
  EXPECT_EQ(Ls("p/top.qcow2/chain"), "0\n1\n2\n");
  MustRun({"qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("top.qcow2")});
  ExpectSoon([&] { return ReadFile(M("p/top.qcow2/backing"), false); }, "base.raw\n");
  ExpectSoon([&] { return StatSize("p/top.qcow2/backing"); }, "9\n");
  ExpectSoon([&] { return ReadFile(M("p/top.qcow2/backing_format"), false); }, "raw\n");
  ExpectSoon([&] { return Ls("p/top.qcow2/chain"); }, "0\n1\n");
  ExpectSoon([&] { return Chainctl({"info", P("top.qcow2")}); },
             ReadFile(M("p/top.qcow2/info"), false));
}

TEST_P(FreshnessTest, ResizeIsVisible) {
  ASSERT_TRUE(Start());
  EXPECT_EQ(ReadFile(M("p/top.qcow2/capacity")), "67108864\n");
  EXPECT_EQ(ReadFile(M("p/mid.qcow2/chain/0/capacity")), "67108864\n");
  MustRun({"qemu-img", "resize", "-q", P("mid.qcow2"), "128M"});
  ExpectSoon([&] { return ReadFile(M("p/mid.qcow2/capacity"), false); }, "134217728\n");
  ExpectSoon([&] { return StatSize("p/mid.qcow2/capacity"); }, "10\n");
  // The overlay's view of its backing changes too.
  ExpectSoon([&] { return ReadFile(M("p/top.qcow2/chain/1/capacity"), false); }, "134217728\n");
}

TEST_P(FreshnessTest, RenameIsVisible) {
  ASSERT_TRUE(Start());
  EXPECT_EQ(ReadFile(M("p/over.qcow2/problems")), "");
  ASSERT_EQ(::rename(P("mid.qcow2").c_str(), P("mid2.qcow2").c_str()), 0);
  ExpectSoon([&] { return Ls("p"); }, "base.raw\nmid2.qcow2\nover.qcow2\ntop.qcow2\n");
  ExpectSoon([&] { return ReadFile(M("p/mid2.qcow2/backing"), false); }, "base.raw\n");
  ExpectSoon(
      [&] {
        std::string problems = ReadFile(M("p/over.qcow2/problems"), false);
        return std::string(problems.find("mid.qcow2") != std::string::npos ? "broken" : problems);
      },
      "broken");
}

INSTANTIATE_TEST_SUITE_P(KernelCache, FreshnessTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("DefaultKernelCache")
                                             : std::string("ZeroTimeout");
                         });

}  // namespace
}  // namespace chainfs::mounttest
