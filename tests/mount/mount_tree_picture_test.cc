// POOL/.tree and `chainctl tree [--dot]` (issue 15): a pool of 3 bases and
// 12 overlays, one broken, drawn as a text tree that matches the chains,
// and as Graphviz DOT that `dot -Tsvg` renders without a warning.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

class TreePictureTest : public MountTest {
 protected:
  // Makes the forest: base -> overlays, each overlay's backing relative.
  void MakeForest() {
    QemuImgCreate({"-f", "raw", P("a.raw"), "1M"});
    QemuImgCreate({"-f", "qcow2", P("b.qcow2"), "1M"});
    QemuImgCreate({"-f", "qcow2", P("c.qcow2"), "1M"});
    const std::vector<std::pair<std::string, std::string>> overlays = {
        {"a1.qcow2", "a.raw"},     {"a2.qcow2", "a.raw"},     {"a1x.qcow2", "a1.qcow2"},
        {"b1.qcow2", "b.qcow2"},   {"b2.qcow2", "b.qcow2"},   {"b3.qcow2", "b.qcow2"},
        {"b1x.qcow2", "b1.qcow2"}, {"b1y.qcow2", "b1.qcow2"}, {"c1.qcow2", "c.qcow2"},
        {"c1x.qcow2", "c1.qcow2"}, {"c1xx.qcow2", "c1x.qcow2"}};
    for (const auto& [name, backing] : overlays) {
      std::string fmt = backing.find(".raw") != std::string::npos ? "raw" : "qcow2";
      QemuImgCreate({"-f", "qcow2", "-b", backing, "-F", fmt, P(name)});
    }
    // The broken one: its backing is gone.
    QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("orphan.qcow2"), "1M"});
  }

  // "NAME  FORMAT, 1 MiB virtual, SIZE allocated", SIZE as qemu-img info
  // prints the disk size.
  std::string Line(const std::string& name) {
    std::string info = MustRun({"qemu-img", "info", "-U", P(name)}).out;
    size_t at = info.find("disk size: ");
    EXPECT_NE(at, std::string::npos) << info;
    std::string size = info.substr(at + 11, info.find('\n', at) - at - 11);
    std::string format = name.find(".raw") != std::string::npos ? "raw" : "qcow2";
    return name + "  " + format + ", 1 MiB virtual, " + size + " allocated";
  }
};

TEST_F(TreePictureTest, TheTextTreeMatchesTheChainsAndChainctl) {
  MakeForest();
  ASSERT_TRUE(MountPool());
  const std::string expected =
      Line("a.raw") + "\n" +
      "├── " + Line("a1.qcow2") + "\n" +
      "│   └── " + Line("a1x.qcow2") + "\n" +
      "└── " + Line("a2.qcow2") + "\n" +
      Line("b.qcow2") + "\n" +
      "├── " + Line("b1.qcow2") + "\n" +
      "│   ├── " + Line("b1x.qcow2") + "\n" +
      "│   └── " + Line("b1y.qcow2") + "\n" +
      "├── " + Line("b2.qcow2") + "\n" +
      "└── " + Line("b3.qcow2") + "\n" +
      Line("c.qcow2") + "\n" +
      "└── " + Line("c1.qcow2") + "\n" +
      "    └── " + Line("c1x.qcow2") + "\n" +
      "        └── " + Line("c1xx.qcow2") + "\n" +
      P("gone.qcow2") + "  (missing)\n" +
      "└── " + Line("orphan.qcow2") + "  ! missing-file\n";
  EXPECT_EQ(ReadFile(M("p/.tree")), expected);
  EXPECT_EQ(Chainctl({"tree", "p"}), expected);
  EXPECT_EQ(Chainctl({"tree"}), "[p]\n" + expected);
  // A change outside the mount shows at the next read: the orphan gets a backing.
  MustRun({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "c1xx.qcow2",
           P("orphan.qcow2")});
  std::string now = ReadFile(M("p/.tree"));
  EXPECT_NE(now.find("        └── " + Line("c1xx.qcow2") + "\n            └── " +
                     Line("orphan.qcow2") + "\n"),
            std::string::npos)
      << now;
  EXPECT_EQ(now.find("(missing)"), std::string::npos) << now;
}

TEST_F(TreePictureTest, DotRendersWithoutWarningsWithProblemsInRed) {
  MakeForest();
  // Names DOT must quote: a double quote, a backslash, a space, UTF-8.
  QemuImgCreate({"-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", P("we\"ird\\ näme.qcow2")});
  ASSERT_TRUE(MountPool());
  std::string dot = Chainctl({"tree", "--dot"});
  std::string dot_file = tmp_.Sub("forest.dot");
  std::ofstream(dot_file) << dot;
  testutil::RunResult svg = testutil::Run({"dot", "-Tsvg", dot_file});
  EXPECT_EQ(svg.exit_code, 0) << svg.err << dot;
  EXPECT_EQ(svg.err, "") << dot;
  // One node per volume and one for the missing backing; one edge per overlay.
  auto count = [](const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count(svg.out, "class=\"node\""), 17u) << svg.out;
  EXPECT_EQ(count(svg.out, "class=\"edge\""), 13u) << svg.out;
  EXPECT_EQ(count(svg.out, "class=\"cluster\""), 1u);
  // The broken overlay and the missing backing, in red; nothing else.
  EXPECT_EQ(count(dot, ", color=red"), 2u) << dot;
  EXPECT_NE(dot.find("\"p/orphan.qcow2\" [label=\"orphan.qcow2\\nqcow2, 1 MiB virtual, "),
            std::string::npos)
      << dot;
  EXPECT_NE(dot.find("\"p/we\\\"ird\\\\ näme.qcow2\" -> \"p/b.qcow2\";"), std::string::npos) << dot;
  // The picture in the README is this one (CHAINFS_TREE_SVG names where to keep it).
  if (const char* keep = std::getenv("CHAINFS_TREE_SVG")) std::ofstream(keep) << svg.out;
}

}  // namespace
}  // namespace chainfs::mounttest
