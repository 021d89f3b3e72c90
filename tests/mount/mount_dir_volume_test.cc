// A subdirectory of a dir pool in the mount (issue 10): a volume of type
// 'dir' as virsh vol-list shows it, with libvirt's volume.xml, sensible
// one-value files, no chain/, and every change refused with nothing touched.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "mount/mount_fixture.h"
#include "util/dir_fingerprint.h"
#include "util/output_check.h"

namespace chainfs::mounttest {
namespace {

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

class MountDirVolumeTest : public MountTest {
 protected:
  // The chain of MakeChain plus POOL/isos/ (mode 0750) holding one file.
  void MakePool() {
    MakeChain();
    ASSERT_EQ(::mkdir(P("isos").c_str(), 0750), 0);
    ASSERT_EQ(::chmod(P("isos").c_str(), 0750), 0);  // whatever the umask
    std::ofstream(P("isos/inside.img")) << "data";
  }
  // What must not change: the pool's files, the folder's files and its
  // own mode and times.
  std::string Snapshot() {
    std::string out;
    for (const std::string& dir : {pool_, P("isos")}) {
      for (const auto& [name, print] : testutil::DirectoryFingerprint(dir)) {
        out += dir + "/" + name + " " + print + "\n";
      }
    }
    struct stat st {};
    if (::stat(P("isos").c_str(), &st) == 0) {
      out += std::to_string(st.st_mode) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec) + " " + std::to_string(st.st_ctim.tv_nsec) + "\n";
    }
    return out;
  }
};

TEST_F(MountDirVolumeTest, SubdirectoryIsADirVolumeWithLibvirtsXmlAndNoChain) {
  MakePool();
  ASSERT_TRUE(MountPool());
  std::vector<std::string> pool = Names(M("p"));
  EXPECT_TRUE(Contains(pool, "isos")) << "listing of p/";
  EXPECT_TRUE(Contains(pool, "top.qcow2"));
  EXPECT_EQ(Names(M("p/isos")),
            (std::vector<std::string>{"allocation", "backing", "backing_format", "capacity",
                                      "format", "info", "info.json", "problems", "problems.json",
                                      "volume.xml"}));
  struct stat st {};
  for (const char* absent : {"chain", "disk.xml", "rebase", "inside.img"}) {
    EXPECT_NE(::stat(M(std::string("p/isos/") + absent).c_str(), &st), 0) << absent;
    EXPECT_EQ(errno, ENOENT) << absent;
  }
  ASSERT_EQ(::stat(M("p/isos").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0550u);  // r-x where the folder is readable

  EXPECT_EQ(ReadFile(M("p/isos/format")), "dir\n");
  EXPECT_EQ(ReadFile(M("p/isos/capacity")), "0\n");
  EXPECT_EQ(ReadFile(M("p/isos/allocation")), "0\n");
  EXPECT_EQ(ReadFile(M("p/isos/backing")), "");
  EXPECT_EQ(ReadFile(M("p/isos/backing_format")), "");
  EXPECT_EQ(ReadFile(M("p/isos/problems")), "");
  EXPECT_EQ(ReadFile(M("p/isos/info")), "image: " + P("isos") +
                                            "\nfile format: dir\nvirtual size: 0 B (0 bytes)\n"
                                            "disk size: 0 B\n");
  EXPECT_EQ(
      MustRun({"jq", "-r", ".[0].format, .[0][\"virtual-size\"], length", M("p/isos/info.json")})
          .out,
      "dir\n0\n1\n");

  std::string xml = ReadFile(M("p/isos/volume.xml"));
  EXPECT_EQ(xml.rfind("<volume type='dir'>\n  <name>isos</name>\n  <key>" + P("isos") +
                          "</key>\n  <capacity unit='bytes'>0</capacity>\n"
                          "  <allocation unit='bytes'>0</allocation>\n  <target>\n",
                      0),
            0u)
      << xml;
  EXPECT_NE(xml.find("    <format type='dir'/>\n    <permissions>\n      <mode>0750</mode>\n"),
            std::string::npos)
      << xml;
  EXPECT_NE(xml.find("      <btime>0</btime>\n    </timestamps>\n  </target>\n</volume>\n"),
            std::string::npos)
      << xml;
  EXPECT_EQ(xml.find("<physical"), std::string::npos) << xml;
  EXPECT_EQ(testutil::XmlComplaint(xml, "storagevol.rng"), "");

  // Every file's stat size is its content's length (cat, cp, tail work).
  for (const std::string& f : Names(M("p/isos"))) {
    ASSERT_EQ(::stat(M("p/isos/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(uint64_t(st.st_size), ReadFile(M("p/isos/" + f)).size()) << f;
    EXPECT_EQ(st.st_mode & 0222, 0u) << f << " is read-only";
  }
  // chainctl counts it among the pool's volumes, as virsh vol-list does.
  EXPECT_EQ(Chainctl({"pools"}), "p\t" + pool_ + "\t4\n");
}

TEST_F(MountDirVolumeTest, EveryChangeIsRefusedAndTouchesNothing) {
  MakePool();
  ASSERT_TRUE(MountPool());
  const std::string before = Snapshot();

  EXPECT_EQ(WriteValue(M("p/isos/backing"), "base.raw\n"), EISDIR);
  ExpectLogged("write", "/p/isos/backing", "EISDIR", "a volume of type dir");
  EXPECT_EQ(WriteValue(M("p/isos/backing_format"), "raw\n"), EISDIR);
  EXPECT_EQ(WriteInPlace(M("p/isos/backing"), "base.raw\n"), EISDIR);
  testutil::RunResult echo =
      testutil::Run({"bash", "-c", "echo base.raw > " + M("p/isos/backing")});
  EXPECT_NE(echo.exit_code, 0);
  EXPECT_NE(echo.err.find("Is a directory"), std::string::npos) << echo.err;
  EXPECT_NE(WriteValue(M("p/isos/rebase"), "base.raw\n"), 0);  // no such file to write

  EXPECT_EQ(::rmdir(M("p/isos").c_str()), -1);
  EXPECT_EQ(errno, EPERM);
  ExpectLogged("rmdir", "/p/isos", "EPERM", "deletes images only");
  EXPECT_EQ(::rename(M("p/isos").c_str(), M("p/isos2").c_str()), -1);
  EXPECT_EQ(errno, EPERM);
  ExpectLogged("rename", "/p/isos", "EPERM", "renames images only");
  EXPECT_EQ(::rename(M("p/top.qcow2").c_str(), M("p/isos/top.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::symlink("base.raw", M("p/isos/new.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EPERM);
  ExpectLogged("symlink", "/p/isos/new.qcow2", "EPERM", "pool directory only");
  // ln into an existing directory makes the link inside it.
  testutil::RunResult ln = testutil::Run({"ln", "-s", "base.raw", M("p/isos")});
  EXPECT_NE(ln.exit_code, 0);
  EXPECT_NE(ln.err.find("Operation not permitted"), std::string::npos) << ln.err;
  EXPECT_EQ(::symlink("isos", M("p/over.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EISDIR);
  ExpectLogged("symlink", "/p/over.qcow2", "EISDIR", "cannot be a backing file");
  EXPECT_EQ(::mkdir(M("p/isos/d").c_str(), 0755), -1);

  EXPECT_EQ(Snapshot(), before);
  EXPECT_TRUE(Contains(Names(M("p")), "isos"));
  EXPECT_EQ(ReadFile(M("p/isos/format")), "dir\n");
}

TEST_F(MountDirVolumeTest, FoldersMadeAndRemovedOnTheHostShowOnTheNextAccess) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_FALSE(Contains(Names(M("p")), "later"));
  ASSERT_EQ(::mkdir(P("later").c_str(), 0755), 0);
  EXPECT_TRUE(Contains(Names(M("p")), "later"));
  EXPECT_EQ(ReadFile(M("p/later/format")), "dir\n");
  // An image still resolves and renames around it; rmdir of an image works.
  EXPECT_EQ(ReadFile(M("p/top.qcow2/problems")), "");
  MustRun({"rmdir", M("p/top.qcow2")});
  EXPECT_FALSE(Contains(Names(M("p")), "top.qcow2"));
  ASSERT_EQ(::rmdir(P("later").c_str()), 0);
  EXPECT_FALSE(Contains(Names(M("p")), "later"));
  struct stat st {};
  EXPECT_NE(::stat(M("p/later/format").c_str(), &st), 0);
}

}  // namespace
}  // namespace chainfs::mounttest
