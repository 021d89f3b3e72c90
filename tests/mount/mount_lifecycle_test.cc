// Starting and stopping the daemon: SIGTERM/SIGINT unmount, -o ro, the
// fstab form through mount.fuse3, --demo, SIGHUP reloads pool definitions,
// non-browsable pools, .chainfs/{log,stats,version}.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string DirPoolXml(const std::string& name, const std::string& path) {
  return "<pool type='dir'>\n  <name>" + name + "</name>\n  <target>\n    <path>" + path +
         "</path>\n  </target>\n</pool>\n";
}

bool WaitFor(const std::function<bool()>& done, double seconds = 10) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

class SignalTest : public MountTest, public ::testing::WithParamInterface<int> {};

TEST_P(SignalTest, SignalUnmountsCleanlyAndExitsZero) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  ASSERT_TRUE(IsMounted(mnt_));
  EXPECT_EQ(ReadFile(M("p/top.qcow2/format")), "qcow2\n");
  ASSERT_EQ(::kill(mount_.pid(), GetParam()), 0);
  int status = mount_.WaitExit(15);
  ASSERT_NE(status, -1) << "daemon still running after the signal";
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << mount_.DaemonOutput();
  EXPECT_FALSE(IsMounted(mnt_));
  struct stat st {};
  EXPECT_NE(::stat(M(".chainfs/version").c_str(), &st), 0);  // back to the empty folder
}

INSTANTIATE_TEST_SUITE_P(Signals, SignalTest, ::testing::Values(SIGTERM, SIGINT),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == SIGTERM ? "Sigterm" : "Sigint");
                         });

TEST_F(MountTest, ExternalUnmountEndsTheDaemon) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  MustRun({"fusermount3", "-u", mnt_});
  int status = mount_.WaitExit(15);
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << mount_.DaemonOutput();
}

TEST_F(MountTest, ReadOnlyMountRefusesWritesWithErofs) {
  MakeChain();
  ASSERT_TRUE(MountPool({"-o", "ro"}));
  // A shell redirection (O_TRUNC) is refused by open(2) itself...
  int fd = ::open(M("p/top.qcow2/backing").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  int saved = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(saved, EROFS);
  // ...and without it, by write(2) (the kernel opens files itself).
  EXPECT_EQ(WriteInPlace(M("p/top.qcow2/backing"), "base.raw\n"), EROFS);
  EXPECT_NE(::mkdir(M("p/newdir").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "mid.qcow2\n");
}

TEST_F(MountTest, ReadWriteMountStillRefusesWritingVirtualFiles) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  int fd = ::open(M("p/top.qcow2/capacity").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  int saved = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(saved, EACCES);
  // root may open it for writing (the kernel opens files itself), but no
  // write gets through.
  EXPECT_EQ(WriteInPlace(M("p/top.qcow2/capacity"), "1\n"), EACCES);
  ExpectLogged("write", "/p/top.qcow2/capacity", "EACCES", "read-only file");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/capacity")), "67108864\n");
}

TEST_F(MountTest, ControlFilesReportVersionStatsAndLog) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M(".chainfs/version")), std::string("chainfs ") + CHAINFS_VERSION + "\n");
  for (int i = 0; i < 3; ++i) ReadFile(M("p/top.qcow2/info"));
  std::string stats = ReadFile(M(".chainfs/stats"));
  for (const char* key : {"inspector_cache_hits ", "inspector_cache_misses ", "probes ",
                          "chain_cache_hits ", "fuse_lookup ", "fuse_read ",
                          "kernel_cached_files ", "errors "}) {
    EXPECT_NE(("\n" + stats).find(std::string("\n") + key), std::string::npos) << key << " in\n" << stats;
  }
  EXPECT_EQ(stats.find("fuse_read 0\n"), std::string::npos) << stats;
  EXPECT_EQ(stats.find("kernel_cached_files 0\n"), std::string::npos) << stats;
  std::string log = ReadFile(M(".chainfs/log"));
  EXPECT_NE(log.find(" mount " + mnt_ + " ok "), std::string::npos) << log;
  // A refused operation is logged with its errno and reason.
  EXPECT_EQ(WriteValue(M("p/top.qcow2/format"), "raw\n"), EACCES);
  log = ReadFile(M(".chainfs/log"));
  EXPECT_NE(log.find(" setattr /p/top.qcow2/format EACCES read-only file"), std::string::npos) << log;
}

