// Unsafe writes through the mount are refused (issue 9), driven with the
// ordinary tools: `echo > VOL/backing`, `mv`, `ln -s` and `.create` that
// would close a backing chain loop (ELOOP); a retarget onto another format
// (the trust rule or EACCES, with the mount's way to declare it); malformed
// .create documents of any size (EINVAL with the parser's reason) while
// valid multi-write ones still work; backing_format without a backing
// (ENOTSUP); rmdir naming every dependent. Every refusal is checked for its
// errno, its log line and an unchanged pool folder; every change with
// `qemu-img check` (under `timeout`: a loop makes it spin).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "mount/mount_fixture.h"
#include "util/dir_fingerprint.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::mounttest {
namespace {

testutil::RunResult Shell(const std::string& script) {
  return testutil::Run({"bash", "-c", script});
}

// `qemu-img check` within 30 s (a chain loop would make it spin).
void ExpectCheckCleanSoon(const std::string& path) {
  testutil::RunResult r = testutil::Run({"timeout", "30", "qemu-img", "check", path});
  EXPECT_EQ(r.exit_code, 0) << path << ": " << r.out << r.err;
}

void WriteHostFile(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  ASSERT_EQ(std::fclose(f), 0);
}

class MountWriteSafetyTest : public MountTest {
 protected:
  std::map<std::string, std::string> Fingerprint() const {
    return testutil::DirectoryFingerprint(pool_);
  }
};

TEST_F(MountWriteSafetyTest, EchoBackingThatWouldMakeALoopIsEloopAndChangesNothing) {
  MakeChain();
  QemuImgCreate({"-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", P("over.qcow2")});
  ASSERT_EQ(::link(P("mid.qcow2").c_str(), tmp_.Sub("hard.qcow2").c_str()), 0);
  ASSERT_TRUE(MountPool());
  auto before = Fingerprint();

  // The shell sees the errno.
  testutil::RunResult r = Shell("echo top.qcow2 > " + M("p/mid.qcow2/backing"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Too many levels of symbolic links"), std::string::npos) << r.err;
  ExpectLogged("write", "/p/mid.qcow2/backing", "ELOOP", "loop");
  // Onto itself, by its name, a hard link outside the pool, the mount path;
  // onto an image whose chain reaches it.
  for (const std::string& target :
       {std::string("mid.qcow2"), tmp_.Sub("hard.qcow2"), M("p/top.qcow2"), M("p/mid.qcow2"),
        std::string("over.qcow2"), P("over.qcow2")}) {
    EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), target + "\n"), ELOOP) << target;
    ExpectLogged("write", "/p/mid.qcow2/backing", "ELOOP", "loop");
  }
  EXPECT_EQ(WriteValue(M("p/top.qcow2/backing"), "top.qcow2\n"), ELOOP);
  ExpectLogged("write", "/p/top.qcow2/backing", "ELOOP", "itself");
  EXPECT_EQ(Fingerprint(), before);
  for (const char* n : {"over.qcow2", "top.qcow2", "mid.qcow2"}) ExpectCheckCleanSoon(P(n));
  EXPECT_EQ(ReadFile(M("p/over.qcow2/problems")), "");

  // chainctl rebase -u says the same, in its own words.
  int rc = 0;
  Chainctl({"rebase", "-u", "-b", "over.qcow2", P("mid.qcow2")}, &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_EQ(Fingerprint(), before);
}

TEST_F(MountWriteSafetyTest, MvLnSAndCreateThatFillADanglingBackingNameAreEloop) {
  // dangle.qcow2 records "new.qcow2", missing; a.qcow2 sits on dangle.
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "new.qcow2", "-F", "qcow2", P("dangle.qcow2"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "dangle.qcow2", "-F", "qcow2", P("a.qcow2"), "1M"});
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  ASSERT_TRUE(MountPool());
  auto before = Fingerprint();

