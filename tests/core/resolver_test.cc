// The resolver against real images made by qemu-img at test time.
#include "core/chain/resolver.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "core/chain/trust.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::Run;
using testutil::ScopedTempDir;

void QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  testutil::RunResult r = Run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

class ResolverTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }
  Chain Resolve(const std::string& name, ResolveOptions opts = {}) {
    return ResolveChain(inspector_, P(name), opts);
  }
  ScopedTempDir dir_;
  ImageInspector inspector_;
};

TEST_F(ResolverTest, WalksQcow2OverQcow2OverRaw) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "4M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", P("mid.qcow2"), "-F", "qcow2", P("top.qcow2")});
  Chain c = Resolve("top.qcow2");
  EXPECT_TRUE(c.healthy());
  EXPECT_TRUE(c.complete);
  ASSERT_EQ(c.elements.size(), 3u);
  EXPECT_EQ(c.elements[0].format, "qcow2");
  EXPECT_EQ(c.elements[0].format_source, FormatSource::kProbed);
  EXPECT_EQ(c.elements[1].path, P("mid.qcow2"));
  EXPECT_EQ(c.elements[1].ref->kind, BackingKind::kAbsolute);
  EXPECT_EQ(c.elements[1].format_source, FormatSource::kMetadata);
  EXPECT_EQ(c.elements[2].path, P("base.raw"));
  EXPECT_EQ(c.elements[2].backing_string, "base.raw");
  EXPECT_EQ(c.elements[2].ref->kind, BackingKind::kRelative);
  EXPECT_EQ(c.elements[2].format, "raw");
  ASSERT_TRUE(c.elements[2].meta);
  EXPECT_EQ(c.elements[2].meta->virtual_size, 4u << 20);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.elements[size_t(i)].index, i);
}

TEST_F(ResolverTest, RecordedRawFormatIsNotReprobedEvenIfBytesLookLikeQcow2) {
  // A "raw" backing whose guest wrote a qcow2 header into it: metadata wins.
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", P("evil.raw"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", P("evil.raw"), "-F", "raw", P("top.qcow2")});
  Chain c = Resolve("top.qcow2");
  // Issue 9: the disagreement is shown (format-mismatch), never acted on.
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_NE(c.problems[0].message.find("format-mismatch"), std::string::npos);
  EXPECT_TRUE(c.complete);
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_EQ(c.elements[1].format, "raw");
  EXPECT_FALSE(c.elements[1].meta->backing.has_value());
}

TEST_F(ResolverTest, MissingBackingFormatOverImageWithBackingStopsWithLibvirtMessage) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  ResolveOptions opts;
  opts.locate = [&](const std::string& path) -> std::optional<std::string> {
    if (path == P("top.qcow2")) return std::string("pool/top.qcow2");
    return std::nullopt;
  };
  Chain c = Resolve("top.qcow2", opts);
  ASSERT_EQ(c.problems.size(), 1u);
  const Problem& p = c.problems[0];
  EXPECT_EQ(p.kind, ProblemKind::kMissingBackingFormat);
  EXPECT_EQ(p.index, 1);
  EXPECT_EQ(p.message, "format of backing image 'mid.qcow2' of image '" + P("top.qcow2") +
                           "' was not specified in the image metadata");
  EXPECT_NE(p.fix.find("echo qcow2 > pool/top.qcow2/backing_format"), std::string::npos) << p.fix;
  EXPECT_NE(p.fix.find("qemu-img rebase -u -f qcow2 -F qcow2 -b mid.qcow2 " + P("top.qcow2")),
            std::string::npos)
      << p.fix;
  EXPECT_FALSE(c.complete);
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_EQ(c.elements[1].meta, nullptr);  // never parsed as a guess
  EXPECT_EQ(c.elements[1].format, "");
}

