// DESIGN section 3, Access: through the mount a user sees only what they
// could read directly. Needs root (to mount with allow_other and to switch
// to an unprivileged user with setpriv); skipped otherwise.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

class AccessTest : public MountTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for allow_other and setpriv";
    MountTest::SetUp();
  }
  // Runs `cat FILE` as uid/gid 65534 (nobody) with the given groups option.
  testutil::RunResult CatAsNobody(const std::string& file,
                                  const std::string& groups = "--clear-groups") {
    return testutil::Run({"setpriv", "--reuid=65534", "--regid=65534", groups, "cat", file});
  }
};

TEST_F(AccessTest, UnreadableImageIsUnreadableThroughTheMount) {
  QemuImgCreate({"-f", "qcow2", P("secret.qcow2"), "1M"});
  QemuImgCreate({"-f", "raw", P("public.raw"), "1M"});
  ASSERT_EQ(::chmod(P("secret.qcow2").c_str(), 0600), 0);
  ASSERT_EQ(::chmod(P("public.raw").c_str(), 0644), 0);
  ASSERT_TRUE(MountPool({"-o", "allow_other"}));

  testutil::RunResult denied = CatAsNobody(M("p/secret.qcow2/format"));
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_NE(denied.err.find("Permission denied"), std::string::npos) << denied.err;
  EXPECT_NE(CatAsNobody(M("p/secret.qcow2/info")).exit_code, 0);

  testutil::RunResult allowed = CatAsNobody(M("p/public.raw/format"));
  EXPECT_EQ(allowed.exit_code, 0) << allowed.err;
  EXPECT_EQ(allowed.out, "raw\n");
  EXPECT_EQ(CatAsNobody(M("p/public.raw/info")).exit_code, 0);

  // Owner and mode follow the image: files 0444 & the image's read bits.
  struct stat st {};
  ASSERT_EQ(::stat(M("p/secret.qcow2/format").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0400u);
  ASSERT_EQ(::stat(M("p/secret.qcow2").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0500u);
  ASSERT_EQ(::stat(M("p/public.raw/info").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  // root still reads everything.
  EXPECT_EQ(ReadFile(M("p/secret.qcow2/format")), "qcow2\n");
}

TEST_F(AccessTest, ChainDocumentsNeedEveryElementReadable) {
  QemuImgCreate({"-f", "raw", P("hidden.raw"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-b", "hidden.raw", "-F", "raw", P("visible.qcow2")});
  ASSERT_EQ(::chmod(P("hidden.raw").c_str(), 0600), 0);
  ASSERT_EQ(::chmod(P("visible.qcow2").c_str(), 0644), 0);
  ASSERT_TRUE(MountPool({"-o", "allow_other"}));
  // root reads everything first: the kernel then holds every page, and
  // serves later reads without asking the daemon.
  for (const char* f : {"backing", "info", "info.json", "disk.xml", "volume.xml", "problems",
                        "chain/0/format", "chain/1/format", "chain/1/capacity"}) {
    ReadFile(M(std::string("p/visible.qcow2/") + f));
  }
  // The overlay's own header is readable...
  testutil::RunResult own = CatAsNobody(M("p/visible.qcow2/backing"));
  EXPECT_EQ(own.exit_code, 0) << own.err;
  EXPECT_EQ(own.out, "hidden.raw\n");
  EXPECT_EQ(CatAsNobody(M("p/visible.qcow2/chain/0/format")).exit_code, 0);
  // ...but nothing drawn from the unreadable base is.
  for (const char* f : {"info", "info.json", "disk.xml", "volume.xml", "problems", "chain/1/format",
                        "chain/1/capacity"}) {
    testutil::RunResult r = CatAsNobody(M(std::string("p/visible.qcow2/") + f));
    EXPECT_NE(r.exit_code, 0) << f;
    EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << f << ": " << r.err;
  }
  testutil::RunResult link = testutil::Run({"setpriv", "--reuid=65534", "--regid=65534",
                                            "--clear-groups", "readlink",
                                            M("p/visible.qcow2/chain/1/volume")});
  EXPECT_NE(link.exit_code, 0);
  // The kernel enforces this from the modes: only the users who can read
  // every image a file draws on keep its read bits.
  EXPECT_EQ(testutil::Run({"stat", "-c", "%a", M("p/visible.qcow2/format")}).out, "444\n");
  EXPECT_EQ(testutil::Run({"stat", "-c", "%a", M("p/visible.qcow2/info")}).out, "400\n");
  EXPECT_EQ(testutil::Run({"stat", "-c", "%a", M("p/visible.qcow2/chain/1/format")}).out, "400\n");
}

TEST_F(AccessTest, SupplementaryGroupsGrantGroupReadableImages) {
  QemuImgCreate({"-f", "raw", P("group.raw"), "1M"});
  ASSERT_EQ(::chown(P("group.raw").c_str(), 0, 4242), 0);
  ASSERT_EQ(::chmod(P("group.raw").c_str(), 0640), 0);
  ASSERT_TRUE(MountPool({"-o", "allow_other"}));
  EXPECT_NE(CatAsNobody(M("p/group.raw/info")).exit_code, 0);
  testutil::RunResult in_group = CatAsNobody(M("p/group.raw/info"), "--groups=4242");
  EXPECT_EQ(in_group.exit_code, 0) << in_group.err;
  EXPECT_NE(in_group.out.find("file format: raw"), std::string::npos) << in_group.out;
}

}  // namespace
}  // namespace chainfs::mounttest
