// Qcow2Writer on images with extended L2 entries, checked against the real
// qemu tools: subcluster writes and zero writes at random places of an
// overlay whose clusters qemu-io already filled in part; after each batch
// `qemu-img check` is clean and the guest content (`qemu-img convert`)
// equals a model kept in memory, which only holds if the subclusters a
// write does not cover still read from the backing.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "core/format/qcow2/allocator.h"
#include "core/io/file.h"
#include "core/util/endian.h"
#include "util/qemu_check.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::RunResult;
using testutil::ScopedTempDir;

void Must(const std::vector<std::string>& argv) {
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err
                            << r.out;
}

std::vector<uint8_t> FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::vector<uint8_t> GuestBytes(const std::string& path, const std::string& scratch) {
  ::unlink(scratch.c_str());
  RunResult r = testutil::Run({"qemu-img", "convert", "-O", "raw", path, scratch});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return FileBytes(scratch);
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; i += 4) {
    uint32_t x = rng() | 0x01010101u;  // never all zero
    std::memcpy(v.data() + i, &x, std::min<size_t>(4, n - i));
  }
  return v;
}

// Returns the subcluster bitmap of guest cluster `cluster` (0 without an L2
// table), read straight from the file.
uint64_t Bitmap(const std::string& path, uint64_t cluster) {
  Result<File> f = File::OpenRead(path);
  EXPECT_TRUE(f.ok());
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  EXPECT_TRUE(h.ok());
  if (!f.ok() || !h.ok()) return 0;
  const uint64_t per_table = h->cluster_size() / 16;
  uint8_t b[8];
  EXPECT_TRUE(ReadExact(*f, h->l1_table_offset + (cluster / per_table) * 8, b, "L1").ok());
  const uint64_t l2 = LoadBe64(b) & 0x00fffffffffffe00ull;
  if (l2 == 0) return 0;
  EXPECT_TRUE(ReadExact(*f, l2 + (cluster % per_table) * 16 + 8, b, "bitmap").ok());
  return LoadBe64(b);
}

class ExtendedL2Allocator : public ::testing::TestWithParam<uint64_t> {};

