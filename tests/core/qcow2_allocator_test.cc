// Qcow2Writer (cluster allocation) checked against the real qemu tools:
// after every write, `qemu-img check` finds neither errors nor leaks and the
// guest content (`qemu-img convert -O raw`) equals a model kept in memory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "core/format/qcow2/allocator.h"
#include "util/qemu_check.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::RunResult;
using testutil::ScopedTempDir;

void MustRunCmd(const std::vector<std::string>& argv) {
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err
                            << r.out;
}


std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return std::vector<uint8_t>(s.begin(), s.end());
}

// Returns the guest content of `path` as qemu sees it (its whole chain).
std::vector<uint8_t> GuestBytes(const std::string& path, const std::string& scratch) {
  RunResult r = testutil::Run({"qemu-img", "convert", "-O", "raw", path, scratch});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return ReadFileBytes(scratch);
}

std::string CreateImage(const ScopedTempDir& dir, const std::string& name, uint64_t size,
                        const std::string& opts) {
  const std::string path = dir.Sub(name);
  MustRunCmd({"qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, path, std::to_string(size)});
  return path;
}

// Fills `n` bytes with a pattern that differs per cluster and per call.
std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; i += 4) {
    uint32_t x = rng();
    std::memcpy(v.data() + i, &x, std::min<size_t>(4, n - i));
  }
  return v;
}

std::unique_ptr<Qcow2Writer> OpenWriter(const std::string& path, Qcow2WriterOptions opts = {}) {
  Result<std::unique_ptr<Qcow2Writer>> w = Qcow2Writer::Open(path, opts);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return w.ok() ? std::move(*w) : nullptr;
}

struct AllocCase {
  std::string compat;
  uint64_t cluster;
  std::string extra;  // more -o options
};

class AllocatorTest : public ::testing::TestWithParam<AllocCase> {};

// Writes data at scattered clusters of an empty image, with small batches so
// several flushes happen, and checks content and consistency.
TEST_P(AllocatorTest, WritesScatteredClustersConsistently) {
  const AllocCase& c = GetParam();
  ScopedTempDir dir;
  const uint64_t size = 16ull << 20;
  std::string opts = fmt::format("compat={},cluster_size={}", c.compat, c.cluster);
  if (!c.extra.empty()) opts += "," + c.extra;
  const std::string img = CreateImage(dir, "a.qcow2", size, opts);
  std::vector<uint8_t> model(size, 0);
  Qcow2WriterOptions wo;
  wo.max_pending_bytes = 2 * c.cluster;  // many flushes
  auto w = OpenWriter(img, wo);
  ASSERT_TRUE(w);
  std::mt19937 rng(42);
  const uint64_t clusters = size / c.cluster;
  for (int i = 0; i < 60; ++i) {
    const uint64_t first = rng() % clusters;
    const uint64_t n = std::min<uint64_t>(1 + rng() % 5, clusters - first);
    std::vector<uint8_t> data = Pattern(n * c.cluster, uint32_t(i + 1));
    ASSERT_TRUE(w->WriteClusters(first * c.cluster, data).ok());
    std::memcpy(model.data() + first * c.cluster, data.data(), data.size());
  }
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_GT(w->stats().flushes, 1u);
  w.reset();
  EXPECT_TRUE(testutil::QemuImgCheckClean(img));
  EXPECT_TRUE(GuestBytes(img, dir.Sub("out.raw")) == model);
}

