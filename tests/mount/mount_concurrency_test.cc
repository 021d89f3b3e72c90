// Several hundred readers at once all get correct content.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

TEST_F(MountTest, ThreeHundredConcurrentReadersGetCorrectContent) {
  MakeChain();
  for (int i = 0; i < 8; ++i) {
    QemuImgCreate({"-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("o" + std::to_string(i) + ".qcow2")});
  }
  ASSERT_TRUE(MountPool());
  std::vector<std::string> files;
  for (const std::string vol : {"top.qcow2", "mid.qcow2", "base.raw", "o0.qcow2", "o5.qcow2"}) {
    for (const char* f : {"info", "info.json", "disk.xml", "volume.xml", "backing", "capacity",
                          "chain/0/path", "chain/0/format"}) {
      files.push_back(M("p/" + vol + "/" + f));
    }
  }
  std::map<std::string, std::string> expected;
  for (const std::string& f : files) expected[f] = ReadFile(f);
  ASSERT_EQ(expected[M("p/top.qcow2/backing")], "mid.qcow2\n");

  constexpr int kThreads = 300;
  std::atomic<int> wrong{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < 6; ++k) {
        const std::string& f = files[(size_t(t) * 7 + k * 13) % files.size()];
        std::string got = ReadFile(f, false);
        ++reads;
        if (got != expected.at(f)) ++wrong;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(reads.load(), kThreads * 6);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(ReadFile(M(".chainfs/stats")).find("\nerrors 0\n") != std::string::npos, true)
      << ReadFile(M(".chainfs/stats"));
}

}  // namespace
}  // namespace chainfs::mounttest