TEST_P(ExtendedL2Allocator, SubclusterWritesKeepTheRestFromTheBacking) {
  const uint64_t cs = GetParam();
  const uint64_t sub = cs / 32;
  const uint64_t size = 48 * cs + 3 * sub;  // ends inside a cluster
  ScopedTempDir dir;
  const std::string base = dir.Sub("base.raw"), top = dir.Sub("top.qcow2");
  const std::string scratch = dir.Sub("scratch.raw");
  Must({"qemu-img", "create", "-q", "-f", "raw", base, std::to_string(size)});
  Must({"qemu-io", "-f", "raw", "-c", fmt::format("write -P 0x5a 0 {}", size), base});
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o",
        fmt::format("extended_l2=on,cluster_size={}", cs), "-b", base, "-F", "raw", top});
  // qemu-io leaves clusters with allocated, zero and unallocated subclusters.
  Must({"qemu-io", "-f", "qcow2", "-c", fmt::format("write -P 0x11 {} {}", 2 * cs + sub, 2 * sub),
        "-c", fmt::format("write -z {} {}", 3 * cs, 4 * sub), "-c",
        fmt::format("write -P 0x12 {} {}", 5 * cs, cs + 7 * sub), top});
  std::vector<uint8_t> model = GuestBytes(top, scratch);
  ASSERT_EQ(model.size(), size);

  Qcow2WriterOptions opts;
  opts.max_pending_bytes = 4 * cs;  // several flushes
  {
    Result<std::unique_ptr<Qcow2Writer>> w = Qcow2Writer::Open(top, opts);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_TRUE((*w)->extended_l2());
    ASSERT_EQ((*w)->write_granularity(), sub);
    // Half a subcluster is not a write unit.
    EXPECT_EQ((*w)->WriteClusters(sub / 2, std::vector<uint8_t>(sub)).code(),
              Code::kInvalidArgument);
    // One subcluster of an untouched cluster: 1 allocated bit, rest from base.
    std::vector<uint8_t> one = Pattern(sub, 1);
    ASSERT_TRUE((*w)->WriteClusters(7 * cs + 3 * sub, one).ok());
    std::memcpy(model.data() + 7 * cs + 3 * sub, one.data(), sub);
    // Next to qemu-io's subclusters in the same cluster.
    std::vector<uint8_t> two = Pattern(2 * sub, 2);
    ASSERT_TRUE((*w)->WriteClusters(2 * cs + 5 * sub, two).ok());
    std::memcpy(model.data() + 2 * cs + 5 * sub, two.data(), 2 * sub);
    // Over zero subclusters: they turn into data.
    std::vector<uint8_t> three = Pattern(2 * sub, 3);
    ASSERT_TRUE((*w)->WriteClusters(3 * cs + sub, three).ok());
    std::memcpy(model.data() + 3 * cs + sub, three.data(), 2 * sub);
    // Zero subclusters in a cluster with data and in one without.
    ASSERT_TRUE((*w)->WriteZeroClusters(5 * cs + 30 * sub, 4 * sub).ok());
    std::memset(model.data() + 5 * cs + 30 * sub, 0, 4 * sub);
    ASSERT_TRUE((*w)->WriteZeroClusters(9 * cs + 31 * sub, sub).ok());
    std::memset(model.data() + 9 * cs + 31 * sub, 0, sub);
    // The disk's last subclusters.
    std::vector<uint8_t> tail = Pattern(3 * sub, 4);
    ASSERT_TRUE((*w)->WriteClusters(48 * cs, tail).ok());
    std::memcpy(model.data() + 48 * cs, tail.data(), 3 * sub);
    ASSERT_TRUE((*w)->Flush().ok());
  }
  EXPECT_TRUE(testutil::QemuImgCheckClean(top));
  EXPECT_TRUE(GuestBytes(top, scratch) == model);
  EXPECT_EQ(Bitmap(top, 7), uint64_t{1} << 3);
  EXPECT_EQ(Bitmap(top, 9), uint64_t{1} << 63);
  EXPECT_EQ(Bitmap(top, 3) & 0xffffffffull, 0x6u);  // 1, 2 allocated
  EXPECT_EQ(Bitmap(top, 3) >> 32, 0xfu & ~0x6u);    // 0, 3 still zero

  // Random batches: ragged runs over many clusters, zero runs, rewrites.
  std::mt19937_64 rng(7);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    {
      Result<std::unique_ptr<Qcow2Writer>> w = Qcow2Writer::Open(top, opts);
      ASSERT_TRUE(w.ok()) << w.status().ToString();
      for (int i = 0; i < 25; ++i) {
        const uint64_t units = (size + sub - 1) / sub;
        const uint64_t n = 1 + rng() % (rng() % 2 ? 6 : 80);
        const uint64_t first = rng() % (units - std::min(n, units - 1));
        const uint64_t len = std::min(n, units - first) * sub;
        const uint64_t off = first * sub;
        const uint64_t in_disk = std::min(len, size - off);
        if (rng() % 4 == 0) {
          ASSERT_TRUE((*w)->WriteZeroClusters(off, len).ok());
          std::memset(model.data() + off, 0, in_disk);
        } else {
          std::vector<uint8_t> d = Pattern(len, uint32_t(100 * round + i));
          Status s = (*w)->WriteClusters(off, d);
          ASSERT_TRUE(s.ok()) << s.ToString();
          std::memcpy(model.data() + off, d.data(), in_disk);
        }
      }
      ASSERT_TRUE((*w)->Flush().ok());
    }
    EXPECT_TRUE(testutil::QemuImgCheckClean(top));
    EXPECT_TRUE(GuestBytes(top, scratch) == model);
  }
}

