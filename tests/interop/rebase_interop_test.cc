// SafeRebase and flatten checked with the real qemu tools: chains made by
// qemu-img with qemu-io pattern writes at many offsets (v2, v3, 512 B to
// 2 MiB clusters, qcow2 and raw bases); after every rebase or flatten
// `qemu-img check` is clean, `qemu-img compare` against a raw export taken
// before says identical, and `qemu-img info` shows the new backing.
// Refusals (missing target, image in use by a real qemu-io, unreadable old
// chain, untrusted format) leave every file byte for byte as it was.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "core/chain/inspector.h"
#include "core/util/json.h"
#include "core/write/in_use.h"
#include "core/write/loop_check.h"
#include "core/write/rebase.h"
#include "util/qemu_check.h"
#include "util/run.h"
#include "util/qemu_holder.h"

extern char** environ;

namespace chainfs::core {
namespace {

using testutil::RunResult;
using testutil::ScopedTempDir;

void Must(const std::vector<std::string>& argv) {
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err
                            << r.out;
}


// qemu-img compare of the image's chain against a raw file (exit 0 = same).
::testing::AssertionResult SameContent(const std::string& image, const std::string& raw) {
  RunResult r = testutil::Run({"qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, raw});
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "qemu-img compare exit " << r.exit_code << ": " << r.out << r.err;
}

Json Info(const std::string& path) {
  RunResult r = testutil::Run({"qemu-img", "info", "--output=json", "-f", "qcow2", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Result<Json> j = Json::Parse(r.out);
  return j.ok() ? *j : Json::MakeObject();
}

std::string StrField(const Json& j, std::string_view key) {
  const Json* v = j.Find(key);
  return v && v->is_string() ? v->as_string() : "<absent>";
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t FileSize(const std::string& path) { return FileBytes(path).size(); }

// Writes `count` patterns at random offsets (512-aligned, 512 B..192 KiB)
// with one qemu-io run.
void WritePatterns(const std::string& path, const std::string& format, uint64_t size, int count,
                   uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> argv = {"qemu-io", "-f", format};
  for (int i = 0; i < count; ++i) {
    const uint64_t len = 512 * (1 + rng() % 384);
    const uint64_t off = (rng() % ((size - len) / 512)) * 512;
    const int pattern = int(1 + rng() % 254);
    argv.insert(argv.end(), {"-c", fmt::format("write -P {} {} {}", pattern, off, len)});
  }
  // Some zero writes too (zero clusters in v3 overlays).
  const uint64_t zoff = (rng() % (size / 65536)) * 65536;
  argv.insert(argv.end(), {"-c", fmt::format("write -z {} 64k", zoff)});
  argv.push_back(path);
  Must(argv);
}

TrustContext DirTrust(const std::string& dir) {
  TrustContext t;
  t.in_pool = [dir](const std::string& p) { return p.rfind(dir + "/", 0) == 0; };
  return t;
}

struct ChainCase {
  std::string compat;
  uint64_t cluster;
  bool raw_base;
  uint64_t size;
};

// base <- mid <- top, each with patterns; base is raw or qcow2.
struct TestChain {
  std::string base, base_fmt, mid, top, before;
};

TestChain MakeChain(const ScopedTempDir& dir, const ChainCase& c) {
  TestChain t;
  t.base_fmt = c.raw_base ? "raw" : "qcow2";
  t.base = dir.Sub(c.raw_base ? "base.raw" : "base.qcow2");
  t.mid = dir.Sub("mid.qcow2");
  t.top = dir.Sub("top.qcow2");
  t.before = dir.Sub("before.raw");
  const std::string opts = fmt::format("compat={},cluster_size={}", c.compat, c.cluster);
  if (c.raw_base) {
    Must({"qemu-img", "create", "-q", "-f", "raw", t.base, std::to_string(c.size)});
  } else {
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, t.base, std::to_string(c.size)});
  }
  WritePatterns(t.base, t.base_fmt, c.size, 40, 1);
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "-b", t.base, "-F", t.base_fmt,
        t.mid});
  WritePatterns(t.mid, "qcow2", c.size, 40, 2);
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "-b", t.mid, "-F", "qcow2", t.top});
  WritePatterns(t.top, "qcow2", c.size, 25, 3);
  Must({"qemu-img", "convert", "-O", "raw", t.top, t.before});
  return t;
}

class RebaseInterop : public ::testing::TestWithParam<ChainCase> {};

TEST_P(RebaseInterop, RebaseOntoBaseKeepsContent) {
  ScopedTempDir dir;
  TestChain t = MakeChain(dir, GetParam());
  ImageInspector inspector;
  uint64_t last_done = 0, total = 0;
  bool monotonic = true;
  Status s = SafeRebase(inspector, t.top, t.base, std::nullopt, DirTrust(dir.path()),
                        [&](uint64_t done, uint64_t all) {
                          if (done < last_done) monotonic = false;
                          last_done = done;
                          total = all;
                        });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last_done, GetParam().size);
  EXPECT_EQ(total, GetParam().size);
  EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
  EXPECT_TRUE(SameContent(t.top, t.before));
  Json info = Info(t.top);
  EXPECT_EQ(StrField(info, "backing-filename"), t.base);
  EXPECT_EQ(StrField(info, "backing-filename-format"), t.base_fmt);
}

