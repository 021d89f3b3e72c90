// chainctl's command-line contract: output, exit codes, errors on stderr,
// and the write commands checked with qemu-img.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs {
namespace {

using testutil::RunChainctl;
using testutil::RunResult;
using testutil::ScopedTempDir;


void QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

class ChainctlTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }
  void MakeChain() {
    QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "4M"});
    QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
    QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
  }
  ScopedTempDir dir_;
};

TEST_F(ChainctlTest, HelpAndVersionExitZero) {
  RunResult h = RunChainctl({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("Usage: chainctl"), std::string::npos);
  RunResult v = RunChainctl({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out, std::string("chainctl ") + CHAINFS_VERSION + "\n");
}

TEST_F(ChainctlTest, UsageErrorsExitTwoWithMessageOnStderr) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{}, {"frobnicate"}, {"info"}, {"info", "--bogus", "x"},
                                             {"xml", "nope", "x"}, {"check", "a", "b"},
                                             {"--pool"}, {"create", "x"}}) {
    RunResult r = RunChainctl(args);
    EXPECT_EQ(r.exit_code, 2) << testing::PrintToString(args);
    EXPECT_TRUE(r.out.empty());
    EXPECT_NE(r.err.find("chainctl: "), std::string::npos);
  }
}

TEST_F(ChainctlTest, NamedPoolSourcesThatCannotBeReadExitTwo) {
  RunResult r = RunChainctl({"--pool-dir", P("nonexistent"), "pools"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--pool-dir " + P("nonexistent") + ": No such file or directory"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out, "");
  RunResult s = RunChainctl({"--pool", "q=" + P("gone"), "pools"});
  EXPECT_EQ(s.exit_code, 2);
  EXPECT_NE(s.err.find("--pool q=" + P("gone")), std::string::npos) << s.err;
  // The same sources, readable, list the pool.
  RunResult ok = RunChainctl({"--pool", "q=" + dir_.path(), "pools"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("q"), std::string::npos) << ok.out;
}

TEST_F(ChainctlTest, MissingImageIsAnErrorNotAProblemList) {
  RunResult r = RunChainctl({"check", P("nope.qcow2")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("nope.qcow2"), std::string::npos);
  EXPECT_EQ(RunChainctl({"info", P("nope.qcow2")}).exit_code, 2);
}

TEST_F(ChainctlTest, ChainListsEveryElement) {
  MakeChain();
  RunResult r = RunChainctl({"chain", P("top.qcow2")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "0 qcow2 " + P("top.qcow2") + "\n1 qcow2 " + P("mid.qcow2") + "\n2 raw " +
                       P("base.raw") + "\n");
}

TEST_F(ChainctlTest, RelativeImagePathIsTakenAgainstWorkingDirectory) {
  MakeChain();
  // Run through env -C to change the working directory of chainctl only.
  RunResult r = testutil::Run({"env", "-C", dir_.path(), CHAINCTL_BINARY, "chain", "top.qcow2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "0 qcow2 " + P("top.qcow2"));
}

TEST_F(ChainctlTest, CheckHealthyExitsZeroAndPrintsNothing) {
  MakeChain();
  RunResult r = RunChainctl({"check", P("top.qcow2")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(ChainctlTest, CheckMissingBackingFormatExitsOneNamingBothFixes) {
  MakeChain();
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  RunResult r = RunChainctl({"--pool", "images=" + dir_.path(), "check", P("top.qcow2")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "1: format of backing image 'mid.qcow2' of image '" + P("top.qcow2") +
                       "' was not specified in the image metadata -- fix: echo qcow2 > "
                       "images/top.qcow2/backing_format, or qemu-img rebase -u -f qcow2 -F qcow2 "
                       "-b mid.qcow2 " + P("top.qcow2") + "\n");
  // The fix works: after it, the chain is healthy.
  QemuImg({"rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "mid.qcow2", P("top.qcow2")});
  EXPECT_EQ(RunChainctl({"check", P("top.qcow2")}).exit_code, 0);
}

TEST_F(ChainctlTest, CheckMissingFormatOverStandaloneBackingIsHealthy) {
  QemuImg({"create", "-q", "-f", "qcow2", P("base.qcow2"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", P("top.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  RunResult r = RunChainctl({"check", P("top.qcow2")});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  RunResult c = RunChainctl({"chain", P("top.qcow2")});
  EXPECT_NE(c.out.find("1 qcow2 " + P("base.qcow2")), std::string::npos) << c.out;
}

TEST_F(ChainctlTest, InfoTextEndsWithProblemsWhenBroken) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "gone.raw", "-F", "raw", P("top.qcow2"), "1M"});
  RunResult r = RunChainctl({"info", P("top.qcow2")});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("image: " + P("top.qcow2")), std::string::npos);
  EXPECT_NE(r.out.find("\nProblems:\n1: Cannot access backing file '" + P("gone.raw") + "'"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(RunChainctl({"check", P("top.qcow2")}).exit_code, 1);
}

TEST_F(ChainctlTest, XmlVolumeAndDiskValidateAgainstLibvirtSchemas) {
  MakeChain();
  RunResult v = RunChainctl({"xml", "volume", P("top.qcow2")});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  std::ofstream(P("vol.xml")) << v.out;
  RunResult vv = testutil::Run({"xmllint", "--noout", "--relaxng",
                                "/usr/share/libvirt/schemas/storagevol.rng", P("vol.xml")});
  EXPECT_EQ(vv.exit_code, 0) << vv.err << v.out;
  RunResult d = RunChainctl({"xml", "disk", P("top.qcow2")});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  std::ofstream(P("dom.xml")) << "<domain type='kvm'><name>t</name><memory>131072</memory><os><type>"
                                 "hvm</type></os><devices>"
                              << d.out << "</devices></domain>\n";
  RunResult dv = testutil::Run(
      {"xmllint", "--noout", "--relaxng", "/usr/share/libvirt/schemas/domain.rng", P("dom.xml")});
  EXPECT_EQ(dv.exit_code, 0) << dv.err << d.out;
  EXPECT_NE(d.out.find("index='2'"), std::string::npos);
  EXPECT_NE(d.out.find("<backingStore/>"), std::string::npos);
}

TEST_F(ChainctlTest, PoolsListsDefinitionsWithVolumeCounts) {
  MakeChain();
  std::string defs = P("defs");
  ASSERT_EQ(::mkdir(defs.c_str(), 0755), 0);
  std::ofstream(defs + "/images.xml") << "<pool type='dir'><name>images</name><target><path>"
                                      << dir_.path() << "</path></target></pool>\n";
  std::ofstream(defs + "/rbd.xml") << "<pool type='rbd'><name>ceph</name><source><name>rbd</name>"
                                      "</source></pool>\n";
  std::ofstream(defs + "/broken.xml") << "<pool type='dir'><name>x</name";
  RunResult r = RunChainctl({"pools", "--pool-dir", defs});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Three images and defs/, a volume of type dir as libvirt lists it.
  EXPECT_NE(r.out.find("images\t" + dir_.path() + "\t4\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ceph\t-\t-\tnot browsable (type rbd)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("broken.xml"), std::string::npos) << r.err;
}

TEST_F(ChainctlTest, CreateMakesCheckedOverlayWithRecordedFormat) {
  MakeChain();
  // top.qcow2 has a backing of its own: its probed format is trusted only
  // because its whole chain is declared and lies in a known pool.
  RunResult untrusted = RunChainctl({"create", "-b", "top.qcow2", P("new.qcow2")});
  EXPECT_EQ(untrusted.exit_code, 1);
  RunResult r = RunChainctl({"--pool", "p=" + dir_.path(), "create", "-b", "top.qcow2", P("new.qcow2")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RunResult check = testutil::Run({"qemu-img", "check", P("new.qcow2")});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  RunResult info = testutil::Run({"qemu-img", "info", "--output=json", P("new.qcow2")});
  EXPECT_NE(info.out.find("\"backing-filename\": \"top.qcow2\""), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"backing-filename-format\": \"qcow2\""), std::string::npos);
  EXPECT_NE(info.out.find("\"virtual-size\": 4194304"), std::string::npos);
  RunResult cmp = testutil::Run({"qemu-img", "compare", P("new.qcow2"), P("top.qcow2")});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out;
}

TEST_F(ChainctlTest, CreateRefusesExistingNameAndChangesNothing) {
  MakeChain();
  std::string before = Slurp(P("mid.qcow2"));
  RunResult r = RunChainctl({"create", "-b", "base.raw", P("mid.qcow2")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exists"), std::string::npos) << r.err;
  EXPECT_EQ(Slurp(P("mid.qcow2")), before);
}

TEST_F(ChainctlTest, CreateRefusesUntrustedBackingWithoutFormat) {
  // A raw volume whose content is a qcow2 header pointing outside the pools.
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", P("evil"), "1M"});
  RunResult r = RunChainctl({"--pool", "p=" + dir_.path(), "create", "-b", "evil", P("new.qcow2")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("-F"), std::string::npos) << r.err;
  struct stat st;
  EXPECT_NE(::stat(P("new.qcow2").c_str(), &st), 0);
  // Declared explicitly, it is the admin's call.
  RunResult ok = RunChainctl({"create", "-b", "evil", "-F", "raw", P("new.qcow2")});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(ChainctlTest, RebaseUnsafeRetargetsOntoIdenticalCopy) {
  MakeChain();
  QemuImg({"convert", "-q", "-f", "qcow2", "-O", "qcow2", "-o", "backing_file=base.raw,backing_fmt=raw",
           "-B", "base.raw", P("mid.qcow2"), P("mid-copy.qcow2")});
  RunResult before = testutil::Run({"qemu-img", "convert", "-O", "raw", P("top.qcow2"), P("before.raw")});
  ASSERT_EQ(before.exit_code, 0) << before.err;
  RunResult r = RunChainctl({"rebase", "-u", "-b", "mid-copy.qcow2", P("top.qcow2")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  RunResult info = testutil::Run({"qemu-img", "info", "--output=json", P("top.qcow2")});
  EXPECT_NE(info.out.find("\"backing-filename\": \"mid-copy.qcow2\""), std::string::npos);
  EXPECT_NE(info.out.find("\"backing-filename-format\": \"qcow2\""), std::string::npos);
  EXPECT_EQ(testutil::Run({"qemu-img", "check", P("top.qcow2")}).exit_code, 0);
  RunResult cmp = testutil::Run({"qemu-img", "compare", P("top.qcow2"), P("before.raw")});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out;
}

TEST_F(ChainctlTest, RebaseUnsafeRefusesMissingTarget) {
  MakeChain();
  std::string before = Slurp(P("top.qcow2"));
  RunResult r = RunChainctl({"rebase", "-u", "-b", "nothere.qcow2", P("top.qcow2")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nothere.qcow2"), std::string::npos) << r.err;
  EXPECT_EQ(Slurp(P("top.qcow2")), before);
}

TEST_F(ChainctlTest, MapJsonMatchesQemuImgMapAndCatMatchesConvert) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "4M"});
  ASSERT_EQ(testutil::Run({"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", P("base.raw")}).exit_code, 0);
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
  ASSERT_EQ(testutil::Run({"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 512k 1M", "-c",
                           "write -z 3M 64k", P("mid.qcow2")}).exit_code, 0);
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2"), "6M"});
  ASSERT_EQ(testutil::Run({"qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 64k", P("top.qcow2")}).exit_code, 0);
  RunResult ours = RunChainctl({"map", "--json", P("top.qcow2")});
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  RunResult theirs = testutil::Run({"qemu-img", "map", "--output=json", P("top.qcow2")});
  ASSERT_EQ(theirs.exit_code, 0);
  EXPECT_EQ(ours.out, theirs.out);
  RunResult human = RunChainctl({"map", P("top.qcow2")});
  EXPECT_EQ(human.exit_code, 0);
  EXPECT_NE(human.out.find("Offset          Length          Mapped to       File"), std::string::npos);
  // cat writes exactly the guest-visible bytes qemu-img convert produces.
  RunResult cat = testutil::Run({"sh", "-c", std::string(CHAINCTL_BINARY) + " cat " + P("top.qcow2") +
                                                 " > " + P("ours.raw")});
  ASSERT_EQ(cat.exit_code, 0) << cat.err;
  QemuImg({"convert", "-O", "raw", P("top.qcow2"), P("theirs.raw")});
  std::string a = Slurp(P("ours.raw")), b = Slurp(P("theirs.raw"));
  EXPECT_EQ(a.size(), 6u << 20);
  EXPECT_TRUE(a == b);
}

TEST_F(ChainctlTest, SafeRebaseOntoOtherBaseAndFlattenKeepGuestContent) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "4M"});
  ASSERT_EQ(testutil::Run({"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 2M", P("base.raw")}).exit_code, 0);
  QemuImg({"create", "-q", "-f", "raw", P("other.raw"), "2M"});
  ASSERT_EQ(testutil::Run({"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", P("other.raw")}).exit_code, 0);
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("top.qcow2")});
  ASSERT_EQ(testutil::Run({"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 512k 64k", P("top.qcow2")}).exit_code, 0);
  QemuImg({"convert", "-O", "raw", P("top.qcow2"), P("before.raw")});

  RunResult r = RunChainctl({"rebase", "-b", "other.raw", "-F", "raw", P("top.qcow2")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // no progress bar when stderr is not a terminal
  RunResult info = testutil::Run({"qemu-img", "info", "--output=json", P("top.qcow2")});
  EXPECT_NE(info.out.find("\"backing-filename\": \"other.raw\""), std::string::npos) << info.out;
  EXPECT_EQ(testutil::Run({"qemu-img", "check", P("top.qcow2")}).exit_code, 0);
  RunResult cmp = testutil::Run({"qemu-img", "compare", P("top.qcow2"), P("before.raw")});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out;

  RunResult f = RunChainctl({"rebase", "-b", "", P("top.qcow2")});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  RunResult info2 = testutil::Run({"qemu-img", "info", "--output=json", P("top.qcow2")});
  EXPECT_EQ(info2.out.find("backing-filename"), std::string::npos) << info2.out;
  EXPECT_EQ(testutil::Run({"qemu-img", "check", P("top.qcow2")}).exit_code, 0);
  RunResult cmp2 = testutil::Run({"qemu-img", "compare", P("top.qcow2"), P("before.raw")});
  EXPECT_EQ(cmp2.exit_code, 0) << cmp2.out;
}

TEST_F(ChainctlTest, SafeRebaseRefusesMissingTargetAndChangesNothing) {
  MakeChain();
  std::string before = Slurp(P("top.qcow2"));
  RunResult r = RunChainctl({"rebase", "-b", "nothere.raw", P("top.qcow2")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nothere.raw"), std::string::npos) << r.err;
  EXPECT_EQ(Slurp(P("top.qcow2")), before);
}

TEST_F(ChainctlTest, MapAndCatRefuseABrokenChain) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "gone.raw", "-F", "raw", P("top.qcow2"), "1M"});
  RunResult m = RunChainctl({"map", P("top.qcow2")});
  EXPECT_EQ(m.exit_code, 2);
  EXPECT_NE(m.err.find("gone.raw"), std::string::npos) << m.err;
  RunResult c = testutil::Run({"sh", "-c", std::string(CHAINCTL_BINARY) + " cat " + P("top.qcow2") +
                                               " > /dev/null"});
  EXPECT_EQ(c.exit_code, 2);
}

}  // namespace
}  // namespace chainfs
