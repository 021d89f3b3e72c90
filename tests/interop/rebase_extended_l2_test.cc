// Safe rebase and flatten of images with extended L2 entries (subclusters),
// checked with the real qemu tools. Chains are made by qemu-img
// (-o extended_l2=on,cluster_size=...) and written by qemu-io with writes
// much smaller than a cluster, so clusters of every image hold allocated,
// unallocated and zero subclusters side by side. After every `chainctl
// rebase -b NEW` / `-b ""` (or SafeRebase): `qemu-img check` is clean, and
// `qemu-img compare` says identical both against a raw export of the old
// chain and against what `qemu-img rebase` (safe mode) makes of a copy of
// the same top. Hostile L2 entries give an error naming the problem and
// leave the file as it was.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "core/chain/inspector.h"
#include "core/format/qcow2/header.h"
#include "core/io/file.h"
#include "core/util/endian.h"
#include "core/util/json.h"
#include "core/write/rebase.h"
#include "util/qemu_check.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::RunChainctl;
using testutil::RunResult;
using testutil::ScopedTempDir;

void Must(const std::vector<std::string>& argv) {
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err
                            << r.out;
}

// qemu-img compare of two images (exit 0 = same guest content).
::testing::AssertionResult Same(const std::string& a, const std::string& a_fmt,
                                const std::string& b, const std::string& b_fmt) {
  RunResult r = testutil::Run({"qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, a, b});
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "qemu-img compare " << a << " " << b << " exit "
                                       << r.exit_code << ": " << r.out << r.err;
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

// One qemu-io run of `count` writes at random 512-aligned offsets: most
// shorter than a subcluster or a few subclusters long (so subclusters and
// clusters are mixed), some over several clusters, some zero writes
// (`write -z`: zero subclusters where aligned, zeros written where not).
void WriteMixed(const std::string& path, const std::string& format, uint64_t size, uint64_t cluster,
                int count, uint32_t seed) {
  std::mt19937_64 rng(seed);
  const uint64_t sub = std::max<uint64_t>(512, cluster / 32);
  std::vector<std::string> argv = {"qemu-io", "-f", format};
  for (int i = 0; i < count; ++i) {
    uint64_t len;
    switch (rng() % 4) {
      case 0:
        len = 512 * (1 + rng() % 8);
        break;  // inside a subcluster or two
      case 1:
        len = sub * (1 + rng() % 5);
        break;  // whole subclusters
      case 2:
        len = 512 * (1 + rng() % (3 * cluster / 512));
        break;  // up to 3 clusters
      default:
        len = sub * (1 + rng() % 3) + 512;
        break;  // ragged
    }
    len = std::min(len, size / 4);
    uint64_t off = (rng() % ((size - len) / 512)) * 512;
    if (rng() % 3 == 0) off = off / sub * sub;  // subcluster aligned
    if (rng() % 5 == 0) {
      argv.insert(argv.end(), {"-c", fmt::format("write -z {} {}", off, len)});
    } else {
      argv.insert(argv.end(),
                  {"-c", fmt::format("write -P {} {} {}", int(1 + rng() % 254), off, len)});
    }
  }
  argv.push_back(path);
  Must(argv);
}

// The base of a test chain: raw, standard qcow2, or qcow2 with extended L2.
enum class Base { kRaw, kQcow2, kExtended };

struct XlCase {
  uint64_t cluster;
  uint64_t size;
  Base base;
};

std::string ExtOpts(uint64_t cluster) {
  return fmt::format("extended_l2=on,cluster_size={}", cluster);
}

// base <- mid <- top; mid and top have extended L2 entries.
struct XlChain {
  std::string base, base_fmt, mid, top, before;
};

XlChain MakeChain(const ScopedTempDir& dir, const XlCase& c) {
  XlChain t;
  t.base_fmt = c.base == Base::kRaw ? "raw" : "qcow2";
  t.base = dir.Sub(c.base == Base::kRaw ? "base.raw" : "base.qcow2");
  t.mid = dir.Sub("mid.qcow2");
  t.top = dir.Sub("top.qcow2");
  t.before = dir.Sub("before.raw");
  const std::string size = std::to_string(c.size);
  switch (c.base) {
    case Base::kRaw:
      Must({"qemu-img", "create", "-q", "-f", "raw", t.base, size});
      break;
    case Base::kQcow2:
      Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o",
            fmt::format("cluster_size={}", c.cluster), t.base, size});
      break;
    case Base::kExtended:
      Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", ExtOpts(c.cluster), t.base, size});
      break;
  }
  WriteMixed(t.base, t.base_fmt, c.size, c.cluster, 50, 11);
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", ExtOpts(c.cluster), "-b", t.base, "-F",
        t.base_fmt, t.mid});
  WriteMixed(t.mid, "qcow2", c.size, c.cluster, 50, 12);
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", ExtOpts(c.cluster), "-b", t.mid, "-F",
        "qcow2", t.top});
  WriteMixed(t.top, "qcow2", c.size, c.cluster, 40, 13);
  Must({"qemu-img", "convert", "-O", "raw", t.top, t.before});
  return t;
}

