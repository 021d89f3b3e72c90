// VOL/rebase (DESIGN section 2): `echo PATH > VOL/rebase` starts a
// data-preserving rebase in the background, `echo "" > VOL/rebase` flattens,
// `cat VOL/rebase` shows progress and then the last result. Every result is
// checked with qemu-img check / info / compare against a raw export taken
// before; every refusal for its errno, its log line and an unchanged pool.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/util/json.h"
#include "core/write/in_use.h"
#include "fs/rebase_jobs.h"
#include "mount/mount_fixture.h"
#include "util/dir_fingerprint.h"
#include "util/qemu_holder.h"

namespace chainfs::mounttest {
namespace {

using Clock = std::chrono::steady_clock;

// Returns true if `text` is exactly `prefix` + "D+.D s\n" (a duration with
// one decimal). (Hand-written: GCC 12 -O1 warns falsely inside std::regex.)
bool MatchesDuration(const std::string& text, const std::string& prefix) {
  if (text.rfind(prefix, 0) != 0) return false;
  size_t i = prefix.size(), digits = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++digits;
  if (digits == 0 || i + 1 >= text.size() || text[i] != '.') return false;
  if (!std::isdigit(static_cast<unsigned char>(text[i + 1]))) return false;
  return text.substr(i + 2) == " s\n";
}

// Parses "running: onto 'base2.qcow2' P% (DONE/TOTAL bytes)\n" exactly.
bool ParseRunning(const std::string& text, uint64_t* percent, uint64_t* done, uint64_t* total) {
  unsigned long long p = 0, d = 0, t = 0;
  int end = -1;
  if (std::sscanf(text.c_str(), "running: onto 'base2.qcow2' %llu%% (%llu/%llu bytes)\n%n", &p,
                  &d, &t, &end) != 3 ||
      end != int(text.size())) {
    return false;
  }
  *percent = p;
  *done = d;
  *total = t;
  return true;
}

void QemuIoWrite(const std::string& path, const std::string& fmt, const std::string& pattern,
                 const std::string& off, const std::string& len) {
  MustRun({"qemu-io", "-f", fmt, "-c", "write -P " + pattern + " " + off + " " + len, path});
}

class MountRebaseTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    ref_ = tmp_.Sub("ref");
    ASSERT_EQ(::mkdir(ref_.c_str(), 0755), 0);
  }
  // Flattens the guest view of `image` into a raw file outside the pool.
  std::string Snapshot(const std::string& image, const std::string& name) {
    std::string out = ref_ + "/" + name;
    MustRun({"qemu-img", "convert", "-U", "-O", "raw", image, out});
    return out;
  }
  // base.qcow2 (0x11 at 0..1M, 0x12 at 3M..4M) <- top.qcow2 (0x33 at
  // 1M..1M+64k); base2.qcow2 (0x44 at 512k..2M) has other data; all 8 MiB.
  void MakeSmallChain() {
    QemuImgCreate({"-f", "qcow2", P("base.qcow2"), "8M"});
    QemuIoWrite(P("base.qcow2"), "qcow2", "0x11", "0", "1M");
    QemuIoWrite(P("base.qcow2"), "qcow2", "0x12", "3M", "1M");
    QemuImgCreate({"-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", P("top.qcow2")});
    QemuIoWrite(P("top.qcow2"), "qcow2", "0x33", "1M", "64k");
    QemuImgCreate({"-f", "qcow2", P("base2.qcow2"), "8M"});
    QemuIoWrite(P("base2.qcow2"), "qcow2", "0x44", "512k", "1536k");
  }
  // The same shape at 256 MiB with 200 MiB of data in the old base, so that
  // a rebase onto the empty base2.qcow2 copies for a while.
  void MakeBigChain() {
    QemuImgCreate({"-f", "qcow2", P("base.qcow2"), "256M"});
    QemuIoWrite(P("base.qcow2"), "qcow2", "0x5a", "0", "200M");
    QemuImgCreate({"-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", P("top.qcow2")});
    QemuIoWrite(P("top.qcow2"), "qcow2", "0x33", "1M", "64k");
    QemuImgCreate({"-f", "qcow2", P("base2.qcow2"), "256M"});
  }
  // Polls VOL/rebase until it shows a result; returns it ("" on timeout,
  // with a test failure).
  std::string WaitResult(const std::string& vol, double seconds = 180) {
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
  // Expects stat's size of VOL/rebase to equal its content's length (a job
  // may change the text between the two calls: a few tries).
  void ExpectStatSizeMatchesContent(const std::string& vol) {
    std::string path = M("p/" + vol + "/rebase");
    for (int i = 0; i < 20; ++i) {
      struct stat st {};
      ASSERT_EQ(::stat(path.c_str(), &st), 0);
      std::string text = ReadFile(path);
      if (uint64_t(st.st_size) == text.size()) return;
    }
    ADD_FAILURE() << "stat size of " << path << " never matched its content";
  }

  std::string ref_;
};

TEST_F(MountRebaseTest, RebaseFileIsEmptyAndWritableByTheOwnerBeforeAnyRebase) {
  MakeSmallChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M("p/top.qcow2/rebase")), "");
  struct stat st {};
  ASSERT_EQ(::stat(M("p/top.qcow2/rebase").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_NE(st.st_mode & S_IWUSR, 0u) << "the image's owner may write VOL/rebase";
  EXPECT_NE(st.st_mode & S_IRUSR, 0u);
}

TEST_F(MountRebaseTest, EchoPathRebasesOntoAnotherBaseKeepingGuestContent) {
  MakeSmallChain();
  std::string before = Snapshot(P("top.qcow2"), "top.raw");
  ASSERT_TRUE(MountPool());
  testutil::RunResult r =
      testutil::Run({"bash", "-c", "echo base2.qcow2 > " + M("p/top.qcow2/rebase")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string result = WaitResult("top.qcow2");
  EXPECT_TRUE(MatchesDuration(result, "done: rebased onto 'base2.qcow2' in ")) << result;
  ExpectStatSizeMatchesContent("top.qcow2");
  ExpectQemuCheckClean(P("top.qcow2"));
  core::Json info = QemuInfo(P("top.qcow2"));
  EXPECT_EQ(InfoString(info, "backing-filename"), "base2.qcow2");
  EXPECT_EQ(InfoString(info, "backing-filename-format"), "qcow2");
  ExpectSameGuestContent(P("top.qcow2"), before);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "base2.qcow2\n");
  ExpectLogged("write", "/p/top.qcow2/rebase", "ok", "rebase onto 'base2.qcow2' started");
  ExpectLogged("rebase", "/p/top.qcow2", "ok", "rebase onto 'base2.qcow2' finished");
}

TEST_F(MountRebaseTest, EchoEmptyLineFlattensOntoNothing) {
  MakeSmallChain();
  std::string before = Snapshot(P("top.qcow2"), "top.raw");
  ASSERT_TRUE(MountPool());
  testutil::RunResult r = testutil::Run({"bash", "-c", "echo '' > " + M("p/top.qcow2/rebase")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string result = WaitResult("top.qcow2");
  EXPECT_TRUE(MatchesDuration(result, "done: flattened in ")) << result;
  ExpectQemuCheckClean(P("top.qcow2"));
  core::Json info = QemuInfo(P("top.qcow2"));
  EXPECT_EQ(InfoString(info, "backing-filename"), "<none>");
  ExpectSameGuestContent(P("top.qcow2"), before);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "");
  EXPECT_EQ(MustRun({"ls", M("p/top.qcow2/chain")}).out, "0\n");
  ExpectLogged("rebase", "/p/top.qcow2", "ok", "flatten finished");
}

TEST_F(MountRebaseTest, ProgressIsShownWhileRunningAndSecondStartIsBusy) {
  MakeBigChain();
  std::string before = Snapshot(P("top.qcow2"), "top.raw");
  ASSERT_TRUE(MountPool());
  auto started = Clock::now();
  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base2.qcow2\n"), 0);
  double start_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  // Refused right away while the job runs (200 MiB to copy): another start,
  // a metadata retarget, a rename of the image or of its new backing.
  int again = WriteValue(M("p/top.qcow2/rebase"), "base2.qcow2\n");
  std::string after_again = ReadFile(M("p/top.qcow2/rebase"));
  if (after_again.rfind("running: ", 0) == 0) {
    EXPECT_EQ(again, EBUSY);
    ExpectLogged("write", "/p/top.qcow2/rebase", "EBUSY", "already running");
    EXPECT_EQ(WriteValue(M("p/top.qcow2/backing"), "base2.qcow2\n"), EBUSY);
    EXPECT_EQ(::rename(M("p/base2.qcow2").c_str(), M("p/base3.qcow2").c_str()), -1);
    EXPECT_EQ(errno, EBUSY);
  } else {
    ADD_FAILURE() << "the job ended before a second start could be tried: " << after_again;
  }
  // Samples of the progress line: well-formed, monotonic.
  int samples = 0;
  uint64_t last_done = 0;
  std::string text;
  auto deadline = Clock::now() + std::chrono::seconds(180);
  while (Clock::now() < deadline) {
    text = ReadFile(M("p/top.qcow2/rebase"));
    if (text.rfind("running: ", 0) != 0) break;
    uint64_t percent = 0, done = 0, total = 0;
    ASSERT_TRUE(ParseRunning(text, &percent, &done, &total)) << text;
    EXPECT_LE(percent, 100u);
    EXPECT_LE(done, total);
    EXPECT_GE(done, last_done) << "progress went backwards";
    if (total > 0) {
      EXPECT_EQ(percent, done * 100 / total);
    }
    last_done = done;
    ++samples;
    if (samples == 1) ExpectStatSizeMatchesContent("top.qcow2");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::string result = WaitResult("top.qcow2");
  EXPECT_EQ(result.rfind("done: rebased onto 'base2.qcow2' in ", 0), 0u) << result;
  EXPECT_GT(samples + (after_again.rfind("running: ", 0) == 0 ? 1 : 0), 0)
      << "never saw the job running";
  EXPECT_LT(start_seconds, 2.0) << "the write must not wait for the copy";
  ExpectQemuCheckClean(P("top.qcow2"));
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename"), "base2.qcow2");
  ExpectSameGuestContent(P("top.qcow2"), before);
  // Once finished, the same image can be rebased again (back onto base).
  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base.qcow2\n"), 0);
  result = WaitResult("top.qcow2");
  EXPECT_EQ(result.rfind("done: rebased onto 'base.qcow2' in ", 0), 0u) << result;
  ExpectQemuCheckClean(P("top.qcow2"));
  ExpectSameGuestContent(P("top.qcow2"), before);
}

TEST_F(MountRebaseTest, MissingTargetIsRefusedWithEnoentAndChangesNothing) {
  MakeSmallChain();
  ASSERT_TRUE(MountPool());
  auto before = testutil::DirectoryFingerprint(pool_);
  testutil::RunResult r =
      testutil::Run({"bash", "-c", "echo nothere.qcow2 > " + M("p/top.qcow2/rebase")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("No such file"), std::string::npos) << r.err;
  EXPECT_EQ(WriteValue(M("p/top.qcow2/rebase"), "nothere.qcow2\n"), ENOENT);
  ExpectLogged("write", "/p/top.qcow2/rebase", "ENOENT", "does not exist");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/rebase")), "") << "no job was started";
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

TEST_F(MountRebaseTest, ImageInUseIsRefusedWithEbusyAndChangesNothing) {
  MakeSmallChain();
  ASSERT_TRUE(MountPool());
  testutil::QemuHolder holder(P("top.qcow2"), "qcow2");
  ASSERT_TRUE(holder.holding()) << "qemu-io did not take the image locks";
  auto before = testutil::DirectoryFingerprint(pool_);
  EXPECT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base2.qcow2\n"), EBUSY);
  ExpectLogged("write", "/p/top.qcow2/rebase", "EBUSY", "");
  EXPECT_EQ(WriteValue(M("p/top.qcow2/rebase"), "\n"), EBUSY);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/rebase")), "");
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

TEST_F(MountRebaseTest, NonQcow2ImageIsRefusedWithEnotsup) {
  MakeSmallChain();
  QemuImgCreate({"-f", "raw", P("disk.raw"), "8M"});
  ASSERT_TRUE(MountPool());
  auto before = testutil::DirectoryFingerprint(pool_);
  EXPECT_EQ(WriteValue(M("p/disk.raw/rebase"), "base2.qcow2\n"), ENOTSUP);
  ExpectLogged("write", "/p/disk.raw/rebase", "ENOTSUP", "not qcow2");
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

TEST_F(MountRebaseTest, UnreadableOldChainFailsInTheBackgroundWithEio) {
  MakeSmallChain();
  QemuImgCreate({"-f", "qcow2", P("gone.qcow2"), "8M"});
  QemuImgCreate({"-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", P("orphan.qcow2")});
  ASSERT_EQ(::unlink(P("gone.qcow2").c_str()), 0);
  ASSERT_TRUE(MountPool());
  auto before = testutil::DirectoryFingerprint(pool_);
  // Accepted (the old chain is read by the job), then failed there.
  ASSERT_EQ(WriteValue(M("p/orphan.qcow2/rebase"), "base2.qcow2\n"), 0);
  std::string result = WaitResult("orphan.qcow2");
  EXPECT_EQ(result.rfind("failed: EIO: ", 0), 0u) << result;
  EXPECT_NE(result.find("old backing chain"), std::string::npos) << result;
  ExpectStatSizeMatchesContent("orphan.qcow2");
  ExpectLogged("rebase", "/p/orphan.qcow2", "EIO", "old backing chain");
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

TEST_F(MountRebaseTest, ReadOnlyMountRefusesRebaseWithErofs) {
  MakeSmallChain();
  ASSERT_TRUE(MountPool({"-o", "ro"}));
  auto before = testutil::DirectoryFingerprint(pool_);
  EXPECT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base2.qcow2\n"), EROFS);
  ExpectLogged("setattr", "/p/top.qcow2/rebase", "EROFS", "read-only");
  EXPECT_EQ(WriteValue(M("p/top.qcow2/rebase"), "\n"), EROFS);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/rebase")), "");
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

TEST_F(MountRebaseTest, SigtermWhileRebasingWaitsForTheJobToFinish) {
  MakeBigChain();
  std::string before = Snapshot(P("top.qcow2"), "top.raw");
  ASSERT_TRUE(MountPool());
  ASSERT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base2.qcow2\n"), 0);
  bool was_running = ReadFile(M("p/top.qcow2/rebase")).rfind("running: ", 0) == 0;
  ASSERT_EQ(::kill(mount_.pid(), SIGTERM), 0);
  int status = mount_.WaitExit(double(fs::kRebaseShutdownWait.count()) + 30);
  ASSERT_NE(status, -1) << "the daemon did not exit";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << mount_.DaemonOutput();
  EXPECT_FALSE(IsMounted(mnt_));
  std::string out = mount_.DaemonOutput();
  EXPECT_NE(out.find("rebase /p/top.qcow2 ok"), std::string::npos) << out;
  if (was_running) {
    EXPECT_NE(out.find("waiting up to"), std::string::npos) << out;
  }
  ExpectQemuCheckClean(P("top.qcow2"));
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename"), "base2.qcow2");
  ExpectSameGuestContent(P("top.qcow2"), before);
}

TEST(RebaseText, RendersProgressAndResults) {
  EXPECT_EQ(fs::RenderRebaseProgress(std::string("base2.qcow2"), 471859200, 1073741824),
            "running: onto 'base2.qcow2' 43% (471859200/1073741824 bytes)\n");
  EXPECT_EQ(fs::RenderRebaseProgress(std::nullopt, 0, 0), "running: flatten 0% (0/0 bytes)\n");
  EXPECT_EQ(fs::RenderRebaseResult(std::string("b"), core::Status::Ok(), 3.24),
            "done: rebased onto 'b' in 3.2 s\n");
  EXPECT_EQ(fs::RenderRebaseResult(std::nullopt, core::Status::Ok(), 0.04),
            "done: flattened in 0.0 s\n");
  EXPECT_EQ(fs::RenderRebaseResult(std::string("b"),
                                   core::Status(core::Code::kIo, "cannot\nread", EIO), 1),
            "failed: EIO: cannot read\n");
  EXPECT_EQ(fs::RenderRebaseResult(std::string("b"),
                                   core::Error(core::Code::kPermissionDenied, "untrusted"), 1),
            "failed: EACCES: untrusted\n");
}

TEST(RebaseJobsUnit, OneJobPerImageAndLastResultAfter) {
  fs::RebaseJobs jobs;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  core::Status started = jobs.Start(
      "/img", "/new", std::string("new"),
      [&](const fs::RebaseJobs::Progress& progress) {
        progress(5, 10);
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return release; });
        return core::Status::Ok();
      },
      nullptr);
  ASSERT_TRUE(started.ok());
  EXPECT_TRUE(jobs.Running("/img"));
  EXPECT_TRUE(jobs.Involves("/img"));
  EXPECT_TRUE(jobs.Involves("/new"));
  EXPECT_FALSE(jobs.Involves("/other"));
  EXPECT_EQ(jobs.Start(
                    "/img", "", std::nullopt,
                    [](const fs::RebaseJobs::Progress&) { return core::Status::Ok(); }, nullptr)
                .code(),
            core::Code::kBusy);
  EXPECT_FALSE(jobs.WaitAll(std::chrono::milliseconds(50)));
  EXPECT_EQ(jobs.Render("/img").rfind("running: onto 'new' ", 0), 0u) << jobs.Render("/img");
  EXPECT_EQ(jobs.Render("/other"), "");
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  EXPECT_TRUE(jobs.WaitAll(std::chrono::seconds(10)));
  EXPECT_FALSE(jobs.Running("/img"));
  EXPECT_EQ(jobs.Render("/img").rfind("done: rebased onto 'new' in ", 0), 0u)
      << jobs.Render("/img");
}

}  // namespace
}  // namespace chainfs::mounttest
