// The read path against qemu: for chains made by qemu-img and filled by
// qemu-io, the engine's full read equals `qemu-img convert -O raw` byte for
// byte, and its map equals `qemu-img map --output=json` (issue 5).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/data/chain_reader.h"
#include "core/data/qcow2_reader.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::Run;
using testutil::RunResult;
using testutil::ScopedTempDir;

void Tool(const std::string& tool, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {tool};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = Run(argv);
  ASSERT_EQ(r.exit_code, 0) << tool << ": " << r.err << r.out;
}
void QemuImg(const std::vector<std::string>& args) { Tool("qemu-img", args); }

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::string out(size_t(in.tellg()), '\0');
  in.seekg(0);
  in.read(out.data(), std::streamsize(out.size()));
  EXPECT_TRUE(in.good()) << path;
  return out;
}

// Describes pseudo-random writes for qemu-io: `count` writes of patterned
// data (and every fifth one a zero write when `zeros`) at offsets aligned to
// `align`, lengths 1..max_len aligned units, all inside [0, size).
std::vector<std::string> RandomWrites(uint32_t seed, uint64_t size, int count, uint64_t align,
                                      uint64_t max_units, bool zeros) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> cmds;
  for (int i = 0; i < count; ++i) {
    uint64_t units = 1 + rng() % max_units;
    uint64_t len = units * align;
    if (len > size) len = size;
    uint64_t off = (rng() % ((size - len) / align + 1)) * align;
    if (zeros && i % 5 == 4) {
      cmds.push_back(fmt::format("write -z {} {}", off, len));
    } else {
      cmds.push_back(fmt::format("write -P {:#x} {} {}", 1 + rng() % 254, off, len));
    }
  }
  return cmds;
}

class DataInteropTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }

  // Runs qemu-io commands on an image of format `fmt`.
  void Io(const std::string& name, const std::string& fmt, const std::vector<std::string>& cmds) {
    std::vector<std::string> argv = {"-f", fmt};
    for (const std::string& c : cmds) {
      argv.push_back("-c");
      argv.push_back(c);
    }
    argv.push_back(P(name));
    Tool("qemu-io", argv);
  }

  Result<std::unique_ptr<ChainReader>> OpenChain(const std::string& name) {
    Chain chain = ResolveChain(inspector_, P(name));
    return ChainReader::Open(chain);
  }

  // The two checks of issue 5 on the chain whose top is `name`.
  void ExpectMatchesQemu(const std::string& name) {
    SCOPED_TRACE(name);
    Result<std::unique_ptr<ChainReader>> r = OpenChain(name);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const ChainReader& reader = **r;

    QemuImg({"convert", "-O", "raw", P(name), P(name + ".expected")});
    std::string expected = ReadFileBytes(P(name + ".expected"));
    ASSERT_EQ(reader.Size(), expected.size());
    std::string got;
    got.reserve(expected.size());
    // An odd chunk size so that reads straddle clusters and subclusters.
    Status s = reader.ReadStream(
        0, UINT64_MAX,
        [&got](uint64_t off, std::span<const uint8_t> b) {
          EXPECT_EQ(off, got.size());
          got.append(reinterpret_cast<const char*>(b.data()), b.size());
          return Status::Ok();
        },
        (1u << 20) + 4096 + 512);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(got.size(), expected.size());
    if (got != expected) {
      size_t i = 0;
      while (got[i] == expected[i]) ++i;
      FAIL() << "first difference at guest offset " << i;
    }

    RunResult q = testutil::Run({"qemu-img", "map", "--output=json", P(name)});
    ASSERT_EQ(q.exit_code, 0) << q.err;
    Result<std::vector<MapExtent>> map = reader.Map();
    ASSERT_TRUE(map.ok()) << map.status().ToString();
    EXPECT_EQ(MapToJson(*map), q.out);
  }

  ScopedTempDir dir_;
  ImageInspector inspector_;
};

TEST_F(DataInteropTest, V2Compat010ChainMatchesQemu) {
  const uint64_t size = 24ull << 20;
  QemuImg({"create", "-q", "-f", "qcow2", "-o", "compat=0.10", P("base.qcow2"), "24M"});
  Io("base.qcow2", "qcow2", RandomWrites(1, size, 40, 512, 300, true));
  QemuImg({"create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.qcow2", "-F", "qcow2",
           P("top.qcow2")});
  Io("top.qcow2", "qcow2", RandomWrites(2, size, 40, 4096, 40, true));
  ExpectMatchesQemu("top.qcow2");
  ExpectMatchesQemu("base.qcow2");
}

