// Unsafe writes the engine refuses (issue 9), on real qemu-img images:
// backing chain loops (ELOOP) by a retarget, `chainctl rebase -u`, a new
// overlay or a rename, under any spelling of the image; a retarget onto a
// file of another format (the trust rule, or EACCES); backing_format on an
// image without a backing (ENOTSUP); rmdir naming every dependent;
// chainctl's refusals phrased as chainctl commands. Every refusal leaves
// every file as it was (fingerprint of the folder), every change passes
// `qemu-img check` (run under `timeout`, since a loop makes it spin).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/chain/trust.h"
#include "core/util/json.h"
#include "core/write/create.h"
#include "core/write/loop_check.h"
#include "core/write/rebase.h"
#include "core/write/remove.h"
#include "core/write/rename.h"
#include "core/write/retarget.h"
#include "util/dir_fingerprint.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::RunChainctl;
using testutil::RunResult;
using testutil::ScopedTempDir;

void MustRun(const std::vector<std::string>& argv) {
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err
                            << r.out;
}

// `qemu-img check` within 30 s: no errors, no leaks, no spinning on a loop.
::testing::AssertionResult QemuCheckClean(const std::string& path) {
  RunResult r = testutil::Run({"timeout", "30", "qemu-img", "check", path});
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "qemu-img check " << path << " exit " << r.exit_code << ": " << r.out << r.err;
}

