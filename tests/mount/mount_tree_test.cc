// The read side of the tree (DESIGN section 1) through a real mount, driven
// with ls, find, stat, cat, readlink, jq and xmllint, and compared with
// chainctl for the same images.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "mount/mount_fixture.h"
#include "util/qcow2_craft.h"

namespace chainfs::mounttest {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

TEST_F(MountTest, LsShowsPoolsVolumesAndTheirFiles) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(MustRun({"ls", "-A", mnt_}).out, ".chainfs\np\n");
  EXPECT_EQ(MustRun({"ls", "-A", M("p")}).out, ".pool.xml\n.tree\nbase.raw\nmid.qcow2\ntop.qcow2\n");
  EXPECT_EQ(MustRun({"ls", M("p/top.qcow2")}).out,
            "allocation\nbacking\nbacking_format\ncapacity\nchain\ndata\ndisk.xml\nformat\ninfo\n"
            "info.json\nmap\nmap.json\nproblems\nproblems.json\nrebase\nusers\nvolume.xml\n");
  EXPECT_EQ(MustRun({"ls", M("p/top.qcow2/chain")}).out, "0\n1\n2\n");
  EXPECT_EQ(MustRun({"ls", M("p/top.qcow2/chain/1")}).out,
            "allocation\nbacking\nbacking_format\ncapacity\ndata\nformat\npath\nvolume\n");
  EXPECT_EQ(MustRun({"ls", "-A", M(".chainfs")}).out, "log\nmetrics\nstats\nversion\n");
}

TEST_F(MountTest, FindWalksTheWholeTree) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  std::vector<std::string> files = Lines(MustRun({"find", M("p/top.qcow2"), "-type", "f"}).out);
  // 16 volume files + 7 per chain element.
  EXPECT_EQ(files.size(), 16u + 3 * 7u);
  std::vector<std::string> links = Lines(MustRun({"find", M("p"), "-type", "l"}).out);
  // top: 3 elements, mid: 2, base: 1, each a volume of the pool.
  EXPECT_EQ(links.size(), 6u);
  std::vector<std::string> dirs = Lines(MustRun({"find", M("p"), "-type", "d"}).out);
  EXPECT_EQ(dirs.size(), 1u + 3 * 2u + 6u);
}

TEST_F(MountTest, AttributeFilesHoldOneValueAndANewline) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M("p/top.qcow2/format")), "qcow2\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "mid.qcow2\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing_format")), "qcow2\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/capacity")), "67108864\n");
  EXPECT_EQ(ReadFile(M("p/base.raw/backing")), "");
  EXPECT_EQ(ReadFile(M("p/base.raw/backing_format")), "");
  EXPECT_EQ(ReadFile(M("p/base.raw/format")), "raw\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/2/path")), P("base.raw") + "\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/1/backing_format")), "raw\n");
  struct stat st {};
  ASSERT_EQ(::stat(P("top.qcow2").c_str(), &st), 0);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/allocation")), std::to_string(uint64_t(st.st_blocks) * 512) + "\n");
  EXPECT_EQ(ReadFile(M("p/problems") , false), "");  // not a file of a pool
  EXPECT_EQ(ReadFile(M(".chainfs/version")), std::string("chainfs ") + CHAINFS_VERSION + "\n");
}