class ClusterSizeTest : public DataInteropTest,
                        public ::testing::WithParamInterface<const char*> {};

TEST_P(ClusterSizeTest, V3ThreeImageChainMatchesQemu) {
  const std::string cs = std::string("cluster_size=") + GetParam();
  const uint64_t size = 40ull << 20;
  QemuImg({"create", "-q", "-f", "qcow2", "-o", cs, P("base.qcow2"), "40M"});
  Io("base.qcow2", "qcow2", RandomWrites(3, size, 60, 512, 500, true));
  QemuImg(
      {"create", "-q", "-f", "qcow2", "-o", cs, "-b", "base.qcow2", "-F", "qcow2", P("mid.qcow2")});
  Io("mid.qcow2", "qcow2", RandomWrites(4, size, 60, 4096, 64, true));
  QemuImg(
      {"create", "-q", "-f", "qcow2", "-o", cs, "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
  Io("top.qcow2", "qcow2", RandomWrites(5, size, 30, 512, 100, true));
  // Zero clusters over allocated data below, and a discard back to the backing.
  Io("top.qcow2", "qcow2", {"write -z 0 3M", "discard 8M 2M"});
  ExpectMatchesQemu("top.qcow2");
  ExpectMatchesQemu("mid.qcow2");
}

INSTANTIATE_TEST_SUITE_P(Sizes, ClusterSizeTest, ::testing::Values("4k", "64k", "2M"));

class CompressedTest : public DataInteropTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(CompressedTest, CompressedBaseUnderOverlayMatchesQemu) {
  const std::string ct = std::string("compression_type=") + GetParam();
  const uint64_t size = 16ull << 20;
  // Incompressible clusters come from a raw backing with random bytes.
  std::mt19937_64 rng(7);
  std::string noise(16 << 20, '\0');
  for (size_t i = 5 << 20; i < (5u << 20) + (256u << 10); ++i) noise[i] = char(rng());
  { std::ofstream(P("noise.raw"), std::ios::binary) << noise; }
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "noise.raw", "-F", "raw", P("src.qcow2"), "16M"});
  Io("src.qcow2", "qcow2", RandomWrites(6, size, 50, 512, 200, false));
  for (const char* cs : {"64k", "4k"}) {
    const std::string base = std::string("base-") + cs + ".qcow2";
    const std::string top = std::string("top-") + cs + ".qcow2";
    QemuImg({"convert", "-c", "-O", "qcow2", "-o", ct + ",cluster_size=" + cs, P("src.qcow2"),
             P(base)});
    QemuImg({"create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", P(top)});
    Io(top, "qcow2", RandomWrites(8, size, 20, 4096, 20, true));
    ExpectMatchesQemu(top);
    ExpectMatchesQemu(base);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CompressedTest, ::testing::Values("zlib", "zstd"));

TEST_F(DataInteropTest, ExtendedL2SubclustersMatchQemu) {
  const uint64_t size = 16ull << 20;
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "16M"});
  Io("base.raw", "raw", RandomWrites(9, size, 30, 512, 400, false));
  for (const char* cs : {"64k", "2M", "32k"}) {
    const std::string top = std::string("ext-") + cs + ".qcow2";
    QemuImg({"create", "-q", "-f", "qcow2", "-o", std::string("extended_l2=on,cluster_size=") + cs,
             "-b", "base.raw", "-F", "raw", P(top)});
    Io(top, "qcow2",
       {"write -P 0xab 4k 4k", "write -P 0xcd 130k 6k", "write -z 1M 8k", "write -z 3M 2M",
        "write -P 0x11 5M 64k"});
    Io(top, "qcow2", RandomWrites(10, size, 40, 2048, 16, true));
    ExpectMatchesQemu(top);
  }
  // Without a backing, unallocated subclusters read as zeros.
  QemuImg({"create", "-q", "-f", "qcow2", "-o", "extended_l2=on", P("alone.qcow2"), "4M"});
  Io("alone.qcow2", "qcow2", {"write -P 0xab 4k 4k", "write -z 64k 2k"});
  ExpectMatchesQemu("alone.qcow2");
}

