// Output injection (issue 9): for every hostile image of
// testutil::MakeHostileImages, chainctl's outputs stay what they claim to be:
// info --json parses with strict parsers (jq, Python) and escapes as
// qemu-img does; volume and disk XML are well-formed XML 1.0 and validate
// against libvirt's schemas; check and chain print exactly one line per
// problem and per element; no output carries a raw control character.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/pool/pool_def.h"
#include "core/render/render.h"
#include "core/util/escape.h"
#include "util/hostile_images.h"
#include "util/output_check.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::HostileCase;
using testutil::StrictJsonComplaint;
using testutil::WrapDisk;
using testutil::XmlComplaint;
using testutil::RunChainctl;
using testutil::RunResult;
using testutil::ScopedTempDir;


// Returns the text after `"key": ` up to the end of its line in qemu-img's
// or chainfs's indented JSON (the escaped value, with a trailing comma if any).
std::string JsonLineValue(const std::string& json, const std::string& key) {
  std::string needle = "\"" + key + "\": ";
  size_t at = json.find(needle);
  if (at == std::string::npos) return "<absent>";
  at += needle.size();
  return json.substr(at, json.find('\n', at) - at);
}

class HostileOutputTest : public ::testing::Test {
 protected:
  void SetUp() override { cases_ = testutil::MakeHostileImages(dir_.path(), true); }
  std::string P(const std::string& name) const { return dir_.Sub(name); }
  ScopedTempDir dir_;
  std::vector<HostileCase> cases_;
};

TEST_F(HostileOutputTest, MakesAtLeastFifteenDistinctCases) { EXPECT_GE(cases_.size(), 15u); }

