// format-mismatch: a recorded backing format that disagrees with what the
// backing's bytes probe as is shown as a problem, and never acted on
// (DESIGN section 3: the format comes from metadata; probing is for the
// warning only and nothing of the probed result is followed).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/chain/resolver.h"
#include "core/data/chain_reader.h"
#include "core/render/render.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::ScopedTempDir;

void QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  testutil::RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

class FormatMismatchTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }
  Chain Resolve(const std::string& name) {
    ResolveOptions opts;
    opts.locate = [&](const std::string& path) -> std::optional<std::string> {
      if (path == P("top.qcow2")) return std::string("pool/top.qcow2");
      return std::nullopt;
    };
    return ResolveChain(inspector_, P(name), opts);
  }
  const Problem* Mismatch(const Chain& c) {
    for (const Problem& p : c.problems) {
      if (p.message.find("format-mismatch") != std::string::npos) return &p;
    }
    return nullptr;
  }
  ScopedTempDir dir_;
  ImageInspector inspector_;
};

TEST_F(FormatMismatchTest, RawRecordedOverQcow2HeaderIsShownButRawStaysInUse) {
  // The backing holds a qcow2 header whose own backing is a file outside
  // the pool, and a data file: neither may be followed.
  testutil::CraftOptions o;
  o.size = 1 << 20;
  o.backing = "/etc/passwd";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(P("disk.img"), o).ok());
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "disk.img", "-F", "raw", P("top.qcow2")});
  Chain c = Resolve("top.qcow2");
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_TRUE(c.complete);
  EXPECT_EQ(c.elements[1].format, "raw");
  EXPECT_EQ(c.elements[1].format_source, FormatSource::kMetadata);
  ASSERT_TRUE(c.elements[1].meta);
  EXPECT_FALSE(c.elements[1].meta->backing.has_value());  // parsed as raw, not as qcow2
  ASSERT_EQ(c.problems.size(), 1u);
  const Problem& p = c.problems[0];
  EXPECT_EQ(p.index, 1);
  EXPECT_EQ(p.kind, ProblemKind::kFormatMismatch);
  EXPECT_EQ(p.message.rfind("format-mismatch: ", 0), 0u) << p.message;
  EXPECT_NE(p.message.find("records backing format raw"), std::string::npos) << p.message;
  EXPECT_NE(p.message.find("header is qcow2"), std::string::npos) << p.message;
  EXPECT_NE(p.message.find("a guest sees the qcow2 file's own bytes"), std::string::npos)
      << p.message;
  EXPECT_EQ(p.message.find("/etc/passwd"), std::string::npos) << p.message;
  EXPECT_NE(p.fix.find("echo qcow2 > pool/top.qcow2/backing_format"), std::string::npos) << p.fix;
  EXPECT_NE(p.fix.find("qemu-img rebase -u -f qcow2 -F qcow2 -b disk.img " + P("top.qcow2")),
            std::string::npos)
      << p.fix;
  EXPECT_NE(p.fix.find("keep raw"), std::string::npos) << p.fix;
  // One line in problems; the data stays readable as recorded: the guest
  // sees the backing's bytes.
  std::string text = RenderProblems(c);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  Result<std::unique_ptr<ChainReader>> reader = ChainReader::Open(c);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
}

TEST_F(FormatMismatchTest, Qcow2RecordedOverRawBytesNamesBothFormats) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
  QemuImg(
      {"create", "-q", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "qcow2", P("top.qcow2"), "1M"});
  Chain c = Resolve("top.qcow2");
  const Problem* p = Mismatch(c);
  ASSERT_NE(p, nullptr) << RenderProblems(c);
  EXPECT_EQ(p->index, 1);
  EXPECT_NE(p->message.find("records backing format qcow2"), std::string::npos) << p->message;
  EXPECT_NE(p->message.find("header is raw"), std::string::npos) << p->message;
  EXPECT_NE(p->fix.find("echo raw > pool/top.qcow2/backing_format"), std::string::npos) << p->fix;
  // Still read as recorded: qcow2, which cannot parse raw bytes.
  EXPECT_EQ(c.elements[1].format, "qcow2");
  EXPECT_FALSE(c.complete);
}

TEST_F(FormatMismatchTest, AgreeingFormatsAndRawOverIsoGiveNoProblem) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
  Chain ok = Resolve("top.qcow2");
  EXPECT_TRUE(ok.healthy()) << RenderProblems(ok);
  // An ISO 9660 image recorded as raw: qemu has no iso driver and reads it
  // raw, the guest sees the same bytes either way.
  std::vector<uint8_t> iso(64 * 1024, 0);
  const char kMagic[] =
      "\x01"
      "CD001\x01";
  std::copy(kMagic, kMagic + 7, iso.begin() + 0x8000);
  ASSERT_TRUE(testutil::WriteBytes(P("cd.iso"), iso).ok());
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "cd.iso", "-F", "raw", P("over-iso.qcow2")});
  Chain c = Resolve("over-iso.qcow2");
  EXPECT_EQ(Mismatch(c), nullptr) << RenderProblems(c);
}

TEST_F(FormatMismatchTest, ProbingTheBackingNeverChangesItsFormatOrFollowsItsBacking) {
  // qcow2 header naming a backing that does not exist: were it followed,
  // a "Cannot access backing file" problem would appear.
  testutil::CraftOptions o;
  o.size = 1 << 20;
  o.backing = P("never-opened.qcow2");
  o.backing_format = "qcow2";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(P("guest.raw"), o).ok());
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "guest.raw", "-F", "raw", P("top.qcow2")});
  for (int round = 0; round < 2; ++round) {  // also from the inspector's cache
    Chain c = Resolve("top.qcow2");
    ASSERT_EQ(c.elements.size(), 2u);
    EXPECT_EQ(c.elements[1].format, "raw");
    ASSERT_EQ(c.problems.size(), 1u) << RenderProblems(c);
    EXPECT_NE(c.problems[0].message.find("format-mismatch"), std::string::npos);
    EXPECT_EQ(RenderProblems(c).find("never-opened"), std::string::npos);
  }
  EXPECT_EQ(RenderElementField(Resolve("top.qcow2").elements[1], "capacity"),
            std::to_string(testutil::CraftQcow2Image(o).size()) + "\n");
}

}  // namespace
}  // namespace chainfs::core