// What qemu makes of the same rebase: a copy of the top, rebased in safe
// mode by qemu-img (new_backing "" flattens).
std::string QemuRebased(const ScopedTempDir& dir, const XlChain& t, const std::string& new_backing,
                        const std::string& new_fmt) {
  const std::string copy = dir.Sub("qemu-top.qcow2");
  Must({"cp", "--sparse=always", t.top, copy});
  std::vector<std::string> argv = {"qemu-img", "rebase", "-f", "qcow2", "-b", new_backing};
  if (!new_fmt.empty()) argv.insert(argv.end(), {"-F", new_fmt});
  argv.push_back(copy);
  Must(argv);
  return copy;
}

// Returns true if `qemu-img map` of the image alone shows ranges of its own
// that do not start or end on a cluster boundary: subclusters in use.
bool HasSubclusterExtents(const std::string& path, uint64_t cluster) {
  RunResult r = testutil::Run({"qemu-img", "map", "--output=json", "-f", "qcow2", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Result<Json> j = Json::Parse(r.out);
  if (!j.ok() || !j->is_array()) return false;
  for (const Json& e : j->as_array()) {
    const Json* start = e.Find("start");
    const Json* length = e.Find("length");
    if (!start || !length) continue;
    const uint64_t s = start->as_uint(), l = length->as_uint();
    if (s % cluster != 0 || (s + l) % cluster != 0) return true;
  }
  return false;
}

TrustContext DirTrust(const std::string& dir) {
  TrustContext t;
  t.in_pool = [dir](const std::string& p) { return p.rfind(dir + "/", 0) == 0; };
  return t;
}

class RebaseExtendedL2 : public ::testing::TestWithParam<XlCase> {};

// Rebase of the top onto the base (dropping mid): mid's subclusters are
// copied into the top's clusters, next to the top's own subclusters.
TEST_P(RebaseExtendedL2, RebaseOntoBaseMatchesQemuImgRebase) {
  const XlCase& c = GetParam();
  ScopedTempDir dir;
  XlChain t = MakeChain(dir, c);
  ASSERT_TRUE(HasSubclusterExtents(t.top, c.cluster)) << "the chain does not mix subclusters";
  const std::string theirs = QemuRebased(dir, t, t.base, t.base_fmt);
  ImageInspector inspector;
  Status s = SafeRebase(inspector, t.top, t.base, t.base_fmt, DirTrust(dir.path()));
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
  EXPECT_TRUE(Same(t.top, "qcow2", t.before, "raw"));
  EXPECT_TRUE(Same(t.top, "qcow2", theirs, "qcow2"));
  Json info = Info(t.top);
  EXPECT_EQ(StrField(info, "backing-filename"), t.base);
  EXPECT_EQ(StrField(info, "backing-filename-format"), t.base_fmt);
  // Subclusters are copied one by one, not whole clusters.
  EXPECT_TRUE(HasSubclusterExtents(t.top, c.cluster));
  // Running it again finds nothing to copy.
  const std::string after = FileBytes(t.top);
  ASSERT_TRUE(SafeRebase(inspector, t.top, t.base, t.base_fmt, DirTrust(dir.path())).ok());
  EXPECT_EQ(FileBytes(t.top), after);
}

TEST_P(RebaseExtendedL2, FlattenWithChainctlMatchesQemuImgRebase) {
  const XlCase& c = GetParam();
  ScopedTempDir dir;
  XlChain t = MakeChain(dir, c);
  const std::string theirs = QemuRebased(dir, t, "", "");
  RunResult r = RunChainctl({"rebase", "-b", "", t.top});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
  EXPECT_TRUE(Same(t.top, "qcow2", t.before, "raw"));
  EXPECT_TRUE(Same(t.top, "qcow2", theirs, "qcow2"));
  EXPECT_EQ(StrField(Info(t.top), "backing-filename"), "<absent>");
  // Nothing below is needed any more.
  ASSERT_EQ(::unlink(t.mid.c_str()), 0);
  ASSERT_EQ(::unlink(t.base.c_str()), 0);
  EXPECT_TRUE(Same(t.top, "qcow2", t.before, "raw"));
  EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
}

// New backings shorter and longer than the top, themselves with extended L2
// entries and mixed subclusters, named relative to the top's directory.
TEST_P(RebaseExtendedL2, ShorterAndLongerNewBackingsWithChainctl) {
  const XlCase& c = GetParam();
  for (const uint64_t nb_size : {c.size / 2 + c.cluster / 2 + 512, c.size * 2}) {
    SCOPED_TRACE(nb_size);
    ScopedTempDir dir;
    XlChain t = MakeChain(dir, c);
    const std::string nb = dir.Sub("nb.qcow2");
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", ExtOpts(c.cluster), nb,
          std::to_string(nb_size)});
    WriteMixed(nb, "qcow2", nb_size, c.cluster, 40, 19);
    const std::string theirs = QemuRebased(dir, t, "nb.qcow2", "qcow2");
    RunResult r = RunChainctl({"rebase", "-b", "nb.qcow2", "-F", "qcow2", t.top});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_TRUE(testutil::QemuImgCheckClean(t.top));
    EXPECT_TRUE(Same(t.top, "qcow2", t.before, "raw"));
    EXPECT_TRUE(Same(t.top, "qcow2", theirs, "qcow2"));
    Json info = Info(t.top);
    EXPECT_EQ(StrField(info, "backing-filename"), "nb.qcow2");
    EXPECT_EQ(StrField(info, "backing-filename-format"), "qcow2");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Clusters, RebaseExtendedL2,
    ::testing::Values(XlCase{16384, 8 << 20, Base::kExtended}, XlCase{16384, 8 << 20, Base::kRaw},
                      XlCase{65536, 16 << 20, Base::kExtended},
                      XlCase{65536, 16 << 20, Base::kQcow2}, XlCase{262144, 32 << 20, Base::kRaw},
                      XlCase{2u << 20, 64 << 20, Base::kExtended},
                      XlCase{2u << 20, 64 << 20, Base::kQcow2},
                      // A disk that ends inside a subcluster's cluster.
                      XlCase{65536, (8 << 20) + 3 * 512, Base::kExtended}),
    [](const ::testing::TestParamInfo<XlCase>& info) {
      const char* base = info.param.base == Base::kRaw     ? "raw"
                         : info.param.base == Base::kQcow2 ? "qcow2"
                                                           : "xl2";
      return fmt::format("c{}k_{}_base_{}MiB{}", info.param.cluster >> 10, base,
                         info.param.size >> 20, info.param.size % (1 << 20) ? "_odd" : "");
    });

// qemu itself refuses extended L2 below 16 KiB clusters, so there are no
// such images to rebase; the writer refuses a crafted one (see Hostile).
TEST(RebaseExtendedL2Limits, QemuRefusesExtendedL2BelowSixteenKiB) {
  ScopedTempDir dir;
  for (const char* cs : {"4096", "8192"}) {
    RunResult r = testutil::Run({"qemu-img", "create", "-q", "-f", "qcow2", "-o",
                                 fmt::format("extended_l2=on,cluster_size={}", cs),
                                 dir.Sub("small.qcow2"), "1M"});
    EXPECT_NE(r.exit_code, 0) << cs;
  }
}

// Returns true if `qemu-img map` of the image alone shows a compressed
// cluster of its own (qemu 7.2 prints data without an offset for them).
bool HasCompressedClusters(const std::string& path) {
  RunResult r = testutil::Run({"qemu-img", "map", "--output=json", "-f", "qcow2", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Result<Json> j = Json::Parse(r.out);
  if (!j.ok() || !j->is_array()) return false;
  for (const Json& e : j->as_array()) {
    const Json* depth = e.Find("depth");
    const Json* data = e.Find("data");
    if (depth && depth->as_uint() == 0 && data && data->as_bool() && !e.Find("offset")) {
      return true;
    }
  }
  return false;
}

// A top with compressed clusters (qemu-io write -c) and subcluster writes
// around and over them (a write over a compressed cluster makes qemu
// decompress it into a normal one): the compressed clusters are the top's
// own and stay as they are; rebase and flatten keep the content.
TEST(RebaseExtendedL2Compressed, CompressedClustersInTheTop) {
  for (const uint64_t cluster : {uint64_t{65536}, uint64_t{2} << 20}) {
    SCOPED_TRACE(cluster);
    ScopedTempDir dir;
    const uint64_t size = cluster == 65536 ? (16 << 20) : (64 << 20);
    XlChain t = MakeChain(dir, XlCase{cluster, size, Base::kExtended});
    const std::string ctop = dir.Sub("ctop.qcow2");
    Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", ExtOpts(cluster), "-b", t.mid, "-F",
          "qcow2", ctop});
    std::vector<std::string> argv = {"qemu-io", "-f", "qcow2"};
    for (uint64_t c : {1, 2, 5, 9, 10, 11, 17, 30}) {
      argv.insert(argv.end(),
                  {"-c", fmt::format("write -c -P {} {} {}", 0x40 + c, c * cluster, cluster)});
    }
    argv.push_back(ctop);
    Must(argv);
    WriteMixed(ctop, "qcow2", size, cluster, 30, 22);
    ASSERT_TRUE(HasCompressedClusters(ctop));
    const std::string before = dir.Sub("cbefore.raw");
    Must({"qemu-img", "convert", "-O", "raw", ctop, before});
    const std::string theirs = dir.Sub("qemu-ctop.qcow2");
    Must({"cp", "--sparse=always", ctop, theirs});
    Must({"qemu-img", "rebase", "-f", "qcow2", "-b", t.base, "-F", "qcow2", theirs});

    RunResult r = RunChainctl({"rebase", "-b", t.base, "-F", "qcow2", ctop});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_TRUE(testutil::QemuImgCheckClean(ctop));
    EXPECT_TRUE(Same(ctop, "qcow2", before, "raw"));
    EXPECT_TRUE(Same(ctop, "qcow2", theirs, "qcow2"));
    EXPECT_TRUE(HasCompressedClusters(ctop));

    r = RunChainctl({"rebase", "-b", "", ctop});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_TRUE(testutil::QemuImgCheckClean(ctop));
    EXPECT_TRUE(Same(ctop, "qcow2", before, "raw"));
    EXPECT_EQ(StrField(Info(ctop), "backing-filename"), "<absent>");
    EXPECT_TRUE(HasCompressedClusters(ctop));
  }
}

// --- Hostile extended L2 entries ----------------------------------------

// The file offset of the 16-byte L2 entry of guest cluster `cluster`.
uint64_t ExtEntryOffset(const std::string& path, uint64_t cluster) {
  Result<File> f = File::OpenRead(path);
  EXPECT_TRUE(f.ok());
  if (!f.ok()) return 0;
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  EXPECT_TRUE(h.ok() && h->extended_l2());
  if (!h.ok()) return 0;
  const uint64_t per_table = h->cluster_size() / 16;
  uint8_t b[8];
  EXPECT_TRUE(ReadExact(*f, h->l1_table_offset + (cluster / per_table) * 8, b, "L1").ok());
  const uint64_t l2 = LoadBe64(b) & 0x00fffffffffffe00ull;
  EXPECT_NE(l2, 0u);
  return l2 + (cluster % per_table) * 16;
}

void PatchBe64(const std::string& path, uint64_t offset, uint64_t value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint8_t b[8];
  StoreBe64(b, value);
  f.seekp(std::streamoff(offset));
  f.write(reinterpret_cast<const char*>(b), 8);
  ASSERT_TRUE(f.good());
}

uint64_t ReadBe64At(const std::string& path, uint64_t offset) {
  const std::string bytes = FileBytes(path);
  EXPECT_GE(bytes.size(), offset + 8);
  if (bytes.size() < offset + 8) return 0;
  return LoadBe64(reinterpret_cast<const uint8_t*>(bytes.data()) + offset);
}

// A top whose cluster 0 holds data in subcluster 0 only, over a base with
// data everywhere: a flatten must write subclusters 1..31 of cluster 0.
struct HostileChain {
  std::string base, top;
};

HostileChain MakeHostileChain(const ScopedTempDir& dir) {
  HostileChain h{dir.Sub("base.qcow2"), dir.Sub("top.qcow2")};
  Must({"qemu-img", "create", "-q", "-f", "qcow2", h.base, "1M"});
  Must({"qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 1M", h.base});
  Must({"qemu-img", "create", "-q", "-f", "qcow2", "-o", ExtOpts(65536), "-b", h.base, "-F",
        "qcow2", h.top});
  Must({"qemu-io", "-f", "qcow2", "-c", "write -P 0x66 0 2k", h.top});
  return h;
}

TEST(RebaseExtendedL2Hostile, ReservedDescriptorBitIsRefusedAndChangesNothing) {
  ScopedTempDir dir;
  HostileChain h = MakeHostileChain(dir);
  const uint64_t at = ExtEntryOffset(h.top, 0);
  // Bit 0 (the standard zero flag) is reserved with extended L2 entries.
  PatchBe64(h.top, at, ReadBe64At(h.top, at) | 1);
  const std::string before = FileBytes(h.top);
  RunResult r = RunChainctl({"rebase", "-b", "", h.top});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("reserved bits"), std::string::npos) << r.err;
  EXPECT_EQ(FileBytes(h.top), before);
}

