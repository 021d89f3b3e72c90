// The man pages render without a single groff warning, and man(1) reads them.
#include <gtest/gtest.h>

#include "util/run.h"

namespace chainfs {
namespace {

class ManPage : public ::testing::TestWithParam<const char*> {};

TEST_P(ManPage, RendersWithoutGroffWarnings) {
  std::string page = std::string(CHAINFS_SOURCE_DIR) + "/man/" + GetParam();
  testutil::RunResult r = testutil::Run({"groff", "-man", "-ww", "-z", page});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
}

TEST_P(ManPage, ManReadsItAndShowsEverySection) {
  std::string page = std::string(CHAINFS_SOURCE_DIR) + "/man/" + GetParam();
  testutil::RunResult r =
      testutil::Run({"env", "MANWIDTH=80", "man", "-l", "-P", "cat", page});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  for (const char* section : {"NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"}) {
    EXPECT_NE(r.out.find(section), std::string::npos) << section;
  }
}

INSTANTIATE_TEST_SUITE_P(Pages, ManPage, ::testing::Values("chainctl.1", "chainfs.1"),
                         [](const auto& info) {
                           std::string n = info.param;
                           return n.substr(0, n.find('.'));
                         });

}  // namespace
}  // namespace chainfs
