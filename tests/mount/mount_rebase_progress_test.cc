// The progress line of VOL/rebase shows the real total (the image's guest
// size) from the first `cat` on, never "0% (0/0 bytes)": the total is read
// from the image's header when the job starts, before the work has resolved
// and opened both chains (fs/rebase_jobs.h).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/format/qcow2/writer.h"
#include "fs/rebase_jobs.h"
#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kGuestSize = 256ull << 20;

// Parses "running: WHAT P% (DONE/TOTAL bytes)\n" exactly, WHAT being
// `what` ("onto 'B'" or "flatten").
bool ParseRunning(const std::string& text, const std::string& what, uint64_t* done,
                  uint64_t* total) {
  std::string prefix = "running: " + what + " ";
  if (text.rfind(prefix, 0) != 0) return false;
  unsigned long long p = 0, d = 0, t = 0;
  int end = -1;
  if (std::sscanf(text.c_str() + prefix.size(), "%llu%% (%llu/%llu bytes)\n%n", &p, &d, &t, &end) !=
          3 ||
      size_t(end) != text.size() - prefix.size()) {
    return false;
  }
  *done = d;
  *total = t;
  return true;
}

void MakeQcow2(const std::string& path, uint64_t size, const std::optional<std::string>& backing) {
  core::Qcow2CreateOptions o;
  o.size = size;
  if (backing) {
    o.backing = *backing;
    o.backing_format = "qcow2";
  }
  core::Status s = core::CreateQcow2(path, o);
  ASSERT_TRUE(s.ok()) << path << ": " << s.ToString();
}

class MountRebaseProgressTest : public MountTest {
 protected:
  // base.qcow2 (200 MiB of data) <- e001 ... e100 <- top.qcow2, all 256
  // MiB; base2.qcow2 empty. A rebase of top onto base2 opens a 102-deep
  // chain before it copies, then copies 200 MiB.
  void MakeDeepChain() {
    MustRun({"qemu-img", "create", "-q", "-f", "qcow2", P("base.qcow2"), "256M"});
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 200M", P("base.qcow2")});
    std::string below = "base.qcow2";
    for (int i = 1; i <= 100; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "e%03d.qcow2", i);
      MakeQcow2(P(name), kGuestSize, below);
      if (HasFatalFailure()) return;
      below = name;
    }
    MakeQcow2(P("top.qcow2"), kGuestSize, below);
    MakeQcow2(P("base2.qcow2"), kGuestSize, std::nullopt);
  }

  // Reads VOL/rebase of top.qcow2 until the job ends, expecting every
  // progress line to carry the guest size as its total; returns the number
  // of progress lines seen. `first` is what was read right after the start.
  int ExpectRealTotalUntilDone(const std::string& what, const std::string& first) {
    int samples = 0;
    std::string text = first;
    auto deadline = Clock::now() + std::chrono::seconds(300);
    while (text.rfind("running: ", 0) == 0 && Clock::now() < deadline) {
      uint64_t done = 0, total = 0;
      EXPECT_TRUE(ParseRunning(text, what, &done, &total)) << text;
      EXPECT_EQ(total, kGuestSize) << "progress line: " << text;
      EXPECT_LE(done, total);
      ++samples;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      text = ReadFile(M("p/top.qcow2/rebase"));
    }
    EXPECT_TRUE(text.rfind("done: ", 0) == 0) << text;
    return samples;
  }
};

TEST_F(MountRebaseProgressTest, FirstProgressLineShowsTheRealTotal) {
  MakeDeepChain();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(MountPool());
  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base2.qcow2\n"), 0);
  std::string first = ReadFile(M("p/top.qcow2/rebase"));
  ASSERT_EQ(first.rfind("running: ", 0), 0u) << "the job ended before it was read: " << first;
  uint64_t done = 1, total = 0;
  ASSERT_TRUE(ParseRunning(first, "onto 'base2.qcow2'", &done, &total)) << first;
  EXPECT_EQ(total, kGuestSize) << first;
  EXPECT_GE(ExpectRealTotalUntilDone("onto 'base2.qcow2'", first), 1);
  ExpectQemuCheckClean(P("top.qcow2"));
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename"), "base2.qcow2");

  // A flatten shows it too.
  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "\n"), 0);
  first = ReadFile(M("p/top.qcow2/rebase"));
  if (first.rfind("running: ", 0) == 0) {
    ASSERT_TRUE(ParseRunning(first, "flatten", &done, &total)) << first;
    EXPECT_EQ(total, kGuestSize) << first;
    ExpectRealTotalUntilDone("flatten", first);
  } else {
    EXPECT_EQ(first.rfind("done: flattened in ", 0), 0u) << first;
  }
  ExpectQemuCheckClean(P("top.qcow2"));
}

// Without a mount: the total is there before the work reports anything.
TEST(RebaseJobsProgress, TotalIsTheGuestSizeBeforeTheWorkReports) {
  testutil::ScopedTempDir tmp;
  std::string image = tmp.Sub("img.qcow2");
  MakeQcow2(image, 3ull << 30, std::nullopt);
  if (::testing::Test::HasFatalFailure()) return;
  fs::RebaseJobs jobs;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  const fs::RebaseJobs::Progress* seen = nullptr;
  core::Status started = jobs.Start(
      image, "", std::nullopt,
      [&](const fs::RebaseJobs::Progress& progress) {
        std::unique_lock<std::mutex> lock(mu);
        seen = &progress;
        cv.notify_all();
        cv.wait(lock, [&] { return release; });
        progress(1 << 20, 3ull << 30);
        return core::Status::Ok();
      },
      nullptr);
  ASSERT_TRUE(started.ok()) << started.ToString();
  EXPECT_EQ(jobs.Render(image), "running: flatten 0% (0/3221225472 bytes)\n");
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return seen != nullptr; });
  }
  EXPECT_EQ(jobs.Render(image), "running: flatten 0% (0/3221225472 bytes)\n");
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(jobs.WaitAll(std::chrono::seconds(10)));
  EXPECT_EQ(jobs.Render(image).rfind("done: flattened in ", 0), 0u) << jobs.Render(image);
}

}  // namespace
}  // namespace chainfs::mounttest