TEST_F(ResolverTest, MissingBackingFormatOverStandaloneImageIsProbedWithoutProblem) {
  QemuImg({"create", "-q", "-f", "qcow2", P("base.qcow2"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", P("top.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  Chain c = Resolve("top.qcow2");
  EXPECT_TRUE(c.healthy()) << c.problems[0].message;
  EXPECT_TRUE(c.complete);
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_EQ(c.elements[1].format, "qcow2");
  EXPECT_EQ(c.elements[1].format_source, FormatSource::kProbed);
  EXPECT_FALSE(c.elements[0].meta->backing_format.has_value());
}

TEST_F(ResolverTest, MissingBackingFileIsNamedWithFix) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "gone.raw", "-F", "raw", P("top.qcow2"), "1M"});
  Chain c = Resolve("top.qcow2");
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kMissingBackingFile);
  EXPECT_EQ(c.problems[0].index, 1);
  EXPECT_EQ(c.problems[0].message, "Cannot access backing file '" + P("gone.raw") +
                                       "' of storage file '" + P("top.qcow2") + "'");
  EXPECT_NE(c.problems[0].fix.find("qemu-img rebase -u -f qcow2 -F raw -b NEW-BACKING"),
            std::string::npos);
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_EQ(c.elements[1].path, P("gone.raw"));
  EXPECT_FALSE(c.elements[1].stat.has_value());
}

TEST_F(ResolverTest, TwoImageLoopIsNamedWithBothPaths) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", P("a.qcow2"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", P("b.qcow2"), "1M"});
  Chain c = Resolve("a.qcow2");
  ASSERT_EQ(c.problems.size(), 1u);
  const Problem& p = c.problems[0];
  EXPECT_EQ(p.kind, ProblemKind::kLoop);
  EXPECT_NE(p.message.find(P("a.qcow2")), std::string::npos) << p.message;
  EXPECT_NE(p.message.find(P("b.qcow2")), std::string::npos) << p.message;
  EXPECT_FALSE(c.complete);
  EXPECT_EQ(c.elements.size(), 3u);
}

TEST_F(ResolverTest, SelfLoopThroughSymlinkIsDetectedByInode) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "alias.qcow2", "-F", "qcow2", P("a.qcow2"), "1M"});
  ASSERT_EQ(::symlink(P("a.qcow2").c_str(), P("alias.qcow2").c_str()), 0);
  Chain c = Resolve("a.qcow2");
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kLoop);
}

TEST_F(ResolverTest, ChainOf201ImagesIsRefusedWithDepthProblem) {
  QemuImg({"create", "-q", "-f", "qcow2", P("0.qcow2"), "64K"});
  for (int i = 1; i <= 200; ++i) {
    QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", std::to_string(i - 1) + ".qcow2", "-F",
             "qcow2", P(std::to_string(i) + ".qcow2"), "64K"});
  }
  Chain c = Resolve("200.qcow2");  // 201 images
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kTooDeep);
  EXPECT_EQ(c.problems[0].index, 200);
  EXPECT_EQ(c.elements.size(), 200u);
  EXPECT_FALSE(c.complete);
  Chain ok = Resolve("199.qcow2");  // exactly 200 images is allowed
  EXPECT_TRUE(ok.healthy());
  EXPECT_EQ(ok.elements.size(), 200u);
}

TEST_F(ResolverTest, NetworkBackingIsShownNotOpened) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "nbd://127.0.0.1:1/exp", "-F", "raw",
           P("top.qcow2"), "1M"});
  Chain c = Resolve("top.qcow2");
  EXPECT_TRUE(c.healthy());
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_TRUE(c.elements[1].network);
  EXPECT_EQ(c.elements[1].format, "raw");
  EXPECT_EQ(c.elements[1].path, "nbd://127.0.0.1:1/exp");
  EXPECT_EQ(c.elements[1].ref->network->protocol, "nbd");
  EXPECT_FALSE(c.elements[1].stat.has_value());
  EXPECT_FALSE(c.complete);
}

TEST_F(ResolverTest, UnknownRecordedFormatIsAProblem) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("top.qcow2")});
  ASSERT_TRUE(testutil::SetBackingString(P("top.qcow2"), "base.raw", std::string("nosuchfmt")).ok());
  Chain c = Resolve("top.qcow2");
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kUnknownFormat);
  EXPECT_NE(c.problems[0].message.find("nosuchfmt"), std::string::npos);
}