  testutil::RunResult r = testutil::Run({"mv", M("p/a.qcow2"), M("p/new.qcow2")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Too many levels of symbolic links"), std::string::npos) << r.err;
  ExpectLogged("rename", "/p/a.qcow2", "ELOOP", "new.qcow2");

  EXPECT_EQ(::symlink("dangle.qcow2", M("p/new.qcow2").c_str()), -1);
  EXPECT_EQ(errno, ELOOP);
  ExpectLogged("symlink", "/p/new.qcow2", "ELOOP", "loop");

  r = testutil::RunWithInput({"sh", "-c", "cat > " + M("p/.create")},
                             "<volume><name>new.qcow2</name><target><format type='qcow2'/>"
                             "</target><backingStore><path>dangle.qcow2</path>"
                             "<format type='qcow2'/></backingStore></volume>\n");
  EXPECT_NE(r.exit_code, 0);
  ExpectLogged("create", "/p/new.qcow2", "ELOOP", "loop");
  EXPECT_EQ(Fingerprint(), before);

  // Other names are fine.
  MustRun({"mv", M("p/a.qcow2"), M("p/b.qcow2")});
  MustRun({"ln", "-s", "base.raw", M("p/ok.qcow2")});
  ExpectCheckCleanSoon(P("ok.qcow2"));
  EXPECT_EQ(InfoString(QemuInfo(P("b.qcow2")), "backing-filename"), "dangle.qcow2");
}

TEST_F(MountWriteSafetyTest, EchoBackingOntoAnotherFormatFollowsTheTrustRuleOrIsEacces) {
  MakeChain();
  QemuImgCreate({"-f", "qcow2", P("solo.qcow2"), "64M"});
  QemuImgCreate({"-f", "raw", tmp_.Sub("outside.raw"), "64M"});
  QemuImgCreate({"-f", "qcow2", "-b", tmp_.Sub("outside.raw"), "-F", "raw", P("evil.qcow2")});
  ASSERT_TRUE(MountPool());

  // mid records raw; solo probes as qcow2 and has no backing: qcow2.
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), "solo.qcow2\n"), 0);
  EXPECT_EQ(InfoString(QemuInfo(P("mid.qcow2")), "backing-filename-format"), "qcow2");
  EXPECT_EQ(ReadFile(M("p/mid.qcow2/backing_format")), "qcow2\n");
  ExpectCheckCleanSoon(P("mid.qcow2"));
  // Back onto the raw base: raw again.
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), "base.raw\n"), 0);
  EXPECT_EQ(InfoString(QemuInfo(P("mid.qcow2")), "backing-filename-format"), "raw");
  ExpectCheckCleanSoon(P("mid.qcow2"));

  // evil probes as qcow2 with a backing outside the pools: not guessed.
  auto before = Fingerprint();
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), "evil.qcow2\n"), EACCES);
  ExpectLogged("write", "/p/mid.qcow2/backing", "EACCES",
               "probes as qcow2, not the recorded backing format raw");
  ExpectLogged("write", "/p/mid.qcow2/backing", "EACCES",
               "echo FMT > p/mid.qcow2/backing_format, then echo evil.qcow2 > "
               "p/mid.qcow2/backing again");
  // So is ln -s of it; the log says how to declare it in the mount.
  EXPECT_EQ(::symlink("evil.qcow2", M("p/n.qcow2").c_str()), -1);
  EXPECT_EQ(errno, EACCES);
  ExpectLogged("symlink", "/p/n.qcow2", "EACCES", "POOL/.create");
  EXPECT_EQ(Fingerprint(), before);

  // The declared way the log gives: the format first, then the backing.
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing_format"), "qcow2\n"), 0);
  EXPECT_EQ(WriteValue(M("p/mid.qcow2/backing"), "evil.qcow2\n"), 0);
  core::Json info = QemuInfo(P("mid.qcow2"));
  EXPECT_EQ(InfoString(info, "backing-filename"), "evil.qcow2");
  EXPECT_EQ(InfoString(info, "backing-filename-format"), "qcow2");
  ExpectCheckCleanSoon(P("mid.qcow2"));
}