TEST_P(RebaseInterop, FlattenKeepsContentAndDropsBacking) {
  ScopedTempDir dir;
  TestChain t = MakeChain(dir, GetParam());
  ImageInspector inspector;
  Status s = SafeRebase(inspector, t.top, std::nullopt, std::nullopt, DirTrust(dir.path()));
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
  EXPECT_TRUE(SameContent(t.top, t.before));
  Json info = Info(t.top);
  EXPECT_EQ(StrField(info, "backing-filename"), "<absent>");
  // The base and mid are untouched and no longer needed.
  ASSERT_EQ(::unlink(t.mid.c_str()), 0);
  EXPECT_TRUE(SameContent(t.top, t.before));
}

TEST_P(RebaseInterop, ShorterAndLongerNewBackingsKeepContent) {
  const ChainCase& c = GetParam();
  for (const uint64_t nb_size : {c.size / 2, c.size * 2}) {
    SCOPED_TRACE(nb_size);
    ScopedTempDir dir;
    TestChain t = MakeChain(dir, c);
    const std::string nb = dir.Sub("nb.qcow2");
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o",
          fmt::format("compat={},cluster_size={}", c.compat, c.cluster), nb,
          std::to_string(nb_size)});
    WritePatterns(nb, "qcow2", nb_size, 30, 9);
    ImageInspector inspector;
    // Recorded as written: relative to the image's directory.
    Status s = SafeRebase(inspector, t.top, std::string("nb.qcow2"), std::string("qcow2"),
                          DirTrust(dir.path()));
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
    EXPECT_TRUE(SameContent(t.top, t.before));
    Json info = Info(t.top);
    EXPECT_EQ(StrField(info, "backing-filename"), "nb.qcow2");
    EXPECT_EQ(StrField(info, "backing-filename-format"), "qcow2");
  }
}

INSTANTIATE_TEST_SUITE_P(Chains, RebaseInterop,
                         ::testing::Values(ChainCase{"1.1", 65536, false, 32 << 20},
                                           ChainCase{"0.10", 65536, false, 32 << 20},
                                           ChainCase{"1.1", 4096, true, 16 << 20},
                                           ChainCase{"0.10", 4096, false, 16 << 20},
                                           ChainCase{"1.1", 512, false, 4 << 20},
                                           ChainCase{"1.1", 2u << 20, false, 64 << 20},
                                           ChainCase{"0.10", 2u << 20, true, 64 << 20},
                                           // A disk that ends inside a cluster.
                                           ChainCase{"1.1", 65536, false, (8 << 20) + 3 * 512}),
                         [](const ::testing::TestParamInfo<ChainCase>& info) {
                           return fmt::format(
                               "{}_{}_{}_{}MiB{}", info.param.compat == "1.1" ? "v3" : "v2",
                               info.param.cluster, info.param.raw_base ? "raw_base" : "qcow2_base",
                               info.param.size >> 20, info.param.size % (1 << 20) ? "_odd" : "");
                         });