TEST_F(MountTest, PoolDirDefinitionsReloadOnSighup) {
  std::string defs = tmp_.Sub("defs");
  std::string second = tmp_.Sub("second");
  ASSERT_EQ(::mkdir(defs.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(second.c_str(), 0755), 0);
  MakeChain();
  QemuImgCreate({"-f", "raw", second + "/disk.raw", "1M"});
  WriteText(defs + "/first.xml", DirPoolXml("first", pool_));
  WriteText(defs + "/remote.xml",
            "<pool type='rbd'><name>remote</name><source><name>rbdpool</name></source></pool>\n");
  ASSERT_TRUE(mount_.Start({"--pool-dir", defs}, mnt_));
  EXPECT_EQ(MustRun({"ls", mnt_}).out, "first\n");
  EXPECT_NE(ReadFile(M(".chainfs/log")).find("not browsable"), std::string::npos);
  EXPECT_EQ(ReadFile(M("first/top.qcow2/format")), "qcow2\n");

  WriteText(defs + "/second.xml", DirPoolXml("second", second));
  ASSERT_EQ(::unlink((defs + "/first.xml").c_str()), 0);
  ASSERT_EQ(::kill(mount_.pid(), SIGHUP), 0);
  EXPECT_TRUE(WaitFor([&] { return testutil::Run({"ls", mnt_}).out == "second\n"; }))
      << testutil::Run({"ls", mnt_}).out;
  EXPECT_EQ(ReadFile(M("second/disk.raw/format")), "raw\n");
  EXPECT_NE(ReadFile(M(".chainfs/log")).find(" reload - ok "), std::string::npos);
  EXPECT_TRUE(IsMounted(mnt_));  // SIGHUP does not unmount
}

TEST_F(MountTest, DemoMountsASamplePoolAndRemovesItAfterwards) {
  ASSERT_TRUE(mount_.Start({"--demo"}, mnt_));
  EXPECT_EQ(MustRun({"ls", M("demo")}).out,
            "base.raw\nmid.qcow2\nnoformat.qcow2\norphan.qcow2\ntop.qcow2\n");
  EXPECT_EQ(MustRun({"ls", M("demo/top.qcow2/chain")}).out, "0\n1\n2\n");
  EXPECT_EQ(ReadFile(M("demo/top.qcow2/problems")), "");
  EXPECT_NE(ReadFile(M("demo/noformat.qcow2/problems")).find("was not specified"), std::string::npos);
  EXPECT_EQ(ReadFile(M("demo/noformat.qcow2/backing_format")), "");
  EXPECT_NE(ReadFile(M("demo/orphan.qcow2/problems")).find("gone.qcow2"), std::string::npos);
  std::string dir = ReadFile(M("demo/base.raw/chain/0/path"));
  ASSERT_GT(dir.size(), 10u);
  dir = dir.substr(0, dir.rfind('/'));
  // qemu-img agrees the overlay records no backing format.
  testutil::RunResult info = MustRun({"qemu-img", "info", "--output=json", dir + "/noformat.qcow2"});
  EXPECT_EQ(info.out.find("backing-filename-format"), std::string::npos) << info.out;
  mount_.Stop();
  struct stat st {};
  EXPECT_NE(::stat(dir.c_str(), &st), 0) << dir << " left behind";
}

TEST_F(MountTest, FstabFormThroughMountFuse3Works) {
  if (::geteuid() != 0) GTEST_SKIP() << "mount.fuse3 with -t needs root here";
  MakeChain();
  std::string bin = CHAINFS_BINARY;
  std::string bindir = bin.substr(0, bin.rfind('/'));
  const char* path_env = std::getenv("PATH");
  std::string path = "PATH=" + bindir + ":" + (path_env ? path_env : "/usr/bin:/bin");
  // What mount(8) runs for the fstab line
  //   chainfs  MNT  fuse.chainfs  pool=p=POOL,ro,allow_other  0 0
  testutil::RunResult r = testutil::Run({"env", path, "mount.fuse3", "chainfs", mnt_, "-t",
                                         "fuse.chainfs", "-o", "pool=p=" + pool_ + ",ro,allow_other"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct UnmountAtEnd {
    std::string mnt;
    ~UnmountAtEnd() {
      if (IsMounted(mnt)) testutil::Run({"fusermount3", "-u", mnt});
    }
  } guard{mnt_};
  ASSERT_TRUE(WaitFor([&] {
    struct stat st {};
    return ::stat(M(".chainfs/version").c_str(), &st) == 0;
  }));
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "mid.qcow2\n");
  // ro is the daemon's (so that its refusals are logged), not the kernel's.
  EXPECT_NE(::mkdir(M("p/newdir").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(ReadFile(M(".chainfs/log")).find(" mkdir /p/newdir EROFS "), std::string::npos);
  MustRun({"fusermount3", "-u", mnt_});
  EXPECT_FALSE(IsMounted(mnt_));
}

TEST_F(MountTest, BadArgumentsFailWithoutMounting) {
  testutil::RunResult r = testutil::Run({CHAINFS_BINARY, "--pool", "nonsense", mnt_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--pool"), std::string::npos) << r.err;
  r = testutil::Run({CHAINFS_BINARY, "--bogus", mnt_});
  EXPECT_EQ(r.exit_code, 2);
  r = testutil::Run({CHAINFS_BINARY, "--version"});
  EXPECT_EQ(r.out, std::string("chainfs ") + CHAINFS_VERSION + "\n");
  EXPECT_FALSE(IsMounted(mnt_));
}


// ---------------------------------------------------- refusals at start

// Runs `chainfs -f ARGS MOUNTPOINT`, bounded by timeout(1), and unmounts
// should it have mounted after all (the refusals below must not mount).
testutil::RunResult RunDaemonBounded(const std::vector<std::string>& args,
                                     const std::string& mountpoint) {
  std::vector<std::string> argv = {"timeout", "20", CHAINFS_BINARY, "-f"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(mountpoint);
  testutil::RunResult r = testutil::Run(argv);
  if (IsMounted(mountpoint)) testutil::Run({"fusermount3", "-uz", mountpoint});
  return r;
}

TEST_F(MountTest, MissingPoolDirExitsOneBeforeMounting) {
  testutil::RunResult r = RunDaemonBounded({"--pool-dir", tmp_.Sub("nonexistent")}, mnt_);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--pool-dir " + tmp_.Sub("nonexistent") + ": No such file or directory"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(IsMounted(mnt_));
}

TEST_F(MountTest, MissingPoolFolderOfASpecExitsOneBeforeMounting) {
  testutil::RunResult r =
      RunDaemonBounded({"--pool", "p=" + pool_, "--pool", "q=" + tmp_.Sub("gone")}, mnt_);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--pool q=" + tmp_.Sub("gone")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
  EXPECT_FALSE(IsMounted(mnt_));
}

TEST_F(MountTest, UnreadablePoolDirExitsOneBeforeMounting) {
  std::string dir = tmp_.Sub("defs");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  std::string file = tmp_.Sub("not-a-dir");
  WriteText(file, "x");
  testutil::RunResult r = RunDaemonBounded({"--pool-dir", file}, mnt_);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("Not a directory"), std::string::npos) << r.err;
  EXPECT_FALSE(IsMounted(mnt_));
  // A readable folder with a malformed definition in it still mounts (the
  // file is logged and skipped, as libvirt skips it).
  WriteText(dir + "/bad.xml", "<pool type='dir'><name>x</name");
  WriteText(dir + "/good.xml", DirPoolXml("good", pool_));
  ASSERT_TRUE(mount_.Start({"--pool-dir", dir}, mnt_));
  struct stat st {};
  EXPECT_EQ(::stat(M("good").c_str(), &st), 0);
  EXPECT_NE(Log().find("bad.xml"), std::string::npos) << Log();
}

TEST_F(MountTest, SecondMountOnTheSameMountpointIsRefused) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  testutil::RunResult r = testutil::Run(
      {"timeout", "20", CHAINFS_BINARY, "-f", "--pool", "p=" + pool_, mnt_});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("already mounted"), std::string::npos) << r.err;
  // The first mount is untouched and still serves.
  EXPECT_EQ(ReadFile(M("p/top.qcow2/format")), "qcow2\n");
  // Also when named by a relative path with "." and "//" in it.
  std::string rel_dir = tmp_.path();
  testutil::RunResult r2 = testutil::Run(
      {"sh", "-c", "cd " + rel_dir + " && timeout 20 " + std::string(CHAINFS_BINARY) +
                       " -f --pool p=" + pool_ + " ./mnt//"});
  EXPECT_EQ(r2.exit_code, 1) << r2.err;
  EXPECT_NE(r2.err.find("already mounted"), std::string::npos) << r2.err;
  EXPECT_EQ(ReadFile(M("p/top.qcow2/format")), "qcow2\n");
}

}  // namespace
}  // namespace chainfs::mounttest