INSTANTIATE_TEST_SUITE_P(Kinds, AllocatorTest,
                         ::testing::Values(AllocCase{"1.1", 65536, ""},
                                           AllocCase{"0.10", 65536, ""}, AllocCase{"1.1", 4096, ""},
                                           AllocCase{"0.10", 512, ""},
                                           AllocCase{"1.1", 2u << 20, ""},
                                           AllocCase{"1.1", 65536, "lazy_refcounts=on"},
                                           AllocCase{"1.1", 4096, "refcount_bits=1"},
                                           AllocCase{"1.1", 4096, "refcount_bits=8"},
                                           AllocCase{"1.1", 4096, "refcount_bits=64"}),
                         [](const ::testing::TestParamInfo<AllocCase>& info) {
                           std::string n = (info.param.compat == "1.1" ? "v3_" : "v2_") +
                                           std::to_string(info.param.cluster) +
                                           (info.param.extra.empty() ? "" : "_" + info.param.extra);
                           for (char& ch : n) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// Clusters next to qemu-written ones reuse the existing L2 table; a cluster
// qemu allocated is overwritten in place.
TEST(Qcow2Allocator, UsesExistingL2TableAndOverwritesInPlace) {
  ScopedTempDir dir;
  const uint64_t size = 8ull << 20;
  const std::string img = CreateImage(dir, "a.qcow2", size, "compat=1.1,cluster_size=65536");
  MustRunCmd({"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 128k", img});
  const uint64_t file_before = ReadFileBytes(img).size();
  std::vector<uint8_t> model = GuestBytes(img, dir.Sub("o.raw"));
  auto w = OpenWriter(img);
  ASSERT_TRUE(w);
  std::vector<uint8_t> a = Pattern(65536, 7), b = Pattern(3 * 65536, 8);
  ASSERT_TRUE(w->WriteClusters(65536, a).ok());      // qemu's second cluster, in place
  ASSERT_TRUE(w->WriteClusters(5 * 65536, b).ok());  // new, same L2 table
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_EQ(w->stats().l2_tables, 0u);
  EXPECT_EQ(w->stats().data_clusters, 4u);
  w.reset();
  std::memcpy(model.data() + 65536, a.data(), a.size());
  std::memcpy(model.data() + 5 * 65536, b.data(), b.size());
  EXPECT_TRUE(testutil::QemuImgCheckClean(img));
  EXPECT_TRUE(GuestBytes(img, dir.Sub("o.raw")) == model);
  // Exactly three new clusters were appended (no new L2 table, no refblock).
  EXPECT_EQ(ReadFileBytes(img).size(), file_before + 3 * 65536);
}

// 512-byte clusters: one refcount block covers 128 KiB and a one-cluster
// refcount table 8 MiB, so writing 12 MiB crosses many block boundaries and
// makes the refcount table grow (and move).
TEST(Qcow2Allocator, CrossesRefcountBlocksAndGrowsTableWith512ByteClusters) {
  ScopedTempDir dir;
  const uint64_t size = 24ull << 20;
  const std::string img = CreateImage(dir, "a.qcow2", size, "compat=1.1,cluster_size=512");
  MustRunCmd({"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1m 64k", img});
  std::vector<uint8_t> model = GuestBytes(img, dir.Sub("o.raw"));
  Qcow2WriterOptions wo;
  wo.max_pending_bytes = 1 << 20;
  auto w = OpenWriter(img, wo);
  ASSERT_TRUE(w);
  const uint64_t old_table = w->header().refcount_table_offset;
  for (uint64_t off = 0; off < (12ull << 20); off += 256 * 1024) {
    std::vector<uint8_t> data = Pattern(400 * 512, uint32_t(off / 4096 + 1));
    ASSERT_TRUE(w->WriteClusters(off + 4 * 1024 * 1024 + 512 * (off / 262144 % 7), data).ok());
    std::memcpy(model.data() + off + 4 * 1024 * 1024 + 512 * (off / 262144 % 7), data.data(),
                data.size());
  }
  ASSERT_TRUE(w->Flush().ok());
  EXPECT_GT(w->stats().refcount_blocks, 50u);
  EXPECT_GE(w->stats().table_grows, 1u);
  EXPECT_NE(w->header().refcount_table_offset, old_table);
  w.reset();
  EXPECT_TRUE(testutil::QemuImgCheckClean(img));
  EXPECT_TRUE(GuestBytes(img, dir.Sub("o.raw")) == model);
}

// v3: zero clusters hide the backing with the zero flag and need no data;
// v2: the same request writes zero-filled clusters.
TEST(Qcow2Allocator, ZeroClustersHideTheBackingOnV3AndV2) {
  for (const std::string compat : {"1.1", "0.10"}) {
    SCOPED_TRACE(compat);
    ScopedTempDir dir;
    const std::string base = CreateImage(dir, "base.qcow2", 4 << 20, "compat=1.1");
    MustRunCmd({"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 4m", base});
    const std::string top = dir.Sub("top.qcow2");
    MustRunCmd({"qemu-img", "create", "-q", "-f", "qcow2", "-o",
                "compat=" + compat + ",cluster_size=65536", "-b", base, "-F", "qcow2", top});
    MustRunCmd({"qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 64k", top});
    std::vector<uint8_t> model = GuestBytes(top, dir.Sub("o.raw"));
    const uint64_t file_before = ReadFileBytes(top).size();
    auto w = OpenWriter(top);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->WriteZeroClusters(0, 65536).ok());            // over qemu's data cluster
    ASSERT_TRUE(w->WriteZeroClusters(1 << 20, 3 * 65536).ok());  // over the backing
    ASSERT_TRUE(w->Flush().ok());
    w.reset();
    std::memset(model.data(), 0, 65536);
    std::memset(model.data() + (1 << 20), 0, 3 * 65536);
    EXPECT_TRUE(testutil::QemuImgCheckClean(top));
    EXPECT_TRUE(GuestBytes(top, dir.Sub("o.raw")) == model);
    const uint64_t grown = ReadFileBytes(top).size() - file_before;
    if (compat == "1.1") {
      EXPECT_EQ(grown, 0u);  // flags only
    } else {
      EXPECT_GE(grown, 3u * 65536);  // real zero clusters
    }
  }
}

// Dropping a writer without Flush leaves the image as it was: the data
// clusters written are not referenced and have no refcount.
TEST(Qcow2Allocator, DroppedWithoutFlushLeavesContentAndConsistency) {
  ScopedTempDir dir;
  const std::string img = CreateImage(dir, "a.qcow2", 4 << 20, "compat=1.1");
  MustRunCmd({"qemu-io", "-f", "qcow2", "-c", "write -P 0x44 0 1m", img});
  std::vector<uint8_t> before = GuestBytes(img, dir.Sub("o.raw"));
  {
    auto w = OpenWriter(img);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->WriteClusters(2 << 20, Pattern(4 * 65536, 3)).ok());
    EXPECT_EQ(w->pending_clusters(), 4u);
  }
  EXPECT_TRUE(testutil::QemuImgCheckClean(img));
  EXPECT_TRUE(GuestBytes(img, dir.Sub("o.raw")) == before);
}