TEST_F(ResolverTest, TopThatIsAFifoIsAProblemNotAHang) {
  ASSERT_EQ(::mkfifo(P("fifo").c_str(), 0600), 0);
  Chain c = Resolve("fifo");
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kUnsupported);
}

TEST_F(ResolverTest, BackingThatIsADirectoryIsAProblem) {
  ASSERT_EQ(::mkdir(P("dir").c_str(), 0700), 0);
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "dir", "-F", "raw", P("top.qcow2"), "1M"});
  Chain c = Resolve("top.qcow2");
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kUnsupported);
}

TEST_F(ResolverTest, CorruptTopHeaderIsAProblem) {
  std::vector<uint8_t> bytes = testutil::CraftQcow2Header({});
  bytes[23] = 40;  // cluster_bits far out of range
  std::ofstream(P("bad.qcow2"), std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  Chain c = Resolve("bad.qcow2");
  ASSERT_FALSE(c.problems.empty());
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kCorruptHeader);
  EXPECT_EQ(c.elements.size(), 1u);
}

TEST_F(ResolverTest, InspectorCachesByIdentityAndSeesChanges) {
  QemuImg({"create", "-q", "-f", "qcow2", P("a.qcow2"), "1M"});
  Resolve("a.qcow2");
  InspectorStats s1 = inspector_.stats();
  Resolve("a.qcow2");
  InspectorStats s2 = inspector_.stats();
  EXPECT_EQ(s2.misses, s1.misses);
  EXPECT_GT(s2.hits, s1.hits);
  QemuImg({"resize", "-q", P("a.qcow2"), "2M"});
  Chain c = Resolve("a.qcow2");
  EXPECT_EQ(c.elements[0].meta->virtual_size, 2u << 20);
  EXPECT_GT(inspector_.stats().misses, s2.misses);
}

TEST_F(ResolverTest, TrustAcceptsRawAndStandaloneImages) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", P("solo.qcow2"), "1M"});
  TrustContext ctx;
  Result<std::string> raw = TrustedBackingFormat(inspector_, P("base.raw"), ctx);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(*raw, "raw");
  Result<std::string> solo = TrustedBackingFormat(inspector_, P("solo.qcow2"), ctx);
  ASSERT_TRUE(solo.ok());
  EXPECT_EQ(*solo, "qcow2");
  Result<std::string> gone = TrustedBackingFormat(inspector_, P("gone"), ctx);
  EXPECT_EQ(gone.status().code(), Code::kNotFound);
}

TEST_F(ResolverTest, TrustPrefersFormatRecordedByAnotherImage) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", P("img"), "1M"});
  TrustContext ctx;
  ctx.recorded_format = [&](const std::string& p) -> std::optional<std::string> {
    if (p == P("img")) return std::string("raw");
    return std::nullopt;
  };
  Result<std::string> f = TrustedBackingFormat(inspector_, P("img"), ctx);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f, "raw");
}

TEST_F(ResolverTest, TrustRefusesProbedImageWithBackingOutsidePools) {
  // A "raw" volume whose content carries a qcow2 header pointing outside the pools.
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", P("evil"), "1M"});
  TrustContext ctx;
  ctx.in_pool = [&](const std::string& p) { return p.rfind(dir_.path(), 0) == 0; };
  Result<std::string> f = TrustedBackingFormat(inspector_, P("evil"), ctx);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Code::kPermissionDenied);
  EXPECT_NE(f.status().message().find("chainctl create -F"), std::string::npos);
}

TEST_F(ResolverTest, TrustAcceptsProbedImageWhoseDeclaredChainIsInPools) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
  TrustContext ctx;
  ctx.in_pool = [&](const std::string& p) { return p.rfind(dir_.path(), 0) == 0; };
  Result<std::string> f = TrustedBackingFormat(inspector_, P("mid.qcow2"), ctx);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*f, "qcow2");
  TrustContext no_pools;
  EXPECT_FALSE(TrustedBackingFormat(inspector_, P("mid.qcow2"), no_pools).ok());
}

}  // namespace
}  // namespace chainfs::core