TEST_F(MountTest, DocumentsAreByteIdenticalToChainctl) {
  MakeChain();
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("orphan.qcow2"), "1M"});
  ASSERT_TRUE(MountPool());
  for (const std::string vol : {"top.qcow2", "mid.qcow2", "base.raw", "orphan.qcow2"}) {
    SCOPED_TRACE(vol);
    std::string image = P(vol);
    EXPECT_EQ(ReadFile(M("p/" + vol + "/info")), Chainctl({"info", image}));
    EXPECT_EQ(ReadFile(M("p/" + vol + "/info.json")), Chainctl({"info", "--json", image}));
    EXPECT_EQ(ReadFile(M("p/" + vol + "/volume.xml")), Chainctl({"xml", "volume", image}));
    EXPECT_EQ(ReadFile(M("p/" + vol + "/disk.xml")), Chainctl({"xml", "disk", image}));
    int rc = 0;
    EXPECT_EQ(ReadFile(M("p/" + vol + "/problems")), Chainctl({"check", image}, &rc));
    EXPECT_EQ(rc, vol == "orphan.qcow2" ? 1 : 0);
    // chain/N/{format,path} against `chainctl chain` ("index format path").
    std::vector<std::string> chain = Lines(Chainctl({"chain", image}));
    for (size_t i = 0; i < chain.size(); ++i) {
      std::string dir = "p/" + vol + "/chain/" + std::to_string(i) + "/";
      std::string format = ReadFile(M(dir + "format"));
      std::string path = ReadFile(M(dir + "path"));
      ASSERT_FALSE(path.empty());
      EXPECT_NE(chain[i].find(path.substr(0, path.size() - 1)), std::string::npos) << chain[i];
      if (format.size() > 1) {
        EXPECT_NE(chain[i].find(" " + format.substr(0, format.size() - 1) + " "), std::string::npos)
            << chain[i];
      }
    }
  }
}

// Reading an image moves its access time (relatime: when it is not later
// than the mtime), and the mount keeps what it described while no change is
// seen: so volume.xml carries no <atime> in either front end, and the two
// stay byte-identical whoever read the image last.
TEST_F(MountTest, VolumeXmlStaysIdenticalToChainctlAfterTheImagesAreRead) {
  MakeChain();
  for (const char* vol : {"top.qcow2", "mid.qcow2", "base.raw"}) {
    MustRun({"touch", "-a", "-d", "2020-01-01", P(vol)});  // atime before mtime
  }
  ASSERT_TRUE(MountPool());
  for (const std::string vol : {"top.qcow2", "mid.qcow2", "base.raw"}) {
    SCOPED_TRACE(vol);
    std::string in_mount = ReadFile(M("p/" + vol + "/volume.xml"));
    MustRun({"qemu-img", "info", "-U", "--backing-chain", P(vol)});  // reads every element
    MustRun({"cat", P(vol)});
    EXPECT_EQ(in_mount, Chainctl({"xml", "volume", P(vol)}));
    EXPECT_EQ(ReadFile(M("p/" + vol + "/volume.xml")), in_mount);
    EXPECT_EQ(in_mount.find("<atime>"), std::string::npos) << in_mount;
    EXPECT_NE(in_mount.find("<mtime>"), std::string::npos) << in_mount;
    EXPECT_NE(in_mount.find("<ctime>"), std::string::npos) << in_mount;
  }
}

TEST_F(MountTest, StatSizeEqualsContentLengthForEveryFile) {
  MakeChain();
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("orphan.qcow2"), "1M"});
  ASSERT_TRUE(MountPool());
  std::vector<std::string> files = Lines(MustRun({"find", mnt_, "-type", "f"}).out);
  ASSERT_GT(files.size(), 40u);
  for (const std::string& f : files) {
    if (f.find("/.chainfs/") != std::string::npos && f.find("version") == std::string::npos) {
      continue;  // log and stats grow as we read
    }
    const bool is_data = f.size() > 5 && f.substr(f.size() - 5) == "/data";
    if (is_data && f.find("/orphan.qcow2/") != std::string::npos) {
      // Its backing is missing: the guest bytes of the chain through it
      // cannot be read (EIO); the missing element itself has none.
      testutil::RunResult r = testutil::Run({"cat", f});
      if (f.find("/chain/1/") == std::string::npos) {
        EXPECT_NE(r.exit_code, 0) << f;
        EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << f << ": " << r.err;
      }
      continue;
    }
    std::string size = MustRun({"stat", "-c", "%s", f}).out;
    std::string content = MustRun({"cat", f}).out;
    EXPECT_EQ(size, std::to_string(content.size()) + "\n") << f;
    EXPECT_TRUE(is_data || content.empty() || content.back() == '\n')
        << f << " does not end with a newline";
  }
  // tail works (it trusts st_size).
  EXPECT_EQ(MustRun({"tail", "-c", "6", M("p/top.qcow2/format")}).out, "qcow2\n");
}

