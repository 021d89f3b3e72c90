// Pool definitions (libvirt XML, --pool specs, pool folders) and pool scans.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "core/pool/pool_def.h"
#include "core/pool/pool_scan.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::ScopedTempDir;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

bool Contains(const std::vector<std::string>& lines, const std::string& needle) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(needle) != std::string::npos; });
}

constexpr const char* kDirPool = R"(<pool type='dir'>
  <name>images</name>
  <uuid>2b0b3e3c-6b7a-4c1e-9a34-5b8f7f8d1e20</uuid>
  <source>
  </source>
  <target>
    <path>/var/lib//libvirt/images/</path>
    <permissions><mode>0711</mode></permissions>
  </target>
</pool>
)";

TEST(ParsePoolXml, ReadsDirPool) {
  Result<PoolDef> def = ParsePoolXml(kDirPool, "/etc/libvirt/storage/images.xml");
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->name, "images");
  EXPECT_EQ(def->type, "dir");
  EXPECT_EQ(def->uuid, "2b0b3e3c-6b7a-4c1e-9a34-5b8f7f8d1e20");
  EXPECT_EQ(def->target_path, "/var/lib/libvirt/images");
  EXPECT_EQ(def->origin, "/etc/libvirt/storage/images.xml");
  EXPECT_EQ(def->source_xml, "<source/>");
  EXPECT_TRUE(def->Browsable());
}

TEST(ParsePoolXml, KeepsSourceElementOfNetfsPool) {
  Result<PoolDef> def = ParsePoolXml(
      "<pool type='netfs'><name>nfs</name><source><host name='filer'/>"
      "<dir path='/export'/><format type='nfs'/></source>"
      "<target><path>/mnt/nfs</path></target></pool>",
      "x");
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->source_xml,
            "<source><host name='filer'/><dir path='/export'/><format type='nfs'/></source>");
  EXPECT_EQ(def->uuid, "");
  EXPECT_TRUE(def->Browsable());
}

TEST(ParsePoolXml, RejectsMalformedXmlWithReason) {
  Result<PoolDef> def = ParsePoolXml("<pool type='dir'><name>x</name>", "bad.xml");
  ASSERT_FALSE(def.ok());
  EXPECT_EQ(def.status().code(), Code::kInvalidArgument);
  EXPECT_NE(def.status().message().find("not well-formed"), std::string::npos)
      << def.status().message();
  EXPECT_FALSE(ParsePoolXml("", "empty.xml").ok());
  EXPECT_FALSE(ParsePoolXml(std::string("<pool\0", 6), "nul.xml").ok());
}

TEST(ParsePoolXml, RejectsWrongRootMissingTypeAndMissingName) {
  Result<PoolDef> r = ParsePoolXml("<volume><name>x</name></volume>", "v.xml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("<volume>"), std::string::npos);
  EXPECT_FALSE(ParsePoolXml("<pool><name>x</name></pool>", "t.xml").ok());
  EXPECT_FALSE(ParsePoolXml("<pool type='dir'><target><path>/x</path></target></pool>", "n").ok());
}

TEST(ParsePoolXml, RejectsNamesThatCannotBeDirectories) {
  for (const char* name : {"", ".", "..", "a/b", ".chainfs", "a&#10;b", "tab&#9;x"}) {
    std::string xml = std::string("<pool type='dir'><name>") + name +
                      "</name><target><path>/x</path></target></pool>";
    EXPECT_FALSE(ParsePoolXml(xml, "n.xml").ok()) << name;
  }
}

TEST(ParsePoolXml, LogicalPoolDefaultsTargetToVolumeGroupDevice) {
  Result<PoolDef> def =
      ParsePoolXml("<pool type='logical'><name>vg</name><source><name>vg0</name></source></pool>",
                   "l.xml");
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->target_path, "/dev/vg0");
  EXPECT_TRUE(def->Browsable());
}

TEST(PoolDef, OnlyLocalTypesWithAbsoluteTargetAreBrowsable) {
  PoolDef def;
  def.type = "rbd";
  def.target_path = "/x";
  EXPECT_FALSE(def.Browsable());
  for (const char* t : {"dir", "fs", "netfs", "logical", "disk", "iscsi", "scsi", "mpath"}) {
    def.type = t;
    EXPECT_TRUE(def.Browsable()) << t;
  }
  def.target_path = "";
  EXPECT_FALSE(def.Browsable());
  def.target_path = "relative";
  EXPECT_FALSE(def.Browsable());
}