TEST(RebaseExtendedL2Hostile, InconsistentSubclusterBitmapsAreRefusedAndChangeNothing) {
  struct Bad {
    const char* what;
    std::function<uint64_t(uint64_t)> bitmap;  // from the good one
    bool drop_host;
  };
  const std::vector<Bad> cases = {
      {"allocated and zero", [](uint64_t b) { return b | (1ull << 32); }, false},
      {"allocation without host", [](uint64_t b) { return b; }, true},
  };
  for (const Bad& bad : cases) {
    SCOPED_TRACE(bad.what);
    ScopedTempDir dir;
    HostileChain h = MakeHostileChain(dir);
    const uint64_t at = ExtEntryOffset(h.top, 0);
    PatchBe64(h.top, at + 8, bad.bitmap(ReadBe64At(h.top, at + 8)));
    if (bad.drop_host) PatchBe64(h.top, at, 0);
    const std::string before = FileBytes(h.top);
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"rebase", "-b", "", h.top},
          std::vector<std::string>{"rebase", "-b", "base.qcow2", "-F", "qcow2", h.top}}) {
      RunResult r = RunChainctl(args);
      EXPECT_NE(r.exit_code, 0);
      EXPECT_NE(r.err.find("subclusters"), std::string::npos) << r.err;
      EXPECT_EQ(FileBytes(h.top), before);
    }
    // The same through the core API: a clear error, not a crash.
    ImageInspector inspector;
    Status s = SafeRebase(inspector, h.top, std::nullopt, std::nullopt, DirTrust(dir.path()));
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(FileBytes(h.top), before);
  }
}

}  // namespace
}  // namespace chainfs::core