TEST_F(MountWriteSafetyTest, BackingFormatOnAnImageWithoutBackingIsEnotsup) {
  QemuImgCreate({"-f", "qcow2", P("solo.qcow2"), "1M"});
  ASSERT_TRUE(MountPool());
  auto before = Fingerprint();
  EXPECT_EQ(WriteValue(M("p/solo.qcow2/backing_format"), "raw\n"), ENOTSUP);
  ExpectLogged("write", "/p/solo.qcow2/backing_format", "ENOTSUP", "no backing file");
  testutil::RunResult r = Shell("echo qcow2 > " + M("p/solo.qcow2/backing_format"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not supported"), std::string::npos) << r.err;
  EXPECT_EQ(Fingerprint(), before);
  ExpectCheckCleanSoon(P("solo.qcow2"));
}

TEST_F(MountWriteSafetyTest, MalformedCreateDocumentsOfAnySizeAreEinvalWithTheReason) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  ASSERT_TRUE(MountPool());
  auto before = Fingerprint();

  // The README: one write larger than 4 KiB, not XML at all.
  testutil::RunResult r =
      Shell(std::string("cat ") + CHAINFS_SOURCE_DIR + "/README.md > " + M("p/.create"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Invalid argument"), std::string::npos) << r.err;
  ExpectLogged("create", "/p/.create", "EINVAL", "not a volume XML document");

  // 200 KB of garbage through cp, plain and starting like markup.
  std::mt19937 rng(9);
  for (bool markup : {false, true}) {
    std::string junk(200 * 1024, '\0');
    for (char& c : junk) c = char(rng() & 0xff);
    if (markup) junk.replace(0, 8, "<volume>");
    WriteHostFile(tmp_.Sub("junk"), junk);
    r = testutil::Run({"cp", tmp_.Sub("junk"), M("p/.create")});
    EXPECT_NE(r.exit_code, 0) << markup;
    EXPECT_NE(r.err.find("Invalid argument"), std::string::npos) << r.err;
    ExpectLogged("create", "/p/.create", "EINVAL", markup ? "bad volume XML" : "not a volume");
  }

  // Another root element, bigger than one write.
  std::string domain =
      "<domain type='kvm'><name>vm</name><!-- " + std::string(9000, 'x') + " --></domain>\n";
  WriteHostFile(tmp_.Sub("domain.xml"), domain);
  r = Shell("dd status=none bs=4096 if=" + tmp_.Sub("domain.xml") + " of=" + M("p/.create"));
  EXPECT_NE(r.exit_code, 0);
  ExpectLogged("create", "/p/.create", "EINVAL", "not <volume>");

  // A well-formed start cut short: refused by the short write that ends it.
  std::string cut = "<volume><name>cut.qcow2</name><!-- " + std::string(6000, 'y') + " --><cap";
  WriteHostFile(tmp_.Sub("cut.xml"), cut);
  r = Shell("dd status=none bs=4096 if=" + tmp_.Sub("cut.xml") + " of=" + M("p/.create"));
  EXPECT_NE(r.exit_code, 0);
  ExpectLogged("create", "/p/.create", "EINVAL", "ends incomplete");
  EXPECT_EQ(Fingerprint(), before);

  // A valid document over several writes still works: 4 KiB blocks, and
  // one whose size is a multiple of the block (completed by a full write).
  std::string doc = "<volume>\n  <name>big.qcow2</name>\n  <!-- " + std::string(10000, 'z') +
                    " -->\n  <capacity unit='M'>8</capacity>\n"
                    "  <target><format type='qcow2'/></target>\n</volume>\n";
  WriteHostFile(tmp_.Sub("big.xml"), doc);
  r = Shell("dd status=none bs=4096 if=" + tmp_.Sub("big.xml") + " of=" + M("p/.create"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ExpectLogged("create", "/p/big.qcow2", "ok", "created");
  EXPECT_EQ(InfoNumber(QemuInfo(P("big.qcow2")), "virtual-size"), uint64_t(8) << 20);
  ExpectCheckCleanSoon(P("big.qcow2"));

  std::string exact =
      "<volume><name>exact.qcow2</name><capacity unit='M'>4</capacity>"
      "<target><format type='qcow2'/></target><!-- ";
  exact += std::string(8192 - exact.size() - std::string(" --></volume>").size(), 'e');
  exact += " --></volume>";
  ASSERT_EQ(exact.size(), 8192u);
  WriteHostFile(tmp_.Sub("exact.xml"), exact);
  r = Shell("dd status=none bs=4096 if=" + tmp_.Sub("exact.xml") + " of=" + M("p/.create"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ExpectLogged("create", "/p/exact.qcow2", "ok", "created");
  ExpectCheckCleanSoon(P("exact.qcow2"));
}

TEST_F(MountWriteSafetyTest, RmdirRefusalNamesEveryDependentUpToTen) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "1M"});
  for (int i = 0; i < 12; ++i) {
    QemuImgCreate(
        {"-f", "qcow2", "-b", "base.raw", "-F", "raw", P("o" + std::to_string(i) + ".qcow2")});
  }
  ASSERT_TRUE(MountPool());
  auto before = Fingerprint();
  EXPECT_EQ(::rmdir(M("p/base.raw").c_str()), -1);
  EXPECT_EQ(errno, EBUSY);
  ExpectLogged("rmdir", "/p/base.raw", "EBUSY", "12 volume(s)");
  ExpectLogged("rmdir", "/p/base.raw", "EBUSY", "and 2 more; remove or rebase them first");
  std::string log = Log();
  std::string line = log.substr(log.rfind(" rmdir /p/base.raw EBUSY "));
  line = line.substr(0, line.find('\n'));
  int named = 0;
  for (int i = 0; i < 12; ++i) {
    if (line.find("/o" + std::to_string(i) + ".qcow2' (its overlay)") != std::string::npos) {
      ++named;
    }
  }
  EXPECT_EQ(named, 10) << line;
  EXPECT_EQ(Fingerprint(), before);
}

}  // namespace
}  // namespace chainfs::mounttest
