// format-mismatch through the mount (issue 9): `echo raw > VOL/backing_format`
// over a qcow2 backing is accepted (an admin may record raw for a guest's raw
// disk holding a qcow2 header), the chain keeps using raw (chainctl cat
// gives what qemu-img convert gives), and problems, chainctl check and info
// say so; recording the probed format clears it.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

TEST_F(MountTest, RawRecordedOverQcow2BackingIsAcceptedAndShownAsFormatMismatch) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M("p/top.qcow2/problems")), "");
  ASSERT_EQ(WriteValue(M("p/top.qcow2/backing_format"), "raw\n"), 0);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing_format")), "raw\n");
  EXPECT_EQ(InfoString(QemuInfo(P("top.qcow2")), "backing-filename-format"), "raw");

  std::string problems = ReadFile(M("p/top.qcow2/problems"));
  EXPECT_EQ(std::count(problems.begin(), problems.end(), '\n'), 1) << problems;
  EXPECT_EQ(problems.rfind("1: format-mismatch: image '" + P("top.qcow2") +
                               "' records backing format raw for '" + P("mid.qcow2") +
                               "', but the backing file's header is qcow2",
                           0),
            0u)
      << problems;
  EXPECT_NE(problems.find("a guest sees the qcow2 file's own bytes"), std::string::npos);
  EXPECT_NE(
      problems.find("-- fix: if it is a qcow2 image: echo qcow2 > p/top.qcow2/backing_format"),
      std::string::npos)
      << problems;
  EXPECT_NE(problems.find("keep raw"), std::string::npos) << problems;
  EXPECT_NE(ReadFile(M("p/top.qcow2/info")).find("Problems:\n" + problems), std::string::npos);
  int rc = -1;
  EXPECT_EQ(Chainctl({"check", P("top.qcow2")}, &rc), problems);
  EXPECT_EQ(rc, 3);  // only a warning: the chain is used as recorded

  // The recorded format is the one in use: the chain ends at mid read as
  // raw, and the guest sees mid's qcow2 bytes, exactly as qemu would.
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/1/format")), "raw\n");
  EXPECT_EQ(MustRun({"ls", M("p/top.qcow2/chain")}).out, "0\n1\n");
  MustRun({"qemu-img", "convert", "-O", "raw", P("top.qcow2"), tmp_.Sub("guest.raw")});
  std::string guest = Chainctl({"cat", P("top.qcow2")});
  EXPECT_TRUE(guest == ReadFile(tmp_.Sub("guest.raw"))) << "chainctl cat differs from qemu-img";

  // The documented fix clears the problem.
  ASSERT_EQ(WriteValue(M("p/top.qcow2/backing_format"), "qcow2\n"), 0);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/problems")), "");
  EXPECT_EQ(Chainctl({"check", P("top.qcow2")}), "");
}

}  // namespace
}  // namespace chainfs::mounttest
