// The write side of the mount (DESIGN section 2), driven with the ordinary
// tools (ln -s, echo >, cat > .create, mv, rmdir) and checked with qemu-img
// check / info / compare; every refusal is checked for its errno, its log
// line and an unchanged pool (checksums of every file before and after);
// crash safety by SIGKILL of the daemon in the middle of a rename with 200
// dependents and of a run of creates.
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/format/qcow2/writer.h"
#include "core/util/json.h"
#include "core/write/in_use.h"
#include "fs/write_ops.h"
#include "mount/mount_fixture.h"
#include "util/qcow2_craft.h"
#include "util/dir_fingerprint.h"
#include "util/qemu_holder.h"

namespace chainfs::mounttest {
namespace {

using fs::Caller;
using fs::CallerCanWrite;
using fs::CreateFileKey;
using fs::IsPendingLinkKey;
using fs::IsWritableFile;
using fs::kPendingLinkIndex;
using fs::LookupWriteNode;
using fs::NodeKey;
using fs::NodeKind;

// Runs `bash -c SCRIPT` (bash's echo names the errno of a failed write).
testutil::RunResult Shell(const std::string& script) {
  return testutil::Run({"bash", "-c", script});
}

void QemuIoWrite(const std::string& path, const std::string& fmt, int pattern,
                 const std::string& off, const std::string& len) {
  MustRun({"qemu-io", "-f", fmt, "-c",
           "write -P " + std::to_string(pattern) + " " + off + " " + len, path});
}

class MountWriteTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    pool2_ = tmp_.Sub("pool2");
    ref_ = tmp_.Sub("ref");
    ASSERT_EQ(::mkdir(pool2_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(ref_.c_str(), 0755), 0);
  }
  bool MountBoth(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--pool", "q=" + pool2_};
    args.insert(args.end(), extra.begin(), extra.end());
    return MountPool(args);
  }
  std::string Q(const std::string& name) const { return pool2_ + "/" + name; }
  std::string Ref(const std::string& name) const { return ref_ + "/" + name; }
  // Flattens the guest view of `image` into a raw reference file.
  std::string Snapshot(const std::string& image, const std::string& name) {
    MustRun({"qemu-img", "convert", "-U", "-O", "raw", image, Ref(name)});
    return Ref(name);
  }
  // Makes base.raw (with data) <- mid.qcow2 (with data) <- top.qcow2 (with data).
  void MakeDataChain() {
    QemuImgCreate({"-f", "raw", P("base.raw"), "4M"});
    QemuIoWrite(P("base.raw"), "raw", 0x11, "0", "1M");
    QemuImgCreate({"-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
    QemuIoWrite(P("mid.qcow2"), "qcow2", 0x22, "512k", "1M");
    QemuImgCreate({"-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
    QemuIoWrite(P("top.qcow2"), "qcow2", 0x33, "1M", "64k");
  }
  // A raw volume whose guest bytes carry a qcow2 header with a backing
  // file outside every pool.
  void MakeEvilRaw(const std::string& path) {
    QemuImgCreate({"-f", "raw", tmp_.Sub("outside.img"), "4M"});
    testutil::CraftOptions c;
    c.size = 4 << 20;
    c.backing = tmp_.Sub("outside.img");
    c.backing_format = "raw";
    ASSERT_TRUE(testutil::WriteCraftedQcow2(path, c).ok());
  }

  std::string pool2_;
  std::string ref_;
};

// ---------------------------------------------------------------- units

TEST(WriteOpsUnits, OnlyBackingBackingFormatAndCreateAreWritable) {
  NodeKey backing(NodeKind::kVolumeFile, "p", "v");
  backing.file = "backing";
  NodeKey fmt(NodeKind::kVolumeFile, "p", "v");
  fmt.file = "backing_format";
  NodeKey format(NodeKind::kVolumeFile, "p", "v");
  format.file = "format";
  NodeKey element(NodeKind::kElementFile, "p", "v", 1);
  element.file = "backing";
  EXPECT_TRUE(IsWritableFile(backing));
  EXPECT_TRUE(IsWritableFile(fmt));
  EXPECT_TRUE(IsWritableFile(CreateFileKey("p")));
  EXPECT_FALSE(IsWritableFile(format));
  EXPECT_FALSE(IsWritableFile(element)) << "chain/N files describe other images";
  EXPECT_EQ(LookupWriteNode(NodeKey(NodeKind::kPoolDir, "p"), ".create"), CreateFileKey("p"));
  EXPECT_FALSE(LookupWriteNode(NodeKey(NodeKind::kVolumeDir, "p", "v"), ".create"));
  EXPECT_FALSE(LookupWriteNode(NodeKey(NodeKind::kPoolDir, "p"), "v"));
  EXPECT_TRUE(IsPendingLinkKey(NodeKey(NodeKind::kElementLink, "p", "n", kPendingLinkIndex, "b")));
  EXPECT_FALSE(IsPendingLinkKey(NodeKey(NodeKind::kElementLink, "p", "n", 1)));
}

TEST(WriteOpsUnits, CallerCanWriteFollowsOwnerGroupOther) {
  Caller nobody{65534, 65534, {}};
  EXPECT_TRUE(CallerCanWrite(Caller{0, 0, {}}, 1, 1, 0444));
  EXPECT_TRUE(CallerCanWrite(nobody, 65534, 0, 0200));
  EXPECT_FALSE(CallerCanWrite(nobody, 65534, 0, 0422));  // owner bits decide for the owner
  EXPECT_TRUE(CallerCanWrite(Caller{7, 7, {42}}, 0, 42, 0620));
  EXPECT_FALSE(CallerCanWrite(Caller{7, 7, {43}}, 0, 42, 0620));
  EXPECT_TRUE(CallerCanWrite(nobody, 0, 0, 0602));
  EXPECT_FALSE(CallerCanWrite(nobody, 0, 0, 0644));
}

// ---------------------------------------------------------------- ln -s

TEST_F(MountWriteTest, LnSCreatesQcow2OverlayOfSamePoolVolume) {
  MakeDataChain();
  ASSERT_TRUE(MountBoth());
  MustRun({"ln", "-s", "mid.qcow2", M("p/new.qcow2")});
  struct stat st {};
  ASSERT_EQ(::stat(M("p/new.qcow2").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode)) << "the new name is a volume directory";
  EXPECT_EQ(ReadFile(M("p/new.qcow2/backing")), "mid.qcow2\n");
  EXPECT_EQ(ReadFile(M("p/new.qcow2/backing_format")), "qcow2\n");
  ExpectQemuCheckClean(P("new.qcow2"));
  core::Json info = QemuInfo(P("new.qcow2"));
  EXPECT_EQ(InfoString(info, "format"), "qcow2");
  EXPECT_EQ(InfoString(info, "backing-filename"), "mid.qcow2");
  EXPECT_EQ(InfoString(info, "backing-filename-format"), "qcow2");
  EXPECT_EQ(InfoNumber(info, "virtual-size"), uint64_t(4 << 20));
  const core::Json* specific = info.Find("format-specific");
  ASSERT_TRUE(specific && specific->Find("data") && specific->Find("data")->Find("compat"));
  EXPECT_EQ(specific->Find("data")->Find("compat")->as_string(), "1.1");
  ExpectSameGuestContent(P("new.qcow2"), P("mid.qcow2"));
  ExpectLogged("symlink", "/p/new.qcow2", "ok", "qcow2 overlay");
}

TEST_F(MountWriteTest, LnSTakesOtherPoolsMountPathsAndHostPaths) {
  MakeDataChain();
  QemuImgCreate({"-f", "qcow2", Q("qbase.qcow2"), "8M"});
  QemuIoWrite(Q("qbase.qcow2"), "qcow2", 0x44, "0", "64k");
  QemuImgCreate({"-f", "raw", tmp_.Sub("host.raw"), "2M"});
  ASSERT_TRUE(MountBoth());
  MustRun({"ln", "-s", "../q/qbase.qcow2", M("p/o1")});
  MustRun({"ln", "-s", M("q/qbase.qcow2"), M("p/o2")});
  MustRun({"ln", "-s", tmp_.Sub("host.raw"), M("p/o3")});
  MustRun({"ln", "-s", "../p/base.raw", M("p/o4")});
  EXPECT_EQ(InfoString(QemuInfo(P("o1")), "backing-filename"), Q("qbase.qcow2"));
  EXPECT_EQ(InfoString(QemuInfo(P("o2")), "backing-filename"), Q("qbase.qcow2"));
  EXPECT_EQ(InfoString(QemuInfo(P("o3")), "backing-filename"), tmp_.Sub("host.raw"));
  EXPECT_EQ(InfoString(QemuInfo(P("o3")), "backing-filename-format"), "raw");
  EXPECT_EQ(InfoString(QemuInfo(P("o4")), "backing-filename"), "base.raw");
  EXPECT_EQ(InfoNumber(QemuInfo(P("o1")), "virtual-size"), uint64_t(8 << 20));
  for (const char* n : {"o1", "o2", "o3", "o4"}) ExpectQemuCheckClean(P(n));
  ExpectSameGuestContent(P("o1"), Q("qbase.qcow2"));
}

TEST_F(MountWriteTest, LnSRefusesMissingTakenAndUntrustedBackingsChangingNothing) {
  MakeDataChain();
  MakeEvilRaw(P("evil.raw"));
  ASSERT_TRUE(MountBoth());
  auto before = testutil::DirectoryFingerprint(pool_);

  EXPECT_EQ(::symlink("nothere.qcow2", M("p/n1").c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
  ExpectLogged("symlink", "/p/n1", "ENOENT", "nothere.qcow2");

  EXPECT_EQ(::symlink("base.raw", M("p/mid.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EEXIST);
  testutil::RunResult ln = testutil::Run({"ln", "-sT", "base.raw", M("p/top.qcow2")});
  EXPECT_NE(ln.exit_code, 0);
  EXPECT_NE(ln.err.find("File exists"), std::string::npos) << ln.err;

  EXPECT_EQ(::symlink("evil.raw", M("p/n2").c_str()), -1);
  EXPECT_EQ(errno, EACCES);
  ExpectLogged("symlink", "/p/n2", "EACCES", "declare the format explicitly");

  EXPECT_EQ(::symlink("../../etc/passwd", M("p/n3").c_str()), -1);
  EXPECT_EQ(errno, EINVAL);
  ExpectLogged("symlink", "/p/n3", "EINVAL", "out of the mount");

  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

// ---------------------------------------------------------------- backing

TEST_F(MountWriteTest, EchoBackingRetargetsOntoIdenticalCopyKeepingGuestContent) {
  MakeDataChain();
  MustRun({"cp", "--sparse=always", P("base.raw"), P("copy.raw")});
  std::string ref = Snapshot(P("top.qcow2"), "top.raw");
  ASSERT_TRUE(MountBoth());
  testutil::RunResult r = Shell("echo copy.raw > " + M("p/mid.qcow2/backing"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  core::Json info = QemuInfo(P("mid.qcow2"));
  EXPECT_EQ(InfoString(info, "backing-filename"), "copy.raw");
  EXPECT_EQ(InfoString(info, "backing-filename-format"), "raw");
  ExpectQemuCheckClean(P("mid.qcow2"));
  ExpectSameGuestContent(P("top.qcow2"), ref);
  EXPECT_EQ(ReadFile(M("p/mid.qcow2/backing")), "copy.raw\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/2/path")), P("copy.raw") + "\n");
  ExpectLogged("write", "/p/mid.qcow2/backing", "ok", "copy.raw");

  // An absolute path, and a path inside the mount (recorded as the host path).
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), P("base.raw") + "\n"), 0);
  EXPECT_EQ(InfoString(QemuInfo(P("mid.qcow2")), "backing-filename"), P("base.raw"));
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), M("p/copy.raw") + "\n"), 0);
  EXPECT_EQ(InfoString(QemuInfo(P("mid.qcow2")), "backing-filename"), P("copy.raw"));
  ExpectQemuCheckClean(P("mid.qcow2"));
  ExpectSameGuestContent(P("top.qcow2"), ref);
}

TEST_F(MountWriteTest, BackingFilesAreWritableForTheImageOwnerOnly) {
  MakeDataChain();
  ASSERT_EQ(::chmod(P("top.qcow2").c_str(), 0640), 0);
  ASSERT_TRUE(MountBoth());
  struct stat st {};
  ASSERT_EQ(::stat(M("p/top.qcow2/backing").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  ASSERT_EQ(::stat(M("p/top.qcow2/backing_format").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  ASSERT_EQ(::stat(M("p/top.qcow2/format").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0222, 0u);
  ASSERT_EQ(::stat(M("p/.create").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0200u);
  ASSERT_EQ(::stat(M("p").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  // nobody may not change root's image through the mount.
  testutil::RunResult r =
      testutil::Run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c",
                     "echo base.raw > " + M("p/top.qcow2/backing")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename"), "mid.qcow2");
}

TEST_F(MountWriteTest, EchoBackingRefusalsReturnErrnoLogReasonAndChangeNothing) {
  MakeDataChain();
  MakeEvilRaw(P("evil.raw"));
  QemuImgCreate({"-f", "qcow2", "-b", "base.raw", "-F", "raw", P("nofmt.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("nofmt.qcow2")).ok());
  ASSERT_TRUE(MountBoth());
  auto before = testutil::DirectoryFingerprint(pool_);

  // Target missing: the shell sees the write fail.
  testutil::RunResult r = Shell("echo missing.raw > " + M("p/mid.qcow2/backing"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("No such file"), std::string::npos) << r.err;
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), "missing.raw\n"), ENOENT);
  ExpectLogged("write", "/p/mid.qcow2/backing", "ENOENT", "missing.raw");

  // Empty: use rebase.
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), "\n"), EINVAL);
  ExpectLogged("write", "/p/mid.qcow2/backing", "EINVAL", "rebase");

  // The format of the new backing cannot be determined safely.
  EXPECT_EQ(WriteValue(M("p/nofmt.qcow2/backing"), "evil.raw\n"), EACCES);
  ExpectLogged("write", "/p/nofmt.qcow2/backing", "EACCES", "declare the format");

  // In use: a qemu-storage-daemon holds mid.qcow2.
  {
    testutil::QemuHolder holder(P("mid.qcow2"), "qcow2", testutil::QemuHolder::Tool::kStorageDaemon);
    ASSERT_TRUE(holder.holding());
    MustRun({"cp", "--sparse=always", P("base.raw"), tmp_.Sub("copy.raw")});
    EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), tmp_.Sub("copy.raw") + "\n"), EBUSY);
    ExpectLogged("write", "/p/mid.qcow2/backing", "EBUSY", "in use");
    EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing_format"), "raw\n"), EBUSY);
    ExpectLogged("write", "/p/mid.qcow2/backing_format", "EBUSY", "in use");
  }
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

TEST_F(MountWriteTest, EchoBackingFormatRecordsMissingFormatKeepingGuestContent) {
  MakeDataChain();
  std::string ref = Snapshot(P("top.qcow2"), "top.raw");
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  ASSERT_TRUE(MountBoth());
  EXPECT_NE(ReadFile(M("p/top.qcow2/problems")), "");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing_format")), "");
  auto before = testutil::DirectoryFingerprint(pool_);
  EXPECT_EQ(WriteValue(M("p/top.qcow2/backing_format"), "vhs\n"), EINVAL);
  ExpectLogged("write", "/p/top.qcow2/backing_format", "EINVAL", "vhs");
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);

  testutil::RunResult r = Shell("echo qcow2 > " + M("p/top.qcow2/backing_format"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  core::Json info = QemuInfo(P("top.qcow2"));
  EXPECT_EQ(InfoString(info, "backing-filename"), "mid.qcow2");
  EXPECT_EQ(InfoString(info, "backing-filename-format"), "qcow2");
  ExpectQemuCheckClean(P("top.qcow2"));
  ExpectSameGuestContent(P("top.qcow2"), ref);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/problems")), "");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing_format")), "qcow2\n");
}

// ---------------------------------------------------------------- .create

TEST_F(MountWriteTest, CreateFileMakesVolumesFromLibvirtXml) {
  MakeDataChain();
  ASSERT_TRUE(MountBoth());
  auto write_xml = [&](const std::string& name, const std::string& xml) {
    std::string file = tmp_.Sub(name + ".xml");
    std::FILE* f = std::fopen(file.c_str(), "w");
    std::fputs(xml.c_str(), f);
    std::fclose(f);
    return Shell("cat " + file + " > " + M("p/.create"));
  };
  testutil::RunResult r = write_xml("raw", R"(<volume>
  <name>disk.raw</name>
  <capacity unit='G'>2</capacity>
  <allocation>0</allocation>
  <target><format type='raw'/><permissions><mode>0640</mode></permissions></target>
</volume>
)");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  core::Json raw = QemuInfo(P("disk.raw"));
  EXPECT_EQ(InfoString(raw, "format"), "raw");
  EXPECT_EQ(InfoNumber(raw, "virtual-size"), uint64_t(2) << 30);
  struct stat st {};
  ASSERT_EQ(::stat(P("disk.raw").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);

  r = write_xml("old", R"(<volume>
  <name>old.qcow2</name>
  <capacity unit='MiB'>100</capacity>
  <target><format type='qcow2'/><compat>0.10</compat><clusterSize unit='KiB'>4</clusterSize></target>
</volume>
)");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  core::Json old = QemuInfo(P("old.qcow2"));
  EXPECT_EQ(InfoNumber(old, "cluster-size"), 4096u);
  EXPECT_EQ(InfoNumber(old, "virtual-size"), uint64_t(100) << 20);
  EXPECT_EQ(old.Find("format-specific")->Find("data")->Find("compat")->as_string(), "0.10");
  ExpectQemuCheckClean(P("old.qcow2"));

  r = write_xml("ovl", R"(<volume>
  <name>ovl.qcow2</name>
  <target><format type='qcow2'/><features><lazy_refcounts/></features></target>
  <backingStore><path>)" + P("mid.qcow2") +
                           R"(</path><format type='qcow2'/></backingStore>
</volume>
)");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  core::Json ovl = QemuInfo(P("ovl.qcow2"));
  EXPECT_EQ(InfoString(ovl, "backing-filename"), P("mid.qcow2"));
  EXPECT_EQ(InfoString(ovl, "backing-filename-format"), "qcow2");
  EXPECT_EQ(InfoNumber(ovl, "virtual-size"), uint64_t(4) << 20);
  EXPECT_TRUE(ovl.Find("format-specific")->Find("data")->Find("lazy-refcounts")->as_bool());
  ExpectQemuCheckClean(P("ovl.qcow2"));
  ExpectSameGuestContent(P("ovl.qcow2"), P("mid.qcow2"));

  // No backing format given: the trust rule decides (raw is safe).
  r = write_xml("ovl2",
                "<volume><name>ovl2.qcow2</name><target><format type='qcow2'/></target>"
                "<backingStore><path>base.raw</path></backingStore></volume>");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(InfoString(QemuInfo(P("ovl2.qcow2")), "backing-filename-format"), "raw");
  ExpectLogged("create", "/p/ovl2.qcow2", "ok", "created");

  // `echo` (a shell builtin) also sees a refusal of a complete document.
  r = Shell("echo \"<volume><name>ovl2.qcow2</name><capacity>1</capacity></volume>\" > " +
            M("p/.create"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("File exists"), std::string::npos) << r.err;
}

TEST_F(MountWriteTest, CreateFileRefusesBadXmlTakenNamesAndUntrustedBackings) {
  MakeDataChain();
  MakeEvilRaw(P("evil.raw"));
  ASSERT_TRUE(MountBoth());
  auto before = testutil::DirectoryFingerprint(pool_);
  auto cat_into = [&](const std::string& xml) {
    return testutil::RunWithInput({"sh", "-c", "cat > " + M("p/.create")}, xml);
  };
  testutil::RunResult r = cat_into("<volume><name>x.qcow2</name><capacity>1M");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Invalid argument"), std::string::npos) << r.err;
  ExpectLogged("create", "/p/.create", "EINVAL", "");

  r = cat_into("<volume><name>y.raw</name><capacity unit='parsecs'>1</capacity></volume>");
  EXPECT_NE(r.exit_code, 0);
  ExpectLogged("create", "/p/.create", "EINVAL", "parsecs");

  r = cat_into("<volume><name>mid.qcow2</name><capacity>1048576</capacity></volume>");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("File exists"), std::string::npos) << r.err;
  ExpectLogged("create", "/p/mid.qcow2", "EEXIST", "already exists");

  r = cat_into(
      "<volume><name>z.qcow2</name><target><format type='qcow2'/></target>"
      "<backingStore><path>evil.raw</path></backingStore></volume>");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  ExpectLogged("create", "/p/z.qcow2", "EACCES", "declare the format");

  r = cat_into(
      "<volume><name>w.qcow2</name><target><format type='qcow2'/></target>"
      "<backingStore><path>gone.qcow2</path><format type='qcow2'/></backingStore>"
      "</volume>");
  EXPECT_NE(r.exit_code, 0);
  ExpectLogged("create", "/p/w.qcow2", "ENOENT", "gone.qcow2");

  // The write-only file has no read bits (so only root may open it for
  // reading) and nothing to read.
  struct stat st {};
  ASSERT_EQ(::stat(M("p/.create").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0444, 0u);
  EXPECT_EQ(st.st_size, 0);
  EXPECT_EQ(ReadFile(M("p/.create")), "");
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

// ---------------------------------------------------------------- mv

TEST_F(MountWriteTest, MvRenamesImageAndRewritesEveryDependentKeepingStyle) {
  MakeDataChain();
  QemuImgCreate({"-f", "qcow2", "-b", P("base.raw"), "-F", "raw", P("abs.qcow2")});
  QemuImgCreate({"-f", "qcow2", "-b", "../pool/base.raw", "-F", "raw", Q("rel.qcow2")});
  QemuIoWrite(Q("rel.qcow2"), "qcow2", 0x55, "2M", "64k");
  std::map<std::string, std::string> refs = {{P("mid.qcow2"), Snapshot(P("mid.qcow2"), "mid.raw")},
                                             {P("top.qcow2"), Snapshot(P("top.qcow2"), "top.raw")},
                                             {P("abs.qcow2"), Snapshot(P("abs.qcow2"), "abs.raw")},
                                             {Q("rel.qcow2"), Snapshot(Q("rel.qcow2"), "rel.raw")}};
  ASSERT_TRUE(MountBoth());
  MustRun({"mv", "-T", M("p/base.raw"), M("p/renamed.raw")});
  struct stat st {};
  EXPECT_NE(::stat(P("base.raw").c_str(), &st), 0);
  EXPECT_EQ(InfoString(QemuInfo(P("mid.qcow2")), "backing-filename"), "renamed.raw");
  EXPECT_EQ(InfoString(QemuInfo(P("abs.qcow2")), "backing-filename"), P("renamed.raw"));
  EXPECT_EQ(InfoString(QemuInfo(Q("rel.qcow2")), "backing-filename"), "../pool/renamed.raw");
  EXPECT_EQ(InfoString(QemuInfo(P("mid.qcow2")), "backing-filename-format"), "raw");
  for (const auto& [image, ref] : refs) {
    ExpectQemuCheckClean(image);
    ExpectSameGuestContent(image, ref);
  }
  ExpectLogged("rename", "/p/base.raw", "ok", "3 overlay(s)");
  EXPECT_EQ(ReadFile(M("p/renamed.raw/format")), "raw\n");
  EXPECT_EQ(ReadFile(M("p/mid.qcow2/backing")), "renamed.raw\n");

  // Across pools (same file system): relative strings become relative paths.
  MustRun({"mv", "-T", M("p/mid.qcow2"), M("q/mid.qcow2")});
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename"), "../pool2/mid.qcow2");
  EXPECT_EQ(InfoString(QemuInfo(Q("mid.qcow2")), "backing-filename"), "../pool/renamed.raw")
      << "the moved image's own relative backing follows it";
  ExpectQemuCheckClean(Q("mid.qcow2"));
  ExpectSameGuestContent(Q("mid.qcow2"), refs[P("mid.qcow2")]);
  ExpectSameGuestContent(P("top.qcow2"), refs[P("top.qcow2")]);
  MustRun({"mv", "-T", M("q/mid.qcow2"), M("p/mid.qcow2")});
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename"), "mid.qcow2");
  ExpectQemuCheckClean(P("top.qcow2"));
  ExpectSameGuestContent(P("top.qcow2"), refs[P("top.qcow2")]);
}

TEST_F(MountWriteTest, MvRefusesTakenNamesBusyImagesAndOtherFileSystems) {
  MakeDataChain();
  std::string shm = "/dev/shm/chainfs-write-test-" + std::to_string(::getpid());
  ASSERT_EQ(::mkdir(shm.c_str(), 0755), 0);
  struct ShmCleanup {
    std::string dir;
    ~ShmCleanup() { testutil::RemoveTree(dir); }
  } cleanup{shm};
  ASSERT_TRUE(MountBoth({"--pool", "s=" + shm}));
  auto before = testutil::DirectoryFingerprint(pool_);

  EXPECT_EQ(::rename(M("p/mid.qcow2").c_str(), M("p/top.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EEXIST);
  ExpectLogged("rename", "/p/mid.qcow2", "EEXIST", "already exists");

  struct stat st {};
  if (::stat(shm.c_str(), &st) == 0) {
    struct stat pst {};
    ASSERT_EQ(::stat(pool_.c_str(), &pst), 0);
    if (pst.st_dev != st.st_dev) {
      EXPECT_EQ(::rename(M("p/top.qcow2").c_str(), M("s/top.qcow2").c_str()), -1);
      EXPECT_EQ(errno, EXDEV);
      ExpectLogged("rename", "/p/top.qcow2", "EXDEV", "different file systems");
    }
  }
  {
    testutil::QemuHolder holder(P("top.qcow2"), "qcow2", testutil::QemuHolder::Tool::kStorageDaemon);  // holds mid and base too
    ASSERT_TRUE(holder.holding());
    EXPECT_EQ(::rename(M("p/base.raw").c_str(), M("p/b2.raw").c_str()), -1);
    EXPECT_EQ(errno, EBUSY);
    ExpectLogged("rename", "/p/base.raw", "EBUSY", "in use");
  }
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
  EXPECT_TRUE(testutil::DirectoryFingerprint(shm).empty());
}

// ---------------------------------------------------------------- rmdir

TEST_F(MountWriteTest, RmdirDeletesUnusedImageAndRefusesWhileDependedOnOrInUse) {
  MakeDataChain();
  QemuImgCreate({"-f", "qcow2", P("lonely.qcow2"), "1M"});
  ASSERT_TRUE(MountBoth());
  auto before = testutil::DirectoryFingerprint(pool_);
  testutil::RunResult r = testutil::Run({"rmdir", M("p/base.raw")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("busy"), std::string::npos) << r.err;
  ExpectLogged("rmdir", "/p/base.raw", "EBUSY", "mid.qcow2");
  EXPECT_EQ(::rmdir(M("p/mid.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EBUSY);
  {
    testutil::QemuHolder holder(P("lonely.qcow2"), "qcow2", testutil::QemuHolder::Tool::kStorageDaemon);
    ASSERT_TRUE(holder.holding());
    EXPECT_EQ(::rmdir(M("p/lonely.qcow2").c_str()), -1);
    EXPECT_EQ(errno, EBUSY);
    ExpectLogged("rmdir", "/p/lonely.qcow2", "EBUSY", "in use");
  }
  EXPECT_EQ(::unlink(M("p/top.qcow2/format").c_str()), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::mkdir(M("p/newdir").c_str(), 0755), -1);
  EXPECT_EQ(errno, EPERM);
  ExpectLogged("mkdir", "/p/newdir", "EPERM", "ln -s");
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);

  MustRun({"rmdir", M("p/top.qcow2")});
  MustRun({"rmdir", M("p/lonely.qcow2")});
  struct stat st {};
  EXPECT_NE(::stat(P("top.qcow2").c_str(), &st), 0);
  EXPECT_NE(::stat(M("p/top.qcow2").c_str(), &st), 0);
  ExpectLogged("rmdir", "/p/top.qcow2", "ok", "deleted");
  MustRun({"rmdir", M("p/mid.qcow2")});  // no dependents any more
  MustRun({"rmdir", M("p/base.raw")});
  EXPECT_TRUE(testutil::DirectoryFingerprint(pool_).empty());
}

// ---------------------------------------------------------------- -o ro

TEST_F(MountWriteTest, ReadOnlyMountRefusesEveryChangeWithErofs) {
  MakeDataChain();
  ASSERT_TRUE(MountBoth({"-o", "ro"}));
  auto before = testutil::DirectoryFingerprint(pool_);
  EXPECT_EQ(::symlink("base.raw", M("p/new").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::rename(M("p/top.qcow2").c_str(), M("p/t2").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::rmdir(M("p/top.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::mkdir(M("p/d").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(WriteValue(M("p/top.qcow2/backing"), "base.raw\n"), EROFS);
  EXPECT_EQ(WriteValue(M("p/top.qcow2/backing_format"), "raw\n"), EROFS);
  EXPECT_EQ(WriteValue(M("p/.create"), "<volume/>"), EROFS);
  EXPECT_EQ(WriteValue(M("p/top.qcow2/rebase"), "base.raw\n"), EROFS);
  testutil::RunResult r = Shell("echo base.raw > " + M("p/top.qcow2/backing"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Read-only"), std::string::npos) << r.err;
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

// ro is the daemon's, not the kernel's: every change reaches chainfs, which
// refuses it with EROFS and logs a one-line reason (issue 4).
TEST_F(MountWriteTest, ReadOnlyMountLogsEveryRefusal) {
  MakeDataChain();
  ASSERT_TRUE(MountBoth({"-o", "ro"}));
  auto before = testutil::DirectoryFingerprint(pool_);
  const std::string ro = "mounted read-only";
  EXPECT_EQ(::symlink("base.raw", M("p/new").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("symlink", "/p/new", "EROFS", ro);
  EXPECT_EQ(::rename(M("p/top.qcow2").c_str(), M("p/t2").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("rename", "/p/top.qcow2", "EROFS", ro);
  EXPECT_EQ(::rmdir(M("p/mid.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("rmdir", "/p/mid.qcow2", "EROFS", ro);
  EXPECT_EQ(::mkdir(M("p/d").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("mkdir", "/p/d", "EROFS", ro);
  EXPECT_EQ(::unlink(M("p/.pool.xml").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("unlink", "/p/.pool.xml", "EROFS", ro);
  int fd = ::open(M("p/newfile").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  int saved = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(saved, EROFS);
  ExpectLogged("create", "/p/newfile", "EROFS", ro);
  EXPECT_EQ(WriteInPlace(M("p/top.qcow2/capacity"), "1\n"), EROFS);
  ExpectLogged("write", "/p/top.qcow2/capacity", "EROFS", ro);
  // Shell redirections truncate: refused by open(2) itself.
  EXPECT_EQ(WriteValue(M("p/top.qcow2/backing"), "base.raw\n"), EROFS);
  ExpectLogged("setattr", "/p/top.qcow2/backing", "EROFS", ro);
  EXPECT_EQ(WriteValue(M("p/top.qcow2/rebase"), "\n"), EROFS);
  ExpectLogged("setattr", "/p/top.qcow2/rebase", "EROFS", ro);
  EXPECT_EQ(WriteValue(M("p/.create"), "<volume/>"), EROFS);
  ExpectLogged("setattr", "/p/.create", "EROFS", ro);
  EXPECT_EQ(::truncate(M("p/top.qcow2/capacity").c_str(), 0), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("setattr", "/p/top.qcow2/capacity", "EROFS", ro);
  EXPECT_EQ(::truncate(M("p/top.qcow2/backing").c_str(), 0), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("setattr", "/p/top.qcow2/backing", "EROFS", ro);
  EXPECT_EQ(::chmod(M("p/top.qcow2/info").c_str(), 0600), -1);
  EXPECT_EQ(errno, EROFS);
  ExpectLogged("setattr", "/p/top.qcow2/info", "EROFS", ro);
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
}

// ---------------------------------------------------------------- crashes

// SIGKILLs the daemon of `mount` and expects it to exit by itself: no
// thread of it may be left blocked in the kernel on this mount (an entry
// invalidation waiting for a directory lock that a request in flight holds
// would keep it alive for good, and the mount wedged). No fusectl: a fresh
// machine does not mount it. Reaps the daemon.
void KillDaemon(Mount& mount) {
  pid_t pid = mount.pid();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  if (mount.WaitExit(20) != -1) return;
  std::string stacks;
  for (const auto& task : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid))) {
    stacks += ReadFile(task.path().string() + "/stack", false);
  }
  ADD_FAILURE() << "the killed daemon did not exit (wedged); kernel stacks:\n" << stacks;
  mount.ForceAbort();
  EXPECT_NE(mount.WaitExit(10), -1) << "still there after aborting its connection";
}

// Returns a problem description for every image of `dir` that qemu-img check
// rejects or whose chain does not resolve completely.
std::vector<std::string> CheckEveryImage(const std::string& dir) {
  std::vector<std::string> bad;
  core::ImageInspector inspector;
  for (const auto& [name, sum] : testutil::DirectoryFingerprint(dir)) {
    std::string path = dir + "/" + name;
    testutil::RunResult r = testutil::Run({"qemu-img", "check", "-U", path});
    if (IsQcow2(path) && r.exit_code != 0)
      bad.push_back(name + ": qemu-img check: " + r.out + r.err);
    core::Chain chain = core::ResolveChain(inspector, path);
    if (!chain.complete || !chain.healthy()) {
      bad.push_back(name + ": chain does not resolve: " +
                    (chain.problems.empty() ? "" : chain.problems[0].message));
    }
  }
  return bad;
}

TEST_F(MountWriteTest, KillDuringRenameWithManyDependentsLeavesEveryChainResolvable) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  constexpr int kOverlays = 200;
  for (int i = 0; i < kOverlays; ++i) {
    core::Qcow2CreateOptions o;
    o.size = 1 << 20;
    o.backing = "base.raw";
    o.backing_format = "raw";
    ASSERT_TRUE(core::CreateQcow2(P("ovl" + std::to_string(i) + ".qcow2"), o).ok());
  }
  ASSERT_TRUE(MountBoth());
  std::atomic<int> rename_errno{-1};
  std::thread mover([&] {
    int rc = ::rename(M("p/base.raw").c_str(), M("p/moved.raw").c_str());
    rename_errno = rc == 0 ? 0 : errno;
  });
  // Kill once the new name is linked and the first overlay (ovl0, the first
  // in name order) has been rewritten: the others are being rewritten now.
  auto header_names_moved = [&](const std::string& path) {
    char buf[4096] = {};
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
    ::close(fd);
    return n > 0 && std::string(buf, size_t(n)).find("moved.raw") != std::string::npos;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!header_names_moved(P("ovl0.qcow2")) && std::chrono::steady_clock::now() < deadline) {
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  KillDaemon(mount_);
  mover.join();
  mount_.Stop();
  int rewritten = 0;
  core::ImageInspector inspector;
  for (int i = 0; i < kOverlays; ++i) {
    auto in = inspector.Inspect(P("ovl" + std::to_string(i) + ".qcow2"));
    ASSERT_TRUE(in.ok() && (*in)->meta);
    if ((*in)->meta->backing == "moved.raw") ++rewritten;
  }
  std::printf("rename killed after %d of %d overlays were rewritten (rename errno %d)\n", rewritten,
              kOverlays, rename_errno.load());
  EXPECT_GE(rewritten, 1);
  struct stat st {};
  EXPECT_EQ(::stat(P("moved.raw").c_str(), &st), 0);
  if (rewritten < kOverlays) {
    EXPECT_EQ(::stat(P("base.raw").c_str(), &st), 0)
        << "the old name stays until all are rewritten";
  }
  std::vector<std::string> bad = CheckEveryImage(pool_);
  EXPECT_TRUE(bad.empty()) << bad.size() << " bad images, first: " << bad[0];
}

TEST_F(MountWriteTest, KillDuringCreatesLeavesNoPartialImage) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  ASSERT_TRUE(MountBoth());
  std::atomic<bool> stop{false};
  std::atomic<int> made{0};
  std::thread creator([&] {
    for (int i = 0; i < 100000 && !stop; ++i) {
      if (::symlink("base.raw", M("p/c" + std::to_string(i)).c_str()) != 0) break;
      ++made;
    }
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (made < 20 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  KillDaemon(mount_);
  stop = true;
  creator.join();
  mount_.Stop();
  std::vector<std::string> bad = CheckEveryImage(pool_);
  EXPECT_TRUE(bad.empty()) << bad.size() << " bad images, first: " << bad[0];
  for (const auto& [name, sum] : testutil::DirectoryFingerprint(pool_)) {
    EXPECT_EQ(name.find("chainfs-tmp"), std::string::npos) << "temporary file left: " << name;
  }
  EXPECT_GE(testutil::DirectoryFingerprint(pool_).size(), size_t(made) + 1);
}

TEST_F(MountWriteTest, NoSpaceInTheMiddleOfCreateLeavesNoPartialImage) {
  std::string small = tmp_.Sub("small");
  ASSERT_EQ(::mkdir(small.c_str(), 0755), 0);
  if (testutil::Run({"mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small}).exit_code != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs here";
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { testutil::Run({"umount", "-l", dir}); }
  } unmount{small};
  QemuImgCreate({"-f", "raw", small + "/base.raw", "1M"});
  // Fill the file system up to the last few blocks.
  {
    int fd = ::open((small + "/filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    std::vector<char> block(4096, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    ::close(fd);
  }
  ASSERT_TRUE(MountBoth({"--pool", "small=" + small}));
  auto before = testutil::DirectoryFingerprint(small);
  EXPECT_EQ(::symlink("base.raw", M("small/new.qcow2").c_str()), -1);
  EXPECT_EQ(errno, ENOSPC);
  ExpectLogged("symlink", "/small/new.qcow2", "ENOSPC", "");
  testutil::RunResult r =
      testutil::RunWithInput({"sh", "-c", "cat > " + M("small/.create")},
                             "<volume><name>x.qcow2</name><capacity unit='G'>1</capacity>"
                             "<target><format type='qcow2'/></target></volume>");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("No space"), std::string::npos) << r.err;
  EXPECT_EQ(testutil::DirectoryFingerprint(small), before) << "no partial image, no temporary file";
}

}  // namespace
}  // namespace chainfs::mounttest