TEST_F(DataInteropTest, RawBasesShorterAndLongerThanOverlayMatchQemu) {
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "8M"});
  Io("base.raw", "raw", RandomWrites(11, 8 << 20, 30, 512, 300, false));
  // The overlay is larger than its backing: past 8M everything reads zero.
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("big.qcow2"), "13M"});
  Io("big.qcow2", "qcow2", {"write -P 0x5a 7M 2M", "write -P 0x66 12M 4k"});
  ExpectMatchesQemu("big.qcow2");
  // The overlay is smaller than its backing.
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("small.qcow2"), "5M"});
  Io("small.qcow2", "qcow2", {"write -P 0x77 1M 100k"});
  ExpectMatchesQemu("small.qcow2");
  // A qcow2 middle shorter than both its overlay and its own backing.
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2"), "3M"});
  Io("mid.qcow2", "qcow2", {"write -P 0x42 2M 512k"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2"), "10M"});
  Io("top.qcow2", "qcow2", {"write -P 0x43 2500k 8k"});
  ExpectMatchesQemu("top.qcow2");
  // A raw file whose size is not a multiple of 512.
  std::string odd(1000, '\x5c');
  { std::ofstream(P("odd.raw"), std::ios::binary) << odd; }
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "odd.raw", "-F", "raw", P("odd.qcow2"), "1M"});
  ExpectMatchesQemu("odd.qcow2");
  ExpectMatchesQemu("odd.raw");
  ExpectMatchesQemu("base.raw");
}

TEST_F(DataInteropTest, ExternalDataFileFollowedOnlyWhenFormatIsRecorded) {
  QemuImg(
      {"create", "-q", "-f", "qcow2", "-o", "data_file=" + P("base.data"), P("base.qcow2"), "8M"});
  Io("base.qcow2", "qcow2", RandomWrites(12, 8 << 20, 20, 4096, 64, true));
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", P("top.qcow2")});
  Io("top.qcow2", "qcow2", {"write -P 0x99 1M 64k"});
  // base.qcow2's format is recorded in top.qcow2: its data file is followed.
  ExpectMatchesQemu("top.qcow2");
  // Opened on its own, base.qcow2's format is probed: never follow the data file.
  Result<std::unique_ptr<ChainReader>> r = OpenChain("base.qcow2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied) << r.status().ToString();
}

TEST_F(DataInteropTest, EncryptedImageIsUnsupported) {
  testutil::RunResult created = testutil::RunRetryingQemuCpuBenchmark(
      {"qemu-img", "create", "-q", "--object", "secret,id=sec0,data=123456", "-f", "qcow2", "-o",
       "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=300", P("enc.qcow2"), "1M"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  Result<std::unique_ptr<ChainReader>> r = OpenChain("enc.qcow2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported) << r.status().ToString();
}

TEST_F(DataInteropTest, MissingBackingIsNotFound) {
  QemuImg({"create", "-q", "-f", "qcow2", P("base.qcow2"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", P("top.qcow2")});
  ASSERT_EQ(::unlink(P("base.qcow2").c_str()), 0);
  Result<std::unique_ptr<ChainReader>> r = OpenChain("top.qcow2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound) << r.status().ToString();
}

TEST_F(DataInteropTest, ConcurrentReadersSeeTheSameBytes) {
  const uint64_t size = 32ull << 20;
  QemuImg({"create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", P("base.qcow2"), "32M"});
  Io("base.qcow2", "qcow2", RandomWrites(13, size, 80, 512, 400, true));
  QemuImg({"convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=4k",
           P("base.qcow2"), P("cbase.qcow2")});
  QemuImg({"create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", "cbase.qcow2", "-F",
           "qcow2", P("top.qcow2")});
  Io("top.qcow2", "qcow2", RandomWrites(14, size, 80, 2048, 40, true));
  QemuImg({"convert", "-O", "raw", P("top.qcow2"), P("expected.raw")});
  const std::string expected = ReadFileBytes(P("expected.raw"));
  // A tiny L2 cache forces evictions while the threads race.
  Chain chain = ResolveChain(inspector_, P("top.qcow2"));
  ChainReaderOptions opts;
  opts.l2_cache_max_bytes = 8192;
  Result<std::unique_ptr<ChainReader>> r = ChainReader::Open(chain, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const ChainReader& reader = **r;
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      std::vector<uint8_t> buf;
      for (int i = 0; i < 300; ++i) {
        uint64_t len = 1 + rng() % (300 << 10);
        uint64_t off = rng() % (size - len);
        buf.resize(len);
        Result<size_t> n = reader.Read(off, buf);
        if (!n.ok() || *n != len) {
          ++errors;
          continue;
        }
        if (std::memcmp(buf.data(), expected.data() + off, len) != 0) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  L2CacheStats stats = reader.CacheStats();
  EXPECT_GT(stats.hits, 0u);
  EXPECT_GT(stats.evictions, 0u);
}

}  // namespace
}  // namespace chainfs::core
