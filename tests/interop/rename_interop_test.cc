// core/write/rename and core/write/remove against images made by qemu-img:
// the backing strings each rename writes (style kept), guest content
// unchanged (qemu-img compare), qemu-img check clean, and the refusals
// (taken name, dependents, in use, unrewritable dependents) changing nothing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <thread>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/write/in_use.h"
#include "core/write/remove.h"
#include "core/write/rename.h"
#include "util/qcow2_craft.h"
#include "util/run.h"
#include "util/qemu_holder.h"

namespace chainfs::core {
namespace {

void Must(const std::vector<std::string>& argv) {
  testutil::RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err;
}

std::string Backing(const std::string& path) {
  ImageInspector inspector;
  auto in = inspector.Inspect(path);
  if (!in.ok() || !(*in)->meta || !(*in)->meta->backing) return "<none>";
  return *(*in)->meta->backing;
}

std::optional<std::string> BackingFormat(const std::string& path) {
  ImageInspector inspector;
  auto in = inspector.Inspect(path);
  if (!in.ok() || !(*in)->meta) return std::nullopt;
  return (*in)->meta->backing_format;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

TEST(RenamePaths, NormalizeDotsResolvesDotsLexically) {
  EXPECT_EQ(NormalizeDots("/a/./b/../c//d/"), "/a/c/d");
  EXPECT_EQ(NormalizeDots("/../x"), "/x");
  EXPECT_EQ(NormalizeDots("a/../../b"), "../b");
  EXPECT_EQ(NormalizeDots("."), ".");
}

TEST(RenamePaths, RelativePathWalksUpAndDown) {
  EXPECT_EQ(RelativePath("/pools/a", "/pools/b/x.qcow2"), "../b/x.qcow2");
  EXPECT_EQ(RelativePath("/pools/a", "/pools/a/x.qcow2"), "x.qcow2");
  EXPECT_EQ(RelativePath("/pools/a/deep", "/other/x"), "../../../other/x");
}

TEST(RenamePaths, RenamedBackingStringKeepsStyle) {
  // Same directory: only the last component changes, spelling kept.
  EXPECT_EQ(*RenamedBackingString("/p/top", "base", "/p/base", "/p/new"), "new");
  EXPECT_EQ(*RenamedBackingString("/p/top", "./base", "/p/base", "/p/new"), "./new");
  EXPECT_EQ(*RenamedBackingString("/q/top", "../p/base", "/p/base", "/p/new"), "../p/new");
  EXPECT_EQ(*RenamedBackingString("/p/top", "/p/base", "/p/base", "/p/new"), "/p/new");
  EXPECT_EQ(*RenamedBackingString("/p/top", "//p/./base", "/p/base", "/p/new"), "//p/./new");
  // Another directory: absolute stays absolute, relative becomes relative.
  EXPECT_EQ(*RenamedBackingString("/p/top", "base", "/p/base", "/q/base"), "../q/base");
  EXPECT_EQ(*RenamedBackingString("/p/top", "/p/base", "/p/base", "/q/base"), "/q/base");
  // A name with ':' must not read as a protocol.
  EXPECT_EQ(*RenamedBackingString("/p/top", "base", "/p/base", "/p/nbd:x"), "./nbd:x");
  // Network strings are never rewritten.
  EXPECT_EQ(RenamedBackingString("/p/top", "nbd://host/x", "/p/base", "/p/new").status().code(),
            Code::kUnsupported);
}

class RenameInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = tmp_.Sub("a");
    b_ = tmp_.Sub("b");
    ref_ = tmp_.Sub("ref");
    ASSERT_EQ(::mkdir(a_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(b_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(ref_.c_str(), 0755), 0);
    Must({"qemu-img", "create", "-q", "-f", "raw", A("base.raw"), "4M"});
    Must({"qemu-io", "-f", "raw", "-c", "write -P 7 0 1M", A("base.raw")});
    Must(
        {"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", A("rel.qcow2")});
    Must({"qemu-io", "-f", "qcow2", "-c", "write -P 8 512k 64k", A("rel.qcow2")});
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-b", A("base.raw"), "-F", "raw",
          A("abs.qcow2")});
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "../a/base.raw", "-F", "raw",
          B("other.qcow2")});
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "rel.qcow2", "-F", "qcow2",
          A("top.qcow2")});
    for (const char* n : {"rel.qcow2", "abs.qcow2", "top.qcow2"}) {
      Must({"qemu-img", "convert", "-O", "raw", A(n), ref_ + "/" + n});
    }
    Must({"qemu-img", "convert", "-O", "raw", B("other.qcow2"), ref_ + "/other.qcow2"});
  }
  std::string A(const std::string& n) const { return a_ + "/" + n; }
  std::string B(const std::string& n) const { return b_ + "/" + n; }
  std::vector<std::string> Candidates() const {
    return {A("base.raw"), A("rel.qcow2"), A("abs.qcow2"), A("top.qcow2"), B("other.qcow2")};
  }
  void ExpectUnchanged(const std::string& image, const std::string& ref_name) {
    testutil::RunResult c = testutil::Run({"qemu-img", "check", image});
    EXPECT_EQ(c.exit_code, 0) << image << c.out;
    testutil::RunResult r = testutil::Run({"qemu-img", "compare", image, ref_ + "/" + ref_name});
    EXPECT_EQ(r.exit_code, 0) << image << r.out << r.err;
  }

  testutil::ScopedTempDir tmp_;
  std::string a_, b_, ref_;
  ImageInspector inspector_;
};

