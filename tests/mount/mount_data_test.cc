// The data view through a real FUSE mount (DESIGN section 9, issue 11):
// VOL/data, VOL/chain/N/data, .domains/D/T/data, VOL/map and VOL/map.json,
// compared with qemu-img convert / qemu-img map of the same chains; holes
// found with SEEK_DATA/SEEK_HOLE; changes outside the mount seen by the next
// read; the access rule for an unprivileged user.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

class MountDataTest : public MountTest {
 protected:
  // base.raw (4 MiB of 0x11 at 1 MiB) <- mid.qcow2 (0x22 at 8 MiB) <-
  // top.qcow2 (0x33 at 1.5 MiB, over the base's data), 64 MiB each.
  void MakeDataChain() {
    MakeChain();
    MustRun({"qemu-io", "-f", "raw", "-c", "write -P 0x11 1M 4M", P("base.raw")});
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 8M 1M", P("mid.qcow2")});
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1536K 64K", P("top.qcow2")});
  }
};

TEST_F(MountDataTest, DataAndLayersMatchQemuImgConvert) {
  MakeDataChain();
  ASSERT_TRUE(MountPool());
  struct stat st;
  ASSERT_EQ(::stat(M("p/top.qcow2/data").c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), 64ull << 20);
  EXPECT_EQ(st.st_mode & 0222, 0u);  // read-only
  ExpectSameBytes(M("p/top.qcow2/data"), Converted(P("top.qcow2"), "top.raw"));
  ExpectSameBytes(M("p/top.qcow2/chain/1/data"), Converted(P("mid.qcow2"), "mid.raw"));
  ExpectSameBytes(M("p/top.qcow2/chain/2/data"), P("base.raw"));
  ExpectSameBytes(M("p/mid.qcow2/data"), tmp_.Sub("mid.raw"));
  // Writing fails (root may open it: the mount has no open requests), and
  // the image is unchanged.
  std::string before = Converted(P("top.qcow2"), "top-before.raw");
  EXPECT_NE(WriteInPlace(M("p/top.qcow2/data"), "xyz"), 0);
  ExpectSameBytes(Converted(P("top.qcow2"), "top-after.raw"), before);
}

// Sequential reads come in requests of 1 MiB, the largest libfuse takes:
// the daemon raises the mount's readahead from the kernel's 128 KiB.
TEST_F(MountDataTest, SequentialReadsArriveInOneMebibyteRequests) {
  if (::geteuid() != 0) GTEST_SKIP() << "read_ahead_kb is root's to set";
  MakeDataChain();
  ASSERT_TRUE(MountPool());
  std::string dev = MustRun({"mountpoint", "-d", mnt_}).out;
  dev = dev.substr(0, dev.find('\n'));
  EXPECT_EQ(ReadFile("/sys/class/bdi/" + dev + "/read_ahead_kb"), "1024\n");
  uint64_t before = Stat("fuse_read");
  MustRun({"dd", "if=" + M("p/top.qcow2/data"), "of=/dev/null", "bs=1M"});
  uint64_t requests = Stat("fuse_read") - before;
  EXPECT_LE(requests, 64u + 4u) << "64 MiB in more than 68 READ requests";
  EXPECT_GE(requests, 64u);
  ExpectLogged("mount", mnt_, "ok", "readahead 1024 KiB");
}

TEST_F(MountDataTest, MapFilesAreQemuImgMapAndChainctlMap) {
  MakeDataChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M("p/top.qcow2/map.json")), Chainctl({"map", "--json", P("top.qcow2")}));
  EXPECT_EQ(ReadFile(M("p/top.qcow2/map.json")),
            MustRun({"qemu-img", "map", "-U", "--output=json", P("top.qcow2")}).out);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/map")), MustRun({"qemu-img", "map", "-U", P("top.qcow2")}).out);
}

TEST_F(MountDataTest, HolesAreFoundAndCpSparseKeepsThem) {
  MakeDataChain();
  ASSERT_TRUE(MountPool());
  int fd = ::open(M("p/top.qcow2/data").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  // As qemu-img map sees the raw base: its first 4 KiB count as data.
  EXPECT_EQ(::lseek(fd, 0, SEEK_DATA), 0);
  EXPECT_EQ(::lseek(fd, 0, SEEK_HOLE), 4096);
  EXPECT_EQ(::lseek(fd, 4096, SEEK_DATA), off_t(1) << 20);
  EXPECT_EQ(::lseek(fd, 1 << 20, SEEK_HOLE), off_t(5) << 20);
  EXPECT_EQ(::lseek(fd, 5 << 20, SEEK_DATA), off_t(8) << 20);
  EXPECT_EQ(::lseek(fd, 9 << 20, SEEK_DATA), -1);
  EXPECT_EQ(errno, ENXIO);
  EXPECT_EQ(::lseek(fd, 9 << 20, SEEK_HOLE), off_t(9) << 20);
  ::close(fd);
  std::string copy = tmp_.Sub("copy.raw");
  MustRun({"cp", "--sparse=always", M("p/top.qcow2/data"), copy});
  ExpectSameBytes(copy, Converted(P("top.qcow2"), "top.raw"));
  struct stat st;
  ASSERT_EQ(::stat(copy.c_str(), &st), 0);
  EXPECT_LT(uint64_t(st.st_blocks) * 512, 16ull << 20) << "the copy is not sparse";
}

TEST_F(MountDataTest, AChangeOutsideTheMountIsSeenByTheNextRead) {
  MakeDataChain();
  ASSERT_TRUE(MountPool());
  ExpectSameBytes(M("p/top.qcow2/data"), Converted(P("top.qcow2"), "before.raw"));
  MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x44 0 64K", P("top.qcow2")});
  std::string after = Converted(P("top.qcow2"), "after.raw");
  bool same = false;
  for (int i = 0; i < 300 && !same; ++i) {
    same = testutil::Run({"cmp", M("p/top.qcow2/data"), after}).exit_code == 0;
    if (!same) ::usleep(10000);
  }
  EXPECT_TRUE(same) << "the mount still serves the old bytes";
}

TEST_F(MountDataTest, UnprivilegedUserCannotReadAnImageTheyCannotRead) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for allow_other and setpriv";
  MakeDataChain();
  ASSERT_EQ(::chmod(P("base.raw").c_str(), 0600), 0);
  ASSERT_TRUE(MountPool({"-o", "allow_other"}));
  // root reads first, filling the kernel's cache.
  ExpectSameBytes(M("p/top.qcow2/data"), Converted(P("top.qcow2"), "top.raw"));
  testutil::RunResult r = testutil::Run(
      {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", M("p/top.qcow2/data")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
}

TEST_F(MountDataTest, ADomainDiskHasItsData) {
  MakeDataChain();
  std::string etc = tmp_.Sub("etc");
  ASSERT_EQ(::mkdir(etc.c_str(), 0700), 0);
  MustRun({"sh", "-c",
           "cat > " + etc + "/vm.xml <<'EOF'\n<domain type='qemu'><name>vm</name><devices>"
           "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" +
               P("top.qcow2") + "'/><target dev='vda' bus='virtio'/></disk></devices></domain>\nEOF"});
  ASSERT_TRUE(MountPool({"--domain-dir", etc}));
  ExpectSameBytes(M(".domains/vm/vda/data"), Converted(P("top.qcow2"), "top.raw"));
}

}  // namespace
}  // namespace chainfs::mounttest