TEST(Qcow2Allocator, RejectsMisalignedAndOutOfRangeWrites) {
  ScopedTempDir dir;
  const std::string img = CreateImage(dir, "a.qcow2", 1 << 20, "compat=1.1");
  auto w = OpenWriter(img);
  ASSERT_TRUE(w);
  std::vector<uint8_t> one(65536, 1);
  EXPECT_EQ(w->WriteClusters(512, one).code(), Code::kInvalidArgument);
  EXPECT_EQ(w->WriteClusters(0, std::span(one).first(4096)).code(), Code::kInvalidArgument);
  EXPECT_EQ(w->WriteClusters(1 << 20, one).code(), Code::kInvalidArgument);
  EXPECT_EQ(w->WriteZeroClusters(1 << 20, 65536).code(), Code::kInvalidArgument);
  EXPECT_EQ(w->pending_clusters(), 0u);
}

TEST(Qcow2Allocator, RefusesImagesItCannotWriteSafely) {
  ScopedTempDir dir;
  const std::string snap = CreateImage(dir, "snap.qcow2", 1 << 20, "compat=1.1");
  MustRunCmd({"qemu-img", "snapshot", "-c", "s1", snap});
  EXPECT_EQ(Qcow2Writer::Open(snap).status().code(), Code::kUnsupported);
  const std::string raw = dir.Sub("x.raw");
  MustRunCmd({"qemu-img", "create", "-q", "-f", "raw", raw, "1M"});
  EXPECT_EQ(Qcow2Writer::Open(raw).status().code(), Code::kUnsupported);
  EXPECT_EQ(Qcow2Writer::Open(dir.Sub("missing")).status().code(), Code::kNotFound);
  // Writing over a compressed cluster is refused.
  const std::string src = dir.Sub("src.raw");
  MustRunCmd({"qemu-img", "create", "-q", "-f", "raw", src, "1M"});
  MustRunCmd({"qemu-io", "-f", "raw", "-c", "write -P 0x61 0 1m", src});
  const std::string comp = dir.Sub("comp.qcow2");
  MustRunCmd({"qemu-img", "convert", "-c", "-O", "qcow2", src, comp});
  auto w = OpenWriter(comp);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->WriteClusters(0, std::vector<uint8_t>(65536, 2)).code(), Code::kUnsupported);
}

// A second writer (or a QEMU) cannot open the image while one holds it.
TEST(Qcow2Allocator, HoldsTheImageLocks) {
  ScopedTempDir dir;
  const std::string img = CreateImage(dir, "a.qcow2", 1 << 20, "compat=1.1");
  auto w = OpenWriter(img);
  ASSERT_TRUE(w);
  EXPECT_EQ(Qcow2Writer::Open(img).status().code(), Code::kBusy);
  RunResult r = testutil::Run({"qemu-io", "-f", "qcow2", "-c", "read 0 512", img});
  EXPECT_NE(r.exit_code, 0);
}

}  // namespace
}  // namespace chainfs::core