INSTANTIATE_TEST_SUITE_P(Clusters, ExtendedL2Allocator,
                         ::testing::Values(uint64_t{16384}, uint64_t{65536}, uint64_t{2} << 20),
                         [](const ::testing::TestParamInfo<uint64_t>& info) {
                           return fmt::format("c{}k", info.param >> 10);
                         });

void PatchBe64(const std::string& path, uint64_t offset, uint64_t value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint8_t b[8];
  StoreBe64(b, value);
  f.seekp(std::streamoff(offset));
  f.write(reinterpret_cast<const char*>(b), 8);
  ASSERT_TRUE(f.good());
}

// Entry of guest cluster 0 of a 64 KiB-cluster image: file offset.
uint64_t Entry0(const std::string& path) {
  Result<File> f = File::OpenRead(path);
  EXPECT_TRUE(f.ok());
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  EXPECT_TRUE(h.ok());
  if (!f.ok() || !h.ok()) return 0;
  uint8_t b[8];
  EXPECT_TRUE(ReadExact(*f, h->l1_table_offset, b, "L1").ok());
  return LoadBe64(b) & 0x00fffffffffffe00ull;
}

TEST(ExtendedL2AllocatorHostile, RefusesEntriesThatMakeNoSense) {
  struct Bad {
    const char* what;
    uint64_t desc_or;    // bits or'ed into the descriptor
    bool drop_host;      // descriptor cleared
    uint64_t bitmap_or;  // bits or'ed into the bitmap
  };
  for (const Bad& bad :
       {Bad{"allocated and zero", 0, false, uint64_t{1} << 32},
        Bad{"allocated without host", 0, true, 0}, Bad{"reserved bit 0", 1, false, 0},
        Bad{"host past the end", uint64_t{1} << 40, false, 0}}) {
    SCOPED_TRACE(bad.what);
    ScopedTempDir dir;
    const std::string img = dir.Sub("a.qcow2");
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", img, "1M"});
    Must({"qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 2k", img});
    const uint64_t at = Entry0(img);
    ASSERT_NE(at, 0u);
    std::vector<uint8_t> bytes = FileBytes(img);
    uint64_t desc = LoadBe64(bytes.data() + at), bitmap = LoadBe64(bytes.data() + at + 8);
    ASSERT_EQ(bitmap, 1u);
    desc = bad.drop_host ? 0 : desc | bad.desc_or;
    PatchBe64(img, at, desc);
    PatchBe64(img, at + 8, bitmap | bad.bitmap_or);
    const std::vector<uint8_t> before = FileBytes(img);
    {
      Result<std::unique_ptr<Qcow2Writer>> w = Qcow2Writer::Open(img);
      ASSERT_TRUE(w.ok()) << w.status().ToString();
      Status s = (*w)->WriteClusters(4096, std::vector<uint8_t>(2048, 7));
      EXPECT_EQ(s.code(), Code::kCorrupt) << s.ToString();
      s = (*w)->WriteZeroClusters(4096, 2048);
      EXPECT_EQ(s.code(), Code::kCorrupt) << s.ToString();
      EXPECT_TRUE((*w)->Flush().ok());
    }
    EXPECT_TRUE(FileBytes(img) == before);
  }
}

TEST(ExtendedL2AllocatorHostile, RefusesExtendedL2WithSmallClusters) {
  ScopedTempDir dir;
  const std::string img = dir.Sub("small.qcow2");
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=8192", img, "1M"});
  // Set the extended L2 incompatible bit (4) in a header qemu would not make.
  std::vector<uint8_t> bytes = FileBytes(img);
  PatchBe64(img, 72, LoadBe64(bytes.data() + 72) | (1u << 4));
  Result<std::unique_ptr<Qcow2Writer>> w = Qcow2Writer::Open(img);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Code::kCorrupt) << w.status().ToString();
}

}  // namespace
}  // namespace chainfs::core