TEST_F(MountTest, JqAndXmllintReadTheDocuments) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(MustRun({"jq", "-r", ".[].filename", M("p/top.qcow2/info.json")}).out,
            P("top.qcow2") + "\n" + P("mid.qcow2") + "\n" + P("base.raw") + "\n");
  EXPECT_EQ(MustRun({"jq", "-r", ".[0][\"backing-filename-format\"]", M("p/top.qcow2/info.json")}).out,
            "qcow2\n");
  MustRun({"xmllint", "--noout", M("p/top.qcow2/volume.xml"), M("p/top.qcow2/disk.xml"),
           M("p/.pool.xml")});
  EXPECT_EQ(MustRun({"xmllint", "--xpath", "count(//backingStore[@index])", M("p/top.qcow2/disk.xml")}).out,
            "2\n");
  EXPECT_EQ(MustRun({"xmllint", "--xpath", "string(/pool/target/path)", M("p/.pool.xml")}).out, pool_ + "\n");
  testutil::RunResult grep = MustRun({"grep", "-rl", "mid.qcow2", M("p/top.qcow2")});
  EXPECT_NE(grep.out.find("/backing\n"), std::string::npos);
}

TEST_F(MountTest, ChainElementsLinkToTheirVolumes) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(MustRun({"readlink", M("p/top.qcow2/chain/1/volume")}).out, "../../../../p/mid.qcow2\n");
  EXPECT_EQ(MustRun({"readlink", M("p/top.qcow2/chain/0/volume")}).out, "../../../../p/top.qcow2\n");
  // The link resolves inside the mount.
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/2/volume/format")), "raw\n");
}

TEST_F(MountTest, ElementOutsideThePoolsHasNoVolumeLink) {
  testutil::ScopedTempDir elsewhere;
  QemuImgCreate({"-f", "raw", elsewhere.Sub("outside.raw"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-b", elsewhere.Sub("outside.raw"), "-F", "raw", P("over.qcow2")});
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M("p/over.qcow2/chain/1/path")), elsewhere.Sub("outside.raw") + "\n");
  EXPECT_EQ(MustRun({"ls", M("p/over.qcow2/chain/1")}).out,
            "allocation\nbacking\nbacking_format\ncapacity\ndata\nformat\npath\n");
}

TEST_F(MountTest, BrokenChainsShowProblemsAndNeverFailLs) {
  MakeChain();
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("orphan.qcow2"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("noformat.qcow2")});
  MustRun({"sh", "-c", "printf 'QFI\\373garbage' > " + P("garbage.qcow2")});
  // Strip the recorded backing format (modern qemu-img refuses to omit it).
  ASSERT_TRUE(testutil::StripBackingFormat(P("noformat.qcow2")).ok());
  ASSERT_TRUE(MountPool());
  testutil::RunResult ls = testutil::Run({"ls", "-lR", mnt_});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_NE(ls.out.find("orphan.qcow2"), std::string::npos);
  EXPECT_NE(ls.out.find("garbage.qcow2"), std::string::npos);
  std::string problems = ReadFile(M("p/orphan.qcow2/problems"));
  EXPECT_NE(problems.find("gone.qcow2"), std::string::npos) << problems;
  EXPECT_EQ(problems.rfind("1: ", 0), 0u) << problems;
  EXPECT_NE(problems.find(" -- fix: "), std::string::npos) << problems;
  EXPECT_NE(ReadFile(M("p/orphan.qcow2/info")).find("gone.qcow2"), std::string::npos);
  EXPECT_EQ(ReadFile(M("p/orphan.qcow2/chain/0/backing")), "gone.qcow2\n");
  std::string noformat = ReadFile(M("p/noformat.qcow2/problems"));
  EXPECT_NE(noformat.find("was not specified in the image metadata"), std::string::npos) << noformat;
  EXPECT_NE(noformat.find("p/noformat.qcow2/backing_format"), std::string::npos) << noformat;
  EXPECT_EQ(MustRun({"ls", M("p/noformat.qcow2/chain")}).out, "0\n1\n");
  testutil::RunResult find = testutil::Run({"find", mnt_});
  EXPECT_EQ(find.exit_code, 0) << find.err;
}

}  // namespace
}  // namespace chainfs::mounttest