TEST(PoolFromSpec, ParsesNameAndAbsolutePath) {
  Result<PoolDef> def = PoolFromSpec("scratch=/srv/images/");
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->name, "scratch");
  EXPECT_EQ(def->type, "dir");
  EXPECT_EQ(def->target_path, "/srv/images");
  EXPECT_EQ(def->origin, "--pool scratch=/srv/images/");
  EXPECT_TRUE(def->Browsable());
  Result<PoolDef> with_eq = PoolFromSpec("p=/a=b");
  ASSERT_TRUE(with_eq.ok());
  EXPECT_EQ(with_eq->target_path, "/a=b");
}

TEST(PoolFromSpec, RejectsMissingSeparatorRelativePathAndBadNames) {
  EXPECT_FALSE(PoolFromSpec("scratch").ok());
  EXPECT_FALSE(PoolFromSpec("scratch=relative/dir").ok());
  EXPECT_FALSE(PoolFromSpec("scratch=").ok());
  EXPECT_FALSE(PoolFromSpec("=/srv").ok());
  EXPECT_FALSE(PoolFromSpec(".chainfs=/srv").ok());
  EXPECT_FALSE(PoolFromSpec("..=/srv").ok());
}

TEST(LoadPoolDir, ReadsXmlFilesSortedAndSkipsBadAndDuplicateOnes) {
  ScopedTempDir dir;
  WriteFile(dir.Sub("b.xml"), "<pool type='dir'><name>zeta</name><target><path>/z</path></target></pool>");
  WriteFile(dir.Sub("a.xml"), "<pool type='dir'><name>alpha</name><target><path>/a</path></target></pool>");
  WriteFile(dir.Sub("c.xml"), "<pool type='dir'><name>alpha</name><target><path>/c</path></target></pool>");
  WriteFile(dir.Sub("d.xml"), "<pool type='dir'><name>broken");
  WriteFile(dir.Sub("notes.txt"), "not a pool");
  ASSERT_EQ(::mkdir(dir.Sub("e.xml").c_str(), 0755), 0);
  PoolLoad load = LoadPoolDir(dir.path());
  ASSERT_EQ(load.pools.size(), 2u);
  EXPECT_EQ(load.pools[0].name, "alpha");
  EXPECT_EQ(load.pools[0].target_path, "/a");  // a.xml wins: files are read in name order
  EXPECT_EQ(load.pools[0].origin, dir.Sub("a.xml"));
  EXPECT_EQ(load.pools[1].name, "zeta");
  ASSERT_EQ(load.skipped.size(), 3u);
  EXPECT_TRUE(Contains(load.skipped, dir.Sub("c.xml") + ": duplicate pool name 'alpha'"));
  EXPECT_TRUE(Contains(load.skipped, dir.Sub("d.xml") + ": not well-formed"));
  EXPECT_TRUE(Contains(load.skipped, dir.Sub("e.xml") + ": not a regular file"));
}

TEST(LoadPoolDir, MissingFolderGivesNoPoolsAndOneReason) {
  PoolLoad load = LoadPoolDir("/nonexistent/chainfs/storage");
  EXPECT_TRUE(load.pools.empty());
  ASSERT_EQ(load.skipped.size(), 1u);
  EXPECT_NE(load.skipped[0].find("/nonexistent/chainfs/storage"), std::string::npos);
}

TEST(IsAcceptableVolumeName, RejectsControlCharactersSlashesAndReservedNames) {
  EXPECT_TRUE(IsAcceptableVolumeName("disk.qcow2"));
  EXPECT_TRUE(IsAcceptableVolumeName(".hidden"));
  EXPECT_TRUE(IsAcceptableVolumeName("name with spaces"));
  EXPECT_FALSE(IsAcceptableVolumeName(""));
  EXPECT_FALSE(IsAcceptableVolumeName("."));
  EXPECT_FALSE(IsAcceptableVolumeName(".."));
  EXPECT_FALSE(IsAcceptableVolumeName("a/b"));
  EXPECT_FALSE(IsAcceptableVolumeName("a\nb"));
  EXPECT_FALSE(IsAcceptableVolumeName("a\x7f"));
  EXPECT_FALSE(IsAcceptableVolumeName(".chainfs"));
  EXPECT_FALSE(IsAcceptableVolumeName(".chainfs-tmp-123"));
}

class ScanPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_.name = "p";
    pool_.type = "dir";
    pool_.target_path = dir_.path();
  }
  ScopedTempDir dir_;
  PoolDef pool_;
};

TEST_F(ScanPoolTest, KeepsFilesAndGoodLinksAndSkipsEverythingElseWithReasons) {
  WriteFile(dir_.Sub("b.qcow2"), "x");
  WriteFile(dir_.Sub("a.raw"), "yy");
  WriteFile(dir_.Sub(".hidden.img"), "z");
  WriteFile(dir_.Sub(".chainfs-tmp-1"), "t");
  WriteFile(dir_.Sub("bad\nname"), "n");
  ASSERT_EQ(::symlink("a.raw", dir_.Sub("link.raw").c_str()), 0);
  ASSERT_EQ(::symlink("missing", dir_.Sub("dangling").c_str()), 0);
  ASSERT_EQ(::symlink("loop", dir_.Sub("loop").c_str()), 0);
  ASSERT_EQ(::mkfifo(dir_.Sub("fifo").c_str(), 0644), 0);
  ASSERT_EQ(::mkdir(dir_.Sub("subdir").c_str(), 0755), 0);
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string sock_path = dir_.Sub("sock");
  ASSERT_LT(sock_path.size(), sizeof(addr.sun_path));
  std::copy(sock_path.begin(), sock_path.end(), addr.sun_path);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);

  PoolScan scan = ScanPool(pool_);
  ::close(sock);
  ASSERT_TRUE(scan.status.ok()) << scan.status.ToString();
  std::vector<std::string> names;
  for (const VolumeEntry& v : scan.volumes) names.push_back(v.name);
  // A subdirectory of a dir pool is a volume of type dir, as libvirt lists it.
  EXPECT_EQ(names,
            (std::vector<std::string>{".hidden.img", "a.raw", "b.qcow2", "link.raw", "subdir"}));
  EXPECT_TRUE(scan.volumes[4].IsDir());
  const VolumeEntry& link = scan.volumes[3];
  EXPECT_EQ(link.path, dir_.Sub("link.raw"));
  EXPECT_TRUE(link.stat.IsRegular());
  EXPECT_EQ(link.stat.id.size, 2u);  // the target's stat, not the link's

  EXPECT_TRUE(Contains(scan.skipped, dir_.Sub("dangling") + ": dangling symbolic link"));
  EXPECT_TRUE(Contains(scan.skipped, dir_.Sub("loop") + ": too many levels of symbolic links"));
  EXPECT_TRUE(Contains(scan.skipped, dir_.Sub("fifo") + ": a FIFO"));
  EXPECT_TRUE(Contains(scan.skipped, dir_.Sub("sock") + ": a socket"));
  EXPECT_TRUE(Contains(scan.skipped, dir_.Sub("bad\\nname") + ": name contains control"));
  EXPECT_TRUE(Contains(scan.skipped, dir_.Sub(".chainfs-tmp-1") + ": reserved for chainfs"));
  EXPECT_EQ(scan.skipped.size(), 6u);
  for (const std::string& line : scan.skipped) EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST_F(ScanPoolTest, SkipsUnreadableFiles) {
  WriteFile(dir_.Sub("secret.img"), "s");
  WriteFile(dir_.Sub("open.img"), "o");
  ASSERT_EQ(::chmod(dir_.Sub("secret.img").c_str(), 0), 0);
  ASSERT_EQ(::chmod(dir_.Sub("open.img").c_str(), 0644), 0);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  auto check = [&]() {
    PoolScan scan = ScanPool(pool_);
    return scan.volumes.size() == 1 && scan.volumes[0].name == "open.img" &&
           Contains(scan.skipped, dir_.Sub("secret.img") + ": unreadable");
  };
  if (::geteuid() != 0) {
    EXPECT_TRUE(check());
    return;
  }
  // root reads everything: scan as an unprivileged user in a child process.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    ::_exit(check() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(ScanPoolTest, ReportsUnreadableDirectoryAsStatus) {
  pool_.target_path = dir_.Sub("missing");
  PoolScan scan = ScanPool(pool_);
  EXPECT_FALSE(scan.status.ok());
  EXPECT_EQ(scan.status.code(), Code::kNotFound);
  EXPECT_TRUE(scan.volumes.empty());
  pool_.target_path = "";
  EXPECT_FALSE(ScanPool(pool_).status.ok());
}

}  // namespace
}  // namespace chainfs::core