TEST_F(HostileOutputTest, InfoJsonParsesStrictlyAndEscapesAsQemuImg) {
  for (const HostileCase& c : cases_) {
    SCOPED_TRACE(c.label);
    RunResult r = RunChainctl({"info", "--json", P(c.top)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(testutil::FindRawControl(r.out), "") << r.out;
    EXPECT_EQ(StrictJsonComplaint(r.out), "") << r.out;
    Result<Json> parsed = Json::Parse(r.out);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    ASSERT_TRUE(parsed->is_array());
    ASSERT_GE(parsed->as_array().size(), 1u);
    if (!c.qemu_compares) continue;
    RunResult q = testutil::Run({"qemu-img", "info", "--output=json", "-f", "qcow2", P(c.top)});
    ASSERT_EQ(q.exit_code, 0) << q.err;
    // The top element's strings read from the image, byte for byte as qemu-img escapes them.
    for (const char* key : {"backing-filename", "backing-filename-format", "filename"}) {
      EXPECT_EQ(JsonLineValue(r.out, key), JsonLineValue(q.out, key)) << key;
    }
  }
}

TEST_F(HostileOutputTest, VolumeAndDiskXmlAreValidXml10ForLibvirtsSchemas) {
  for (const HostileCase& c : cases_) {
    SCOPED_TRACE(c.label);
    RunResult vol = RunChainctl({"xml", "volume", P(c.top)});
    ASSERT_EQ(vol.exit_code, 0) << vol.err;
    EXPECT_EQ(vol.out.find("&#"), std::string::npos) << vol.out;
    EXPECT_EQ(XmlComplaint(vol.out, "storagevol.rng"), "") << vol.out;
    RunResult disk = RunChainctl({"xml", "disk", P(c.top)});
    ASSERT_EQ(disk.exit_code, 0) << disk.err;
    ASSERT_FALSE(disk.out.empty());
    EXPECT_EQ(disk.out.find("&#"), std::string::npos) << disk.out;
    EXPECT_EQ(XmlComplaint(WrapDisk(disk.out), "domain.rng"), "") << disk.out;
  }
}

TEST_F(HostileOutputTest, CheckAndChainPrintExactlyOneLinePerProblemAndElement) {
  for (const HostileCase& c : cases_) {
    SCOPED_TRACE(c.label);
    RunResult check = RunChainctl({"check", P(c.top)});
    // 1 when any problem is an error, 3 when all are warnings (the
    // severities problems.json gives).
    RunResult js = RunChainctl({"check", "--json", P(c.top)});
    EXPECT_EQ(js.exit_code, check.exit_code);
    Result<Json> parsed = Json::Parse(js.out);
    ASSERT_TRUE(parsed.ok() && parsed->is_array()) << js.out;
    EXPECT_EQ(parsed->as_array().size(), size_t(c.problems)) << js.out;
    bool error = false;
    for (const Json& p : parsed->as_array()) error = error || p.Find("severity")->as_string() == "error";
    EXPECT_EQ(check.exit_code, c.problems == 0 ? 0 : error ? 1 : 3) << check.out << check.err;
    EXPECT_EQ(testutil::CountLines(check.out), c.problems) << EscapeOneLine(check.out);
    EXPECT_EQ(testutil::FindRawControl(check.out), "") << EscapeOneLine(check.out);
    size_t start = 0;
    while (start < check.out.size()) {
      size_t end = check.out.find('\n', start);
      std::string line = check.out.substr(start, end - start);
      EXPECT_TRUE(line.size() > 3 && line[0] >= '0' && line[0] <= '9') << EscapeOneLine(line);
      // A problem echoes at most a few hundred bytes of any name.
      EXPECT_LT(line.size(), 2000u) << EscapeOneLine(line);
      start = end + 1;
    }
    RunResult chain = RunChainctl({"chain", P(c.top)});
    EXPECT_EQ(chain.exit_code, 0) << chain.err;
    EXPECT_EQ(testutil::CountLines(chain.out), c.elements) << EscapeOneLine(chain.out);
    EXPECT_EQ(testutil::FindRawControl(chain.out), "") << EscapeOneLine(chain.out);
    for (int i = 0; i < c.elements; ++i) {
      EXPECT_NE(chain.out.find(std::to_string(i) + " "), std::string::npos);
    }
    RunResult info = RunChainctl({"info", P(c.top)});
    EXPECT_EQ(info.exit_code, 0) << info.err;
    EXPECT_EQ(testutil::FindRawControl(info.out), "") << EscapeOneLine(info.out);
  }
}

TEST_F(HostileOutputTest, OneValueFilesHoldOneLine) {
  ImageInspector inspector;
  for (const HostileCase& c : cases_) {
    SCOPED_TRACE(c.label);
    Chain chain = ResolveChain(inspector, P(c.top));
    ASSERT_EQ(int(chain.elements.size()), c.elements) << RenderProblems(chain);
    EXPECT_EQ(int(chain.problems.size()), c.problems) << RenderProblems(chain);
    for (const ChainElement& e : chain.elements) {
      for (const char* field : {"path", "format", "backing", "backing_format", "capacity"}) {
        std::string v = RenderElementField(e, field);
        EXPECT_LE(testutil::CountLines(v), 1) << field << ": " << EscapeOneLine(v);
        for (unsigned char ch : v.substr(0, v.empty() ? 0 : v.size() - 1)) {
          EXPECT_TRUE(ch >= 0x20 && ch != 0x7f) << field << ": " << EscapeOneLine(v);
        }
      }
    }
    // The backing string stays byte for byte when it has no control character.
    const ChainElement& top = chain.elements[0];
    ASSERT_TRUE(top.meta && top.meta->backing);
    std::string backing = RenderElementField(top, "backing");
    if (OneValue(*top.meta->backing) == *top.meta->backing) {
      EXPECT_EQ(backing, *top.meta->backing + "\n");
    } else {
      EXPECT_EQ(backing, EscapeOneLine(*top.meta->backing) + "\n");
    }
  }
}

TEST_F(HostileOutputTest, PoolXmlStaysXml10WhenTheDefinitionCarriesCharacterReferences) {
  // pugixml decodes &#1; and &#27; when reading a definition; re-emitted as
  // they are, they would make .pool.xml ill-formed.
  Result<PoolDef> pool = ParsePoolXml(
      "<pool type='netfs'><name>nfs</name><uuid>2b0b3e3c-6b7a-4c1e-9a34-5b8f7f8d1e20</uuid>"
      "<source><host name='filer.example.com'/><dir path='/export&#1;&#10;x'/>"
      "<format type='nfs'/></source><target><path>" +
          dir_.path() + "</path></target></pool>",
      "netfs.xml");
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  std::string xml = RenderPoolXml(*pool, StatPoolSpace(*pool));
  EXPECT_EQ(xml.find("&#"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<dir path='/export\xEF\xBF\xBD\xEF\xBF\xBDx'/>"), std::string::npos) << xml;
  EXPECT_EQ(XmlComplaint(xml, "storagepool.rng"), "") << xml;
}

// Returns what bash makes of `word` (one shell word of a fix).
std::string BashWord(const std::string& word) {
  return testutil::Run({"bash", "-c", "printf %s " + word}).out;
}

TEST_F(HostileOutputTest, FixesQuoteHostileNamesAsOneShellWord) {
  ImageInspector inspector;
  auto find = [&](const std::string& label_part) -> Chain {
    for (const HostileCase& c : cases_) {
      if (c.label.find(label_part) != std::string::npos) return ResolveChain(inspector, P(c.top));
    }
    ADD_FAILURE() << "no case " << label_part;
    return Chain{};
  };
  // The image's own path (with \x01, a newline, \xff and an escape sequence).
  Chain soh = find("\\x01 in a missing backing");
  ASSERT_EQ(soh.problems.size(), 1u);
  const std::string& fix = soh.problems[0].fix;
  EXPECT_NE(fix.find("$'"), std::string::npos) << fix;
  size_t word = fix.rfind(' ');
  ASSERT_NE(word, std::string::npos);
  EXPECT_EQ(BashWord(fix.substr(word + 1)), soh.elements[0].path) << fix;
  // The backing string, where a fix repeats it.
  Chain nofmt = find("unrecorded format");
  ASSERT_EQ(nofmt.problems.size(), 1u);
  const std::string& fix2 = nofmt.problems[0].fix;
  size_t b = fix2.find(" -b ");
  ASSERT_NE(b, std::string::npos) << fix2;
  size_t end = fix2.find(' ', b + 4);
  EXPECT_EQ(BashWord(fix2.substr(b + 4, end - b - 4)), *nofmt.elements[0].meta->backing) << fix2;
}

}  // namespace
}  // namespace chainfs::core