// A new backing that holds exactly the old chain's content needs no copy at
// all; one that shares part of it needs only the rest.
TEST(RebaseInterop, CopiesOnlyWhereTheChainsDiffer) {
  ScopedTempDir dir;
  TestChain t = MakeChain(dir, ChainCase{"1.1", 65536, false, 32 << 20});
  // Same content as base <- mid, as one image.
  const std::string same = dir.Sub("same.qcow2");
  Must({"qemu-img", "convert", "-O", "qcow2", t.mid, same});
  const uint64_t top_size = FileSize(t.top);
  ImageInspector inspector;
  ASSERT_TRUE(SafeRebase(inspector, t.top, same, std::string("qcow2"), DirTrust(dir.path())).ok());
  EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
  EXPECT_TRUE(SameContent(t.top, t.before));
  EXPECT_EQ(FileSize(t.top), top_size);  // not one cluster copied

  // Now change 3 clusters of the new backing that the top does not
  // allocate: exactly those (at most) get copied back.
  const std::string shared = dir.Sub("shared.qcow2");
  Must({"qemu-img", "convert", "-O", "qcow2", same, shared});
  Must({"qemu-io", "-f", "qcow2", "-c", "write -P 0xee 30m 192k", shared});
  ASSERT_TRUE(
      SafeRebase(inspector, t.top, shared, std::string("qcow2"), DirTrust(dir.path())).ok());
  EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
  EXPECT_TRUE(SameContent(t.top, t.before));
  EXPECT_LE(FileSize(t.top), top_size + 3 * 65536 + 65536 /* an L2 table at most */);
}

// Rebasing an image that has no backing onto one: zeros where the new
// backing has data.
TEST(RebaseInterop, RebaseOfStandaloneImageWritesZerosOverNewData) {
  ScopedTempDir dir;
  const std::string img = dir.Sub("img.qcow2"), nb = dir.Sub("nb.raw");
  Must({"qemu-img", "create", "-q", "-f", "qcow2", img, "8M"});
  WritePatterns(img, "qcow2", 8 << 20, 10, 5);
  Must({"qemu-img", "create", "-q", "-f", "raw", nb, "8M"});
  WritePatterns(nb, "raw", 8 << 20, 20, 6);
  Must({"qemu-img", "convert", "-O", "raw", img, dir.Sub("before.raw")});
  ImageInspector inspector;
  Status s = SafeRebase(inspector, img, nb, std::nullopt, DirTrust(dir.path()));
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(testutil::QemuImgCheckClean(img));
  EXPECT_TRUE(SameContent(img, dir.Sub("before.raw")));
  EXPECT_EQ(StrField(Info(img), "backing-filename-format"), "raw");
}

// --- Refusals ------------------------------------------------------------

// Byte-for-byte snapshot of every file of a chain.
std::vector<std::string> Snapshot(const TestChain& t) {
  return {FileBytes(t.base), FileBytes(t.mid), FileBytes(t.top)};
}

TEST(RebaseRefusals, MissingNewBackingIsNotFoundAndChangesNothing) {
  ScopedTempDir dir;
  TestChain t = MakeChain(dir, ChainCase{"1.1", 65536, false, 8 << 20});
  auto before = Snapshot(t);
  ImageInspector inspector;
  Status s =
      SafeRebase(inspector, t.top, dir.Sub("nope.qcow2"), std::nullopt, DirTrust(dir.path()));
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_TRUE(Snapshot(t) == before);
}