TEST_F(RenameInteropTest, FindsDirectDependentsWhateverTheSpelling) {
  auto deps = FindDependents(inspector_, A("base.raw"), Candidates());
  ASSERT_TRUE(deps.ok());
  std::set<std::string> paths;
  for (const Dependent& d : *deps) paths.insert(d.path);
  EXPECT_EQ(paths, (std::set<std::string>{A("rel.qcow2"), A("abs.qcow2"), B("other.qcow2")}));
  auto users = FindChainUsers(inspector_, A("base.raw"), Candidates());
  ASSERT_TRUE(users.ok());
  EXPECT_EQ(users->size(), 4u);  // the three overlays and top (through rel)
}

TEST_F(RenameInteropTest, RenameRewritesEveryDependentAndKeepsGuestContent) {
  ASSERT_TRUE(RenameImage(inspector_, A("base.raw"), A("moved.raw"), Candidates()).ok());
  EXPECT_FALSE(Exists(A("base.raw")));
  EXPECT_EQ(Backing(A("rel.qcow2")), "moved.raw");
  EXPECT_EQ(Backing(A("abs.qcow2")), A("moved.raw"));
  EXPECT_EQ(Backing(B("other.qcow2")), "../a/moved.raw");
  EXPECT_EQ(BackingFormat(A("rel.qcow2")), "raw");
  EXPECT_EQ(Backing(A("top.qcow2")), "rel.qcow2");
  for (const char* n : {"rel.qcow2", "abs.qcow2", "top.qcow2"}) ExpectUnchanged(A(n), n);
  ExpectUnchanged(B("other.qcow2"), "other.qcow2");
}

TEST_F(RenameInteropTest, MovingAnOverlayToAnotherDirectoryKeepsItsOwnBackingWorking) {
  std::vector<std::string> c = Candidates();
  ASSERT_TRUE(RenameImage(inspector_, A("rel.qcow2"), B("rel.qcow2"), c).ok());
  EXPECT_EQ(Backing(B("rel.qcow2")), "../a/base.raw");
  EXPECT_EQ(Backing(A("top.qcow2")), "../b/rel.qcow2");
  ExpectUnchanged(A("top.qcow2"), "top.qcow2");
  ExpectUnchanged(B("rel.qcow2"), "rel.qcow2");
}

TEST_F(RenameInteropTest, RenameRefusalsChangeNothing) {
  // Taken name.
  EXPECT_EQ(RenameImage(inspector_, A("base.raw"), A("abs.qcow2"), Candidates()).code(),
            Code::kExists);
  // A dependent that is not qcow2 (a crafted qcow header would need rewriting
  // in another format): use a chain reaching base through an outside overlay.
  std::string outside_dir = tmp_.Sub("outside");
  ASSERT_EQ(::mkdir(outside_dir.c_str(), 0755), 0);
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-b", A("base.raw"), "-F", "raw",
        outside_dir + "/hidden.qcow2"});
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-b", outside_dir + "/hidden.qcow2", "-F",
        "qcow2", A("via.qcow2")});
  std::vector<std::string> c = Candidates();
  c.push_back(A("via.qcow2"));
  Status s = RenameImage(inspector_, A("base.raw"), A("moved.raw"), c);
  EXPECT_EQ(s.code(), Code::kBusy) << s.ToString();
  EXPECT_NE(s.message().find("hidden.qcow2"), std::string::npos) << s.message();
  // A json: backing naming the image.
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
        "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"" + A("base.raw") +
            "\"}}",
        A("json.qcow2"), "4M"});
  s = RenameImage(inspector_, A("base.raw"), A("moved.raw"), {A("json.qcow2")});
  EXPECT_EQ(s.code(), Code::kUnsupported) << s.ToString();
  EXPECT_TRUE(Exists(A("base.raw")));
  EXPECT_FALSE(Exists(A("moved.raw")));
  EXPECT_EQ(Backing(A("rel.qcow2")), "base.raw");
}

TEST_F(RenameInteropTest, RemoveRefusesDependentsAndDeletesUnusedImages) {
  Status s = RemoveImage(inspector_, A("base.raw"), Candidates());
  EXPECT_EQ(s.code(), Code::kBusy);
  EXPECT_TRUE(Exists(A("base.raw")));
  s = RemoveImage(inspector_, A("rel.qcow2"), Candidates());
  EXPECT_EQ(s.code(), Code::kBusy);
  EXPECT_NE(s.message().find("top.qcow2"), std::string::npos) << s.message();
  EXPECT_TRUE(RemoveImage(inspector_, A("top.qcow2"), Candidates()).ok());
  EXPECT_FALSE(Exists(A("top.qcow2")));
  EXPECT_EQ(RemoveImage(inspector_, A("top.qcow2"), Candidates()).code(), Code::kNotFound);
}

TEST_F(RenameInteropTest, RenameAndRemoveRefuseImagesInUseByQemu) {
  testutil::QemuHolder holder(A("abs.qcow2"), "qcow2", testutil::QemuHolder::Tool::kStorageDaemon);
  ASSERT_TRUE(holder.holding());
  ASSERT_TRUE(*ImageInUse(A("abs.qcow2")));
  EXPECT_EQ(RemoveImage(inspector_, A("abs.qcow2"), Candidates()).code(), Code::kBusy);
  // base is held too (QEMU locks backing files); so is the dependent abs.
  EXPECT_EQ(RenameImage(inspector_, A("base.raw"), A("moved.raw"), Candidates()).code(),
            Code::kBusy);
  EXPECT_TRUE(Exists(A("abs.qcow2")));
  EXPECT_FALSE(Exists(A("moved.raw")));
  EXPECT_EQ(Backing(A("rel.qcow2")), "base.raw");
}

}  // namespace
}  // namespace chainfs::core
