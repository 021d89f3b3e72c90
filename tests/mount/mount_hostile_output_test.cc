// Output injection through the mount (issue 9): a pool full of the hostile
// images of testutil::MakeHostileImages. Every volume's info.json parses
// strictly, volume.xml, disk.xml and .pool.xml are valid XML 1.0 for
// libvirt's schemas, problems holds exactly one line per problem, the
// one-value files one line, and neither the tree nor .chainfs/log carries a
// raw control character. Documents equal chainctl's, byte for byte.
#include <dirent.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "core/util/escape.h"
#include "fs/event_log.h"
#include "mount/mount_fixture.h"
#include "util/hostile_images.h"
#include "util/output_check.h"

namespace chainfs::mounttest {
namespace {

using testutil::HostileCase;
using testutil::StrictJsonComplaint;
using testutil::WrapDisk;
using testutil::XmlComplaint;
using testutil::RunResult;

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    ADD_FAILURE() << "opendir " << core::EscapeOneLine(dir);
    return out;
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  return out;
}

class MountHostileOutputTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    cases_ = testutil::MakeHostileImages(pool_, false);
  }
  std::vector<HostileCase> cases_;
};

TEST_F(MountHostileOutputTest, EveryCaseKeepsItsDocumentsValidAndItsLinesCounted) {
  ASSERT_GE(cases_.size(), 15u);
  ASSERT_TRUE(MountPool());
  for (const HostileCase& c : cases_) {
    SCOPED_TRACE(c.label);
    const std::string vol = M("p/" + c.top);
    std::string json = ReadFile(vol + "/info.json");
    EXPECT_EQ(testutil::FindRawControl(json), "") << json;
    EXPECT_EQ(StrictJsonComplaint(json), "") << json;
    EXPECT_EQ(json, Chainctl({"info", "--json", P(c.top)}));

    std::string volume = ReadFile(vol + "/volume.xml");
    EXPECT_EQ(XmlComplaint(volume, "storagevol.rng"), "") << volume;
    std::string disk = ReadFile(vol + "/disk.xml");
    EXPECT_EQ(XmlComplaint(WrapDisk(disk), "domain.rng"), "") << disk;
    EXPECT_EQ(disk, Chainctl({"xml", "disk", P(c.top)}));

    std::string problems = ReadFile(vol + "/problems");
    EXPECT_EQ(testutil::CountLines(problems), c.problems) << core::EscapeOneLine(problems);
    EXPECT_EQ(testutil::FindRawControl(problems), "") << core::EscapeOneLine(problems);
    int rc = -1;
    EXPECT_EQ(problems, Chainctl({"check", P(c.top)}, &rc));
    // problems.json: strict JSON, one object per line of problems, the
    // same as chainctl's; the exit status follows its severities.
    std::string pjson = ReadFile(vol + "/problems.json");
    EXPECT_EQ(StrictJsonComplaint(pjson), "") << pjson;
    EXPECT_EQ(pjson, Chainctl({"check", "--json", P(c.top)}, &rc));
    core::Result<core::Json> parsed = core::Json::Parse(pjson);
    ASSERT_TRUE(parsed.ok() && parsed->is_array()) << pjson;
    EXPECT_EQ(parsed->as_array().size(), size_t(c.problems));
    bool error = false;
    for (const core::Json& p : parsed->as_array()) {
      error = error || p.Find("severity")->as_string() == "error";
    }
    EXPECT_EQ(rc, c.problems == 0 ? 0 : error ? 1 : 3);

    std::string info = ReadFile(vol + "/info");
    EXPECT_EQ(testutil::FindRawControl(info), "") << core::EscapeOneLine(info);
    std::string backing = ReadFile(vol + "/backing");
    EXPECT_EQ(testutil::CountLines(backing), 1) << core::EscapeOneLine(backing);
    EXPECT_LE(testutil::CountLines(ReadFile(vol + "/backing_format")), 1);

    EXPECT_EQ(int(Entries(vol + "/chain").size()), c.elements);
    for (int i = 0; i < c.elements; ++i) {
      std::string element = vol + "/chain/" + std::to_string(i);
      for (const char* f : {"path", "backing", "backing_format", "format"}) {
        std::string v = ReadFile(element + "/" + f);
        EXPECT_LE(testutil::CountLines(v), 1) << f << ": " << core::EscapeOneLine(v);
        for (size_t k = 0; k + 1 < v.size(); ++k) {
          unsigned char ch = static_cast<unsigned char>(v[k]);
          EXPECT_TRUE(ch >= 0x20 && ch != 0x7f) << f << ": " << core::EscapeOneLine(v);
        }
      }
    }
  }
}