std::string InfoField(const std::string& path, const char* key) {
  RunResult r = testutil::Run({"timeout", "30", "qemu-img", "info", "-U", "--output=json", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Result<Json> j = Json::Parse(r.out);
  if (!j.ok() || !j->Find(key)) return "";
  return j->Find(key)->as_string();
}


class WriteSafetyTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }
  void QemuImg(std::vector<std::string> args) {
    args.insert(args.begin(), {"qemu-img", "create", "-q"});
    MustRun(args);
  }
  // base.raw <- mid.qcow2 <- top.qcow2, with data in each.
  void MakeChain() {
    QemuImg({"-f", "raw", P("base.raw"), "4M"});
    MustRun({"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", P("base.raw")});
    QemuImg({"-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 1M", P("mid.qcow2")});
    QemuImg({"-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
  }
  std::map<std::string, std::string> Fingerprint() const {
    return testutil::DirectoryFingerprint(dir_.path());
  }
  ScopedTempDir dir_;
  ImageInspector inspector_;
};

TEST_F(WriteSafetyTest, RetargetOntoItselfUnderAnyNameIsRefusedWithEloop) {
  MakeChain();
  ASSERT_EQ(::link(P("mid.qcow2").c_str(), P("hard.qcow2").c_str()), 0);
  ASSERT_EQ(::symlink("mid.qcow2", P("soft.qcow2").c_str()), 0);
  auto before = Fingerprint();
  for (const std::string& self :
       {std::string("mid.qcow2"), P("mid.qcow2"), std::string("./mid.qcow2"),
        std::string("../") + BaseName(dir_.path()) + "/mid.qcow2", std::string("hard.qcow2"),
        std::string("soft.qcow2")}) {
    Status s = Retarget(inspector_, P("mid.qcow2"), self, TrustContext{});
    EXPECT_TRUE(IsLoopError(s)) << self << ": " << s.ToString();
    EXPECT_NE(s.message().find("itself"), std::string::npos) << s.message();
    // With a declared format too (chainctl rebase -u -F).
    Status d = Retarget(inspector_, P("mid.qcow2"), self, "qcow2", TrustContext{});
    EXPECT_TRUE(IsLoopError(d)) << self << ": " << d.ToString();
  }
  EXPECT_EQ(Fingerprint(), before);
  EXPECT_TRUE(QemuCheckClean(P("top.qcow2")));
}

TEST_F(WriteSafetyTest, RetargetOntoAnImageWhoseChainReachesItIsRefusedWithEloop) {
  MakeChain();
  // over.qcow2 -> top -> mid -> base; and a file whose format is not recorded
  // (QEMU probes it, so the loop check must too) above top.
  QemuImg({"-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", P("over.qcow2")});
  QemuImg({"-f", "qcow2", "-b", "over.qcow2", "-F", "qcow2", P("nofmt.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("nofmt.qcow2")).ok());
  ASSERT_EQ(::symlink("nofmt.qcow2", P("link.qcow2").c_str()), 0);
  auto before = Fingerprint();
  for (const char* target : {"over.qcow2", "top.qcow2", "nofmt.qcow2", "link.qcow2"}) {
    // mid is below all of them.
    Status s = Retarget(inspector_, P("mid.qcow2"), target, TrustContext{});
    EXPECT_TRUE(IsLoopError(s)) << target << ": " << s.ToString();
    EXPECT_NE(s.message().find("loop"), std::string::npos) << s.message();
    Status d = Retarget(inspector_, P("base.raw"), target, "qcow2", TrustContext{});
    EXPECT_EQ(d.code(), Code::kUnsupported) << d.ToString();  // raw records no backing
    Status m = Retarget(inspector_, P("mid.qcow2"), target, "qcow2", TrustContext{});
    EXPECT_TRUE(IsLoopError(m)) << target << ": " << m.ToString();
  }
  // Declared raw, a file whose bytes look like a qcow2 over mid is plain
  // data: no chain below it, no loop (an admin may record raw for a guest's
  // raw disk that holds such a header).
  testutil::CraftOptions header;
  header.size = 4 << 20;
  header.backing = "mid.qcow2";
  header.backing_format = "qcow2";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(P("guest.img"), header).ok());
  ASSERT_TRUE(Retarget(inspector_, P("mid.qcow2"), "guest.img", "raw", TrustContext{}).ok());
  EXPECT_EQ(InfoField(P("mid.qcow2"), "backing-filename-format"), "raw");
  EXPECT_TRUE(QemuCheckClean(P("mid.qcow2")));
  ASSERT_TRUE(Retarget(inspector_, P("mid.qcow2"), "base.raw", "raw", TrustContext{}).ok());
  before = Fingerprint();

  // chainctl rebase -u: exit 1, the reason on stderr, nothing changed.
  RunResult r = RunChainctl({"rebase", "-u", "-b", "over.qcow2", P("mid.qcow2")});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("loop"), std::string::npos) << r.err;
  r = RunChainctl({"rebase", "-u", "-b", "nofmt.qcow2", "-F", "qcow2", P("mid.qcow2")});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("loop"), std::string::npos) << r.err;
  EXPECT_EQ(Fingerprint(), before);
  for (const char* n : {"top.qcow2", "over.qcow2", "mid.qcow2"}) EXPECT_TRUE(QemuCheckClean(P(n)));

  // A retarget that closes no loop still works.
  MustRun({"cp", "--sparse=always", P("base.raw"), P("base2.raw")});
  ASSERT_TRUE(Retarget(inspector_, P("mid.qcow2"), "base2.raw", TrustContext{}).ok());
  EXPECT_EQ(InfoField(P("mid.qcow2"), "backing-filename"), "base2.raw");
  EXPECT_TRUE(QemuCheckClean(P("mid.qcow2")));
}

TEST_F(WriteSafetyTest, SafeRebaseSharesTheLoopCheck) {
  MakeChain();
  QemuImg({"-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", P("over.qcow2")});
  auto before = Fingerprint();
  Status s = SafeRebase(inspector_, P("mid.qcow2"), std::string("over.qcow2"), std::string("qcow2"),
                        TrustContext{});
  EXPECT_TRUE(IsLoopError(s)) << s.ToString();  // ELOOP, as for a retarget
  EXPECT_NE(s.message().find("loop"), std::string::npos) << s.message();
  EXPECT_EQ(Fingerprint(), before);
}

TEST_F(WriteSafetyTest, NewOverlayOrRenameFillingADanglingBackingNameIsRefusedWithEloop) {
  // dangle.qcow2 records "new.qcow2", which does not exist (yet); via.qcow2
  // records a symlink that points nowhere yet, at "new2.qcow2".
  QemuImg({"-f", "qcow2", "-u", "-b", "new.qcow2", "-F", "qcow2", P("dangle.qcow2"), "1M"});
  ASSERT_EQ(::symlink("new2.qcow2", P("pointer").c_str()), 0);
  QemuImg({"-f", "qcow2", "-u", "-b", "pointer", "-F", "qcow2", P("via.qcow2"), "1M"});
  QemuImg({"-f", "qcow2", "-u", "-b", "dangle.qcow2", "-F", "qcow2", P("a.qcow2"), "1M"});
  auto before = Fingerprint();
  Status s = CreateOverlay(inspector_, P("new.qcow2"), "dangle.qcow2", P("dangle.qcow2"),
                           std::string("qcow2"), TrustContext{});
  EXPECT_TRUE(IsLoopError(s)) << s.ToString();
  EXPECT_NE(s.message().find("new.qcow2"), std::string::npos) << s.message();
  s = CreateOverlay(inspector_, P("new2.qcow2"), "via.qcow2", P("via.qcow2"), std::string("qcow2"),
                    TrustContext{});
  EXPECT_TRUE(IsLoopError(s)) << s.ToString();
  RunResult r = RunChainctl({"create", "-b", "dangle.qcow2", "-F", "qcow2", P("new.qcow2")});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("loop"), std::string::npos) << r.err;
  // A rename of a.qcow2 (whose chain ends at the missing new.qcow2) to that name.
  const std::vector<std::string> candidates = {P("a.qcow2"), P("dangle.qcow2"), P("via.qcow2")};
  s = RenameImage(inspector_, P("a.qcow2"), P("new.qcow2"), candidates);
  EXPECT_TRUE(IsLoopError(s)) << s.ToString();
  EXPECT_EQ(Fingerprint(), before);

  // Another name is fine, and so is an overlay of an image whose chain does
  // not end at the new name.
  ASSERT_TRUE(RenameImage(inspector_, P("a.qcow2"), P("b.qcow2"), candidates).ok());
  EXPECT_EQ(InfoField(P("b.qcow2"), "backing-filename"), "dangle.qcow2");
  QemuImg({"-f", "raw", P("base.raw"), "1M"});
  ASSERT_TRUE(CreateOverlay(inspector_, P("ok.qcow2"), "base.raw", P("base.raw"), std::nullopt,
                            TrustContext{})
                  .ok());
  EXPECT_TRUE(QemuCheckClean(P("ok.qcow2")));
}

TEST_F(WriteSafetyTest, RetargetOntoAnotherFormatFollowsTheTrustRuleOrRefuses) {
  MakeChain();
  // A qcow2 without a backing: the trust rule allows its probed format.
  QemuImg({"-f", "qcow2", P("solo.qcow2"), "4M"});
  MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", P("solo.qcow2")});
  // A qcow2 with a backing outside every pool: not trusted.
  QemuImg({"-f", "raw", P("outside.raw"), "4M"});
  QemuImg({"-f", "qcow2", "-b", "outside.raw", "-F", "raw", P("evil.qcow2")});

  // mid records raw; solo probes as qcow2: recorded qcow2 now, as qemu-img
  // rebase -u -F qcow2 would.
  ASSERT_TRUE(Retarget(inspector_, P("mid.qcow2"), "solo.qcow2", TrustContext{}).ok());
  EXPECT_EQ(InfoField(P("mid.qcow2"), "backing-filename-format"), "qcow2");
  EXPECT_TRUE(QemuCheckClean(P("mid.qcow2")));
  RunResult cmp = testutil::Run(
      {"qemu-img", "compare", "-f", "qcow2", "-F", "raw", P("mid.qcow2"), P("base.raw")});
  EXPECT_NE(cmp.exit_code, 2) << cmp.err;  // readable through the new chain

  // Back onto a raw file: probes raw, recorded qcow2 -> raw.
  ASSERT_TRUE(Retarget(inspector_, P("mid.qcow2"), "base.raw", TrustContext{}).ok());
  EXPECT_EQ(InfoField(P("mid.qcow2"), "backing-filename-format"), "raw");
  EXPECT_TRUE(QemuCheckClean(P("mid.qcow2")));

  // Onto the untrusted qcow2 while raw is recorded: EACCES, saying both
  // formats and how to declare one with chainctl.
  auto before = Fingerprint();
  Status s = Retarget(inspector_, P("mid.qcow2"), "evil.qcow2", TrustContext{});
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("probes as qcow2, not the recorded backing format raw"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("chainctl rebase -u -F FMT -b evil.qcow2 " + P("mid.qcow2")),
            std::string::npos)
      << s.message();
  RunResult r = RunChainctl({"rebase", "-u", "-b", "evil.qcow2", P("mid.qcow2")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("chainctl rebase -u -F FMT"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("echo"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("VOL/"), std::string::npos) << r.err;
  EXPECT_EQ(Fingerprint(), before);

  // top records qcow2 and evil probes as qcow2: the recorded format is kept.
  ASSERT_TRUE(Retarget(inspector_, P("top.qcow2"), "evil.qcow2", TrustContext{}).ok());
  EXPECT_EQ(InfoField(P("top.qcow2"), "backing-filename-format"), "qcow2");
  EXPECT_TRUE(QemuCheckClean(P("top.qcow2")));
  // Declared explicitly, anything known goes: qemu-img reads it as raw.
  r = RunChainctl({"rebase", "-u", "-b", "evil.qcow2", "-F", "raw", P("mid.qcow2")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(InfoField(P("mid.qcow2"), "backing-filename-format"), "raw");
  EXPECT_TRUE(QemuCheckClean(P("mid.qcow2")));
}

TEST_F(WriteSafetyTest, BackingFormatOfAnImageWithoutBackingIsUnsupported) {
  QemuImg({"-f", "qcow2", P("solo.qcow2"), "1M"});
  auto before = Fingerprint();
  Status s = SetBackingFormat(P("solo.qcow2"), "raw");
  EXPECT_EQ(s.code(), Code::kUnsupported) << s.ToString();
  EXPECT_NE(s.message().find("no backing file"), std::string::npos) << s.message();
  EXPECT_EQ(SetBackingFormat(P("solo.qcow2"), "nonsense").code(), Code::kInvalidArgument);
  EXPECT_EQ(Fingerprint(), before);
  EXPECT_TRUE(QemuCheckClean(P("solo.qcow2")));
}

TEST_F(WriteSafetyTest, RemoveNamesEveryDependentUpToTenThenCounts) {
  QemuImg({"-f", "raw", P("base.raw"), "1M"});
  std::vector<std::string> candidates = {P("base.raw")};
  for (int i = 0; i < 12; ++i) {
    std::string n = P("o" + std::to_string(i) + ".qcow2");
    QemuImg({"-f", "qcow2", "-b", "base.raw", "-F", "raw", n});
    candidates.push_back(n);
  }
  QemuImg({"-f", "qcow2", "-b", "o0.qcow2", "-F", "qcow2", P("deep.qcow2")});
  candidates.push_back(P("deep.qcow2"));
  auto before = Fingerprint();
  Status s = RemoveImage(inspector_, P("base.raw"), candidates);
  EXPECT_EQ(s.code(), Code::kBusy);
  EXPECT_NE(s.message().find("13 volume(s)"), std::string::npos) << s.message();
  int named = 0;
  for (int i = 0; i < 12; ++i) {
    if (s.message().find("o" + std::to_string(i) + ".qcow2'") != std::string::npos) ++named;
  }
  EXPECT_EQ(named, 10) << s.message();
  EXPECT_NE(s.message().find("and 3 more"), std::string::npos) << s.message();
  // The chain user below a dependent is named with where it meets the image.
  s = RemoveImage(inspector_, P("o0.qcow2"), candidates);
  EXPECT_EQ(s.code(), Code::kBusy);
  EXPECT_NE(s.message().find("deep.qcow2' (its overlay)"), std::string::npos) << s.message();
  EXPECT_EQ(Fingerprint(), before);
}

TEST_F(WriteSafetyTest, ChainctlRefusalsSpeakOfChainctlNotOfAMount) {
  QemuImg({"-f", "raw", P("outside.raw"), "4M"});
  QemuImg({"-f", "qcow2", "-b", "outside.raw", "-F", "raw", P("evil.qcow2")});
  QemuImg({"-f", "qcow2", P("top.qcow2"), "4M"});
  auto before = Fingerprint();
  struct Case {
    std::vector<std::string> args;
    const char* fix;
  };
  const std::vector<Case> cases = {
      {{"create", "-b", "evil.qcow2", P("new.qcow2")}, "chainctl create -F FMT -b evil.qcow2"},
      {{"rebase", "-b", "evil.qcow2", P("top.qcow2")}, "chainctl rebase -F FMT -b evil.qcow2"},
      {{"rebase", "-u", "-b", "evil.qcow2", P("top.qcow2")},
       "chainctl rebase -u -F FMT -b evil.qcow2"},
      {{"rebase", "-u", "-b", "", P("top.qcow2")}, "chainctl rebase -b ''"},
      {{"rebase", "-b", "nbd://localhost/x", P("top.qcow2")}, "chainctl rebase -u -b"},
  };
  for (const Case& c : cases) {
    RunResult r = RunChainctl(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args[0] << ": " << r.err;
    EXPECT_NE(r.err.find(c.fix), std::string::npos) << r.err;
    for (const char* mount_word : {"echo ", "VOL/", ".create", "ln -s", "POOL/"}) {
      EXPECT_EQ(r.err.find(mount_word), std::string::npos) << mount_word << " in: " << r.err;
    }
  }
  EXPECT_EQ(Fingerprint(), before);
}

}  // namespace
}  // namespace chainfs::core