TEST(RebaseRefusals, ImageInUseIsBusyAndChangesNothing) {
  ScopedTempDir dir;
  TestChain t = MakeChain(dir, ChainCase{"1.1", 65536, false, 8 << 20});
  auto before = Snapshot(t);
  ImageInspector inspector;
  {
    testutil::QemuHolder holder(t.top, "qcow2");
    ASSERT_TRUE(holder.holding());
    EXPECT_EQ(SafeRebase(inspector, t.top, t.base, std::nullopt, DirTrust(dir.path())).code(),
              Code::kBusy);
    EXPECT_EQ(SafeRebase(inspector, t.top, std::nullopt, std::nullopt, DirTrust(dir.path())).code(),
              Code::kBusy);
  }
  EXPECT_TRUE(Snapshot(t) == before);
  // The backings need only be readable: a qemu-io on the base does not stop it.
  testutil::QemuHolder base_holder(t.base, "qcow2");
  ASSERT_TRUE(base_holder.holding());
  Status s = SafeRebase(inspector, t.top, t.base, std::nullopt, DirTrust(dir.path()));
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(RebaseRefusals, UnreadableOldChainIsEioAndChangesNothing) {
  ScopedTempDir dir;
  TestChain t = MakeChain(dir, ChainCase{"1.1", 65536, false, 8 << 20});
  // The old middle image goes missing.
  ASSERT_EQ(::rename(t.mid.c_str(), dir.Sub("mid.away").c_str()), 0);
  const std::string top_before = FileBytes(t.top);
  ImageInspector inspector;
  Status s = SafeRebase(inspector, t.top, t.base, std::nullopt, DirTrust(dir.path()));
  EXPECT_EQ(s.code(), Code::kIo) << s.ToString();
  EXPECT_EQ(s.sys_errno(), EIO);
  s = SafeRebase(inspector, t.top, std::nullopt, std::nullopt, DirTrust(dir.path()));
  EXPECT_EQ(s.code(), Code::kIo) << s.ToString();
  EXPECT_EQ(FileBytes(t.top), top_before);

  // A middle image whose L1 table points past the end of the file.
  ASSERT_EQ(::rename(dir.Sub("mid.away").c_str(), t.mid.c_str()), 0);
  {
    std::fstream f(t.mid, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(40);
    unsigned char off[8];
    f.read(reinterpret_cast<char*>(off), 8);
    uint64_t l1 = 0;
    for (unsigned char b : off) l1 = l1 << 8 | b;
    f.seekp(std::streamoff(l1));
    const unsigned char bad[8] = {0x80, 0, 0, 0x7f, 0, 0, 0, 0};  // far past EOF
    f.write(reinterpret_cast<const char*>(bad), 8);
  }
  const std::string mid_before = FileBytes(t.mid);
  ImageInspector fresh;
  s = SafeRebase(fresh, t.top, t.base, std::nullopt, DirTrust(dir.path()));
  EXPECT_EQ(s.code(), Code::kIo) << s.ToString();
  EXPECT_EQ(FileBytes(t.top), top_before);
  EXPECT_EQ(FileBytes(t.mid), mid_before);
}

TEST(RebaseRefusals, UntrustedNewBackingFormatIsPermissionDenied) {
  ScopedTempDir dir;
  TestChain t = MakeChain(dir, ChainCase{"1.1", 65536, false, 8 << 20});
  auto before = Snapshot(t);
  ImageInspector inspector;
  // mid has a backing of its own and lies in no pool: its format may not be
  // guessed.
  Status s = SafeRebase(inspector, t.top, t.mid, std::nullopt, TrustContext{});
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_TRUE(Snapshot(t) == before);
  // Bad arguments.
  EXPECT_EQ(SafeRebase(inspector, t.top, std::nullopt, std::string("qcow2"), TrustContext{}).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(SafeRebase(inspector, t.top, t.base, std::string("nosuchfmt"), TrustContext{}).code(),
            Code::kInvalidArgument);
  // A new backing backed by the image itself would be a loop.
  const std::string loop = dir.Sub("loop.qcow2");
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-b", t.top, "-F", "qcow2", loop});
  EXPECT_TRUE(IsLoopError(SafeRebase(inspector, t.top, loop, std::string("qcow2"), TrustContext{})));
  EXPECT_TRUE(Snapshot(t) == before);
}

}  // namespace
}  // namespace chainfs::core