TEST_F(MountHostileOutputTest, EveryVolumeOfThePoolAndThePoolItselfStayValid) {
  ASSERT_TRUE(MountPool());
  std::string pool_xml = ReadFile(M("p/.pool.xml"));
  EXPECT_EQ(XmlComplaint(pool_xml, "storagepool.rng"), "") << pool_xml;
  // The hostile backing files whose names are printable (invalid UTF-8,
  // noncharacters) are volumes too; those with control characters are left
  // out, with the reason in the log.
  std::vector<std::string> volumes = Entries(M("p"));
  EXPECT_GT(volumes.size(), cases_.size());
  for (const std::string& name : volumes) {
    if (name == ".pool.xml" || name == ".tree") continue;
    SCOPED_TRACE(core::EscapeOneLine(name));
    EXPECT_EQ(name.find_first_of("\n\r\x01\x1b"), std::string::npos);
    const std::string vol = M("p/" + name);
    std::string json = ReadFile(vol + "/info.json");
    EXPECT_EQ(StrictJsonComplaint(json), "") << json;
    EXPECT_EQ(XmlComplaint(ReadFile(vol + "/volume.xml"), "storagevol.rng"), "");
    EXPECT_EQ(XmlComplaint(WrapDisk(ReadFile(vol + "/disk.xml")), "domain.rng"), "");
    EXPECT_EQ(testutil::FindRawControl(ReadFile(vol + "/problems")), "");
    EXPECT_EQ(testutil::FindRawControl(ReadFile(vol + "/info")), "");
  }
  // The pictures of the same pool: escaped text, DOT that dot renders.
  EXPECT_EQ(testutil::FindRawControl(ReadFile(M("p/.tree"))), "");
  std::string dot_file = tmp_.Sub("hostile.dot");
  std::ofstream(dot_file) << Chainctl({"tree", "--dot", "p"});
  testutil::RunResult svg = testutil::Run({"dot", "-Tsvg", "-o", tmp_.Sub("hostile.svg"), dot_file});
  EXPECT_EQ(svg.exit_code, 0) << svg.err;
  EXPECT_EQ(svg.err, "");
  // The log names left-out entries and problems with escaped values only:
  // every line is an event (a timestamp first), none is forged.
  std::string log = Log();
  EXPECT_EQ(testutil::FindRawControl(log), "") << core::EscapeOneLine(log);
  size_t start = 0;
  int events = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    ASSERT_NE(end, std::string::npos);
    EXPECT_EQ(log.compare(start, 2, "20"), 0)
        << core::EscapeOneLine(log.substr(start, end - start));
    ++events;
    start = end + 1;
  }
  EXPECT_GT(events, 0);
  EXPECT_NE(log.find("c01-ba"), std::string::npos) << core::EscapeOneLine(log);
}

TEST(EventLogEscaping, EscapesControlCharactersInEveryValueInsteadOfDroppingThem) {
  fs::EventLog log;
  log.Add("op\x1b[2J", "/p/a\rb\n1970-01-01T00:00:00.000Z forged - ok", "E\x01",
          "why\r\nnot \xff, \xc2\x9b"
          "31m");
  std::string text = log.Render();
  EXPECT_EQ(testutil::CountLines(text), 1) << core::EscapeOneLine(text);
  EXPECT_EQ(testutil::FindRawControl(text), "") << core::EscapeOneLine(text);
  EXPECT_NE(text.find(" op\\x1b[2J /p/a\\rb\\n1970-01-01T00:00:00.000Z forged - ok E\\x01 "
                      "why\\r\\nnot \\xff, \\xc2\\x9b31m\n"),
            std::string::npos)
      << core::EscapeOneLine(text);
  // Reasons built from escaped tokens keep their single backslashes.
  log.Add("open", "/p/v", "EIO", "image '" + core::ShortToken("a\nb") + "'");
  EXPECT_NE(log.Render().find(" open /p/v EIO image 'a\\nb'\n"), std::string::npos);
}

}  // namespace
}  // namespace chainfs::mounttest
