// The qcow2/raw writer, in-use detection, overlay creation, retargets and
// the volume XML parser, without qemu (tests/interop has the qemu checks).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/format/qcow2/writer.h"
#include "core/io/file.h"
#include "core/util/endian.h"
#include "core/write/create.h"
#include "core/write/in_use.h"
#include "core/write/retarget.h"
#include "core/write/volume_xml_parse.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::CraftOptions;
using testutil::ScopedTempDir;

// Lays a plan out as the bytes of the file it describes.
std::vector<uint8_t> Materialize(const ImagePlan& plan) {
  std::vector<uint8_t> out(plan.file_size, 0);
  for (const ImageExtent& e : plan.extents) {
    EXPECT_LE(e.offset + e.bytes.size(), out.size());
    std::copy(e.bytes.begin(), e.bytes.end(), out.begin() + long(e.offset));
  }
  return out;
}

std::vector<uint8_t> Plan(const Qcow2CreateOptions& o) {
  Result<ImagePlan> p = PlanQcow2Image(o);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? Materialize(*p) : std::vector<uint8_t>{};
}

Qcow2Header ParseBytes(const std::vector<uint8_t>& bytes) {
  MemoryReader r(bytes);
  Result<Qcow2Header> h = ParseQcow2Header(r);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? *h : Qcow2Header{};
}

// Counts references of every cluster from the refcount structures and checks
// that each cluster of the file has refcount 1 and nothing beyond it is used.
void ExpectRefcountsCoverFile(const std::vector<uint8_t>& img) {
  Qcow2Header h = ParseBytes(img);
  const uint64_t cs = h.cluster_size();
  ASSERT_EQ(img.size() % cs, 0u);
  const uint64_t clusters = img.size() / cs;
  const uint64_t per_block = cs * 8 / h.refcount_bits();
  std::vector<uint64_t> rc;
  for (uint64_t i = 0; i < uint64_t{h.refcount_table_clusters} * cs / 8; ++i) {
    uint64_t block = LoadBe64(img.data() + h.refcount_table_offset + i * 8);
    if (block == 0) continue;
    ASSERT_LT(block, img.size());
    for (uint64_t j = 0; j < per_block; ++j) {
      uint64_t cluster = i * per_block + j;
      uint16_t v = LoadBe16(img.data() + block + j * 2);
      if (rc.size() <= cluster) rc.resize(cluster + 1, 0);
      rc[cluster] = v;
    }
  }
  ASSERT_GE(rc.size(), clusters);
  for (uint64_t c = 0; c < rc.size(); ++c) {
    EXPECT_EQ(rc[c], c < clusters ? 1u : 0u) << "cluster " << c;
  }
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Name -> contents of every file of a directory: "nothing changed" checks.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out[e.path().filename().string()] = ReadAll(e.path().string());
  }
  return out;
}

// --- Planning -----------------------------------------------------------

TEST(Qcow2Writer, PlansDefaultV3ImageAsQemuLaysItOut) {
  Qcow2CreateOptions o;
  o.size = 64ull << 20;
  std::vector<uint8_t> img = Plan(o);
  Qcow2Header h = ParseBytes(img);
  EXPECT_EQ(h.version, 3u);
  EXPECT_EQ(h.size, 64ull << 20);
  EXPECT_EQ(h.cluster_bits, 16u);
  EXPECT_EQ(h.header_length, 112u);
  EXPECT_EQ(h.refcount_order, 4u);
  EXPECT_EQ(h.refcount_table_offset, 0x10000u);
  EXPECT_EQ(h.refcount_table_clusters, 1u);
  EXPECT_EQ(h.l1_table_offset, 0x30000u);
  EXPECT_EQ(h.l1_size, 1u);
  EXPECT_EQ(img.size(), 4u * 0x10000);
  EXPECT_FALSE(h.backing_file);
  EXPECT_EQ(h.FeatureName(0, 4), "extended L2 entries");
  EXPECT_EQ(h.FeatureName(1, 0), "lazy refcounts");
  EXPECT_TRUE(h.problems.empty()) << h.problems[0];
  ExpectRefcountsCoverFile(img);
}

TEST(Qcow2Writer, RoundsVirtualSizeUpTo512) {
  Qcow2CreateOptions o;
  o.size = 1000;
  EXPECT_EQ(ParseBytes(Plan(o)).size, 1024u);
}

TEST(Qcow2Writer, PlansEmptyImageWithoutL1Table) {
  Qcow2CreateOptions o;
  o.size = 0;
  Qcow2Header h = ParseBytes(Plan(o));
  EXPECT_EQ(h.l1_size, 0u);
  EXPECT_EQ(h.l1_table_offset, 0u);
}

TEST(Qcow2Writer, PlansV2ImageWithBackingAndFormat) {
  Qcow2CreateOptions o;
  o.version = 2;
  o.size = 1ull << 30;
  o.backing = "../base dir/base.qcow2";
  o.backing_format = "qcow2";
  std::vector<uint8_t> img = Plan(o);
  Qcow2Header h = ParseBytes(img);
  EXPECT_EQ(h.version, 2u);
  EXPECT_EQ(h.header_length, 72u);
  ASSERT_TRUE(h.backing_file);
  EXPECT_EQ(*h.backing_file, "../base dir/base.qcow2");
  ASSERT_TRUE(h.backing_format);
  EXPECT_EQ(*h.backing_format, "qcow2");
  EXPECT_TRUE(h.feature_names.empty());  // v2 has no feature table
  EXPECT_EQ(h.l1_size, 2u);
  ExpectRefcountsCoverFile(img);
}

TEST(Qcow2Writer, PlansFeatureBits) {
  Qcow2CreateOptions o;
  o.size = 10ull << 30;
  o.cluster_size = 128 * 1024;
  o.lazy_refcounts = true;
  o.extended_l2 = true;
  Qcow2Header h = ParseBytes(Plan(o));
  EXPECT_TRUE(h.lazy_refcounts());
  EXPECT_TRUE(h.extended_l2());
  EXPECT_EQ(h.cluster_bits, 17u);
  // 128K clusters with 16-byte entries: 8192 entries of 128K = 1 GiB per L1 entry.
  EXPECT_EQ(h.l1_size, 10u);
}

TEST(Qcow2Writer, LeavesFeatureTableOutOfSmallClustersAsQemuDoes) {
  Qcow2CreateOptions o;
  o.size = 1 << 20;
  o.cluster_size = 4096;
  EXPECT_TRUE(ParseBytes(Plan(o)).feature_names.empty());
  o.cluster_size = 8192;
  EXPECT_FALSE(ParseBytes(Plan(o)).feature_names.empty());
}

TEST(Qcow2Writer, CoversLargeTablesWithSeveralRefcountBlocks) {
  Qcow2CreateOptions o;
  o.cluster_size = 512;
  o.size = 4ull << 30;  // 512-byte clusters: L1 of 131072 entries = 2048 clusters
  std::vector<uint8_t> img = Plan(o);
  Qcow2Header h = ParseBytes(img);
  EXPECT_EQ(h.l1_size, 131072u);
  EXPECT_GT(img.size() / 512, 256u * 8);  // more than 8 refcount blocks' worth
  ExpectRefcountsCoverFile(img);
}

TEST(Qcow2Writer, RejectsBadOptions) {
  auto code = [](Qcow2CreateOptions o) { return PlanQcow2Image(o).status().code(); };
  Qcow2CreateOptions base;
  base.size = 1 << 20;
  Qcow2CreateOptions o = base;
  o.cluster_size = 3000;
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.cluster_size = 4u << 20;
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.cluster_size = 256;
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.version = 2;
  o.lazy_refcounts = true;
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.extended_l2 = true;
  o.cluster_size = 8192;
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.version = 4;
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.backing_format = "qcow2";  // no backing
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.backing = std::string(1024, 'a');
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.backing = std::string("a\0b", 3);
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.backing = "b";
  o.backing_format = "QCOW2 !";
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.size = ~0ull;
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.cluster_size = 512;
  o.size = 1ull << 50;  // L1 over 32 MiB
  EXPECT_EQ(code(o), Code::kInvalidArgument);
  o = base;
  o.cluster_size = 512;
  o.backing = std::string(500, 'x');  // does not fit in a 512-byte header cluster
  EXPECT_EQ(code(o), Code::kInvalidArgument);
}

// --- Header area rewrite (pure) ----------------------------------------------

struct Rebuilt {
  Qcow2Header header;
  std::vector<uint8_t> area;
};

Result<Rebuilt> Rebuild(const CraftOptions& c, const std::optional<std::string>& backing,
                        const std::optional<std::string>& format) {
  std::vector<uint8_t> img = testutil::CraftQcow2Image(c);
  Qcow2Header h = ParseBytes(img);
  std::vector<uint8_t> fixed(img.begin(), img.begin() + h.header_length);
  Result<std::vector<uint8_t>> area = BuildQcow2HeaderArea(h, fixed, backing, format);
  if (!area.ok()) return area.status();
  std::copy(area->begin(), area->end(), img.begin());
  std::fill(img.begin() + long(area->size()), img.begin() + long(h.cluster_size()), 0);
  return Rebuilt{ParseBytes(img), *area};
}

TEST(Qcow2HeaderRewrite, SetsStringAndInsertsFormatFirst) {
  CraftOptions c;
  c.feature_table = true;
  c.extra_extensions = {{0x12345678, 0, {1, 2, 3}}};
  Result<Rebuilt> r = Rebuild(c, "new.qcow2", "qcow2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Qcow2Header& h = r->header;
  ASSERT_TRUE(h.backing_file);
  EXPECT_EQ(*h.backing_file, "new.qcow2");
  EXPECT_EQ(*h.backing_format, "qcow2");
  ASSERT_EQ(h.extensions.size(), 3u);
  EXPECT_EQ(h.extensions[0].type, kQcow2ExtBackingFormat);
  EXPECT_EQ(h.extensions[1].type, kQcow2ExtFeatureTable);
  EXPECT_EQ(h.extensions[2].type, 0x12345678u);
  EXPECT_EQ(h.extensions[2].data, (std::vector<uint8_t>{1, 2, 3}));
}

TEST(Qcow2HeaderRewrite, ReplacesFormatInPlaceAndKeepsOrder) {
  CraftOptions c;
  c.backing = "old";
  c.extra_extensions = {{0x11111111, 0, {9}}};
  c.backing_format = "raw";
  Result<Rebuilt> before = Rebuild(c, "old", "raw");
  ASSERT_TRUE(before.ok());
  Result<Rebuilt> r = Rebuild(c, "a/much/longer/backing/name.qcow2", "qcow2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r->header.backing_format, "qcow2");
  EXPECT_EQ(*r->header.backing_file, "a/much/longer/backing/name.qcow2");
  ASSERT_EQ(r->header.extensions.size(), before->header.extensions.size());
  for (size_t i = 0; i < r->header.extensions.size(); ++i) {
    EXPECT_EQ(r->header.extensions[i].type, before->header.extensions[i].type);
  }
}

TEST(Qcow2HeaderRewrite, ClearsStringAndFormat) {
  CraftOptions c;
  c.backing = "old";
  c.backing_format = "qcow2";
  Result<Rebuilt> r = Rebuild(c, std::nullopt, std::nullopt);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->header.backing_file);
  EXPECT_FALSE(r->header.backing_format);
  EXPECT_EQ(r->header.backing_file_offset, 0u);
}

TEST(Qcow2HeaderRewrite, DropsFeatureTableBeforeGivingUpOnSpace) {
  CraftOptions c;
  c.cluster_bits = 10;  // 1 KiB header cluster: 112 + 392 + 8 leaves ~500 bytes
  c.feature_table = true;
  std::string name(700, 'n');
  Result<Rebuilt> r = Rebuild(c, name, "raw");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r->header.backing_file, name);
  EXPECT_TRUE(r->header.feature_names.empty());
  // A short name keeps the table.
  r = Rebuild(c, "short", "raw");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->header.feature_names.empty());
}

TEST(Qcow2HeaderRewrite, RefusesStringThatDoesNotFitTheHeaderCluster) {
  CraftOptions c;
  c.cluster_bits = 9;
  c.extra_extensions = {{0x22222222, 0, std::vector<uint8_t>(64, 7)}};
  Result<Rebuilt> r = Rebuild(c, std::string(400, 'x'), "qcow2");
  EXPECT_EQ(r.status().code(), Code::kNoSpace);
}

TEST(Qcow2HeaderRewrite, KeepsUnknownTrailingHeaderFields) {
  CraftOptions c;
  c.header_length = 120;
  std::vector<uint8_t> img = testutil::CraftQcow2Image(c);
  img[115] = 0xab;  // an unknown header field
  Qcow2Header h = ParseBytes(img);
  std::vector<uint8_t> fixed(img.begin(), img.begin() + 120);
  Result<std::vector<uint8_t>> area = BuildQcow2HeaderArea(h, fixed, "b", "raw");
  ASSERT_TRUE(area.ok());
  EXPECT_EQ((*area)[115], 0xab);
  EXPECT_EQ(LoadBe64(area->data() + kQcow2OffBackingFileOffset), area->size() - 1);
}

// --- Files on disk ---------------------------------------------------------

TEST(Qcow2Writer, CreatesFileWithModeAndLeavesNoTemporaryFile) {
  for (bool tmpfile : {true, false}) {
    ScopedTempDir dir;
    Qcow2CreateOptions o;
    o.size = 1 << 20;
    o.file.mode = 0640;
    o.file.allow_o_tmpfile = tmpfile;
    ASSERT_TRUE(CreateQcow2(dir.Sub("a.qcow2"), o).ok());
    EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>{"a.qcow2"});
    struct stat st;
    ASSERT_EQ(::stat(dir.Sub("a.qcow2").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    EXPECT_EQ(uint64_t(st.st_size), 4u * 65536);
    Result<File> f = File::OpenRead(dir.Sub("a.qcow2"));
    ASSERT_TRUE(f.ok());
    Result<Qcow2Header> h = ParseQcow2Header(*f);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->size, 1u << 20);
  }
}

TEST(Qcow2Writer, NeverOverwritesAnExistingName) {
  for (bool tmpfile : {true, false}) {
    ScopedTempDir dir;
    ASSERT_TRUE(testutil::WriteBytes(dir.Sub("taken"), {1, 2, 3}).ok());
    Qcow2CreateOptions o;
    o.size = 1 << 20;
    o.file.allow_o_tmpfile = tmpfile;
    EXPECT_EQ(CreateQcow2(dir.Sub("taken"), o).code(), Code::kExists);
    EXPECT_EQ(CreateRaw(dir.Sub("taken"), 10, o.file).code(), Code::kExists);
    EXPECT_EQ(ReadAll(dir.Sub("taken")), std::string("\1\2\3"));
    EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>{"taken"});
  }
}

TEST(Qcow2Writer, RemovesTemporaryFileWhenFillingFails) {
  for (bool tmpfile : {true, false}) {
    ScopedTempDir dir;
    NewFileOptions o;
    o.allow_o_tmpfile = tmpfile;
    Status s = CreateFileAtomically(dir.Sub("x"), o, [](int fd) {
      EXPECT_EQ(::write(fd, "partial", 7), 7);
      return Status(Code::kNoSpace, "simulated ENOSPC");
    });
    EXPECT_EQ(s.code(), Code::kNoSpace);
    EXPECT_TRUE(ListDir(dir.path()).empty());
  }
}

TEST(Qcow2Writer, ReportsMissingDirectory) {
  ScopedTempDir dir;
  EXPECT_EQ(CreateRaw(dir.Sub("no/such/dir/x"), 10).code(), Code::kNotFound);
  EXPECT_EQ(CreateRaw(dir.path() + "/", 10).code(), Code::kInvalidArgument);
}

TEST(RawWriter, CreatesSparseFileOfTheSize) {
  ScopedTempDir dir;
  ASSERT_TRUE(CreateRaw(dir.Sub("r.img"), 10ull << 30).ok());
  struct stat st;
  ASSERT_EQ(::stat(dir.Sub("r.img").c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), 10ull << 30);
  EXPECT_EQ(st.st_blocks, 0);
}

// --- In-place rewrite on disk ----------------------------------------------

TEST(RewriteBacking, RewritesCraftedImageKeepingExtensions) {
  ScopedTempDir dir;
  CraftOptions c;
  c.feature_table = true;
  c.backing = "old.qcow2";
  c.backing_format = "qcow2";
  c.extra_extensions = {{0x33333333, 0, {5, 6, 7, 8, 9}}};
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("img"), c).ok());
  std::string before = ReadAll(dir.Sub("img"));
  ASSERT_TRUE(RewriteBacking(dir.Sub("img"), "/abs/new.raw", "raw").ok());
  std::string after = ReadAll(dir.Sub("img"));
  ASSERT_EQ(before.size(), after.size());
  EXPECT_EQ(before.substr(65536), after.substr(65536));  // only cluster 0 changed
  Result<File> f = File::OpenRead(dir.Sub("img"));
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h->backing_file, "/abs/new.raw");
  EXPECT_EQ(*h->backing_format, "raw");
  EXPECT_FALSE(h->feature_names.empty());
  ASSERT_EQ(h->extensions.back().type, 0x33333333u);
  EXPECT_EQ(h->extensions.back().data, (std::vector<uint8_t>{5, 6, 7, 8, 9}));

  ASSERT_TRUE(RewriteBackingFormat(dir.Sub("img"), "qcow2").ok());
  f = File::OpenRead(dir.Sub("img"));
  h = ParseQcow2Header(*f);
  EXPECT_EQ(*h->backing_file, "/abs/new.raw");
  EXPECT_EQ(*h->backing_format, "qcow2");
}

TEST(RewriteBacking, RefusesWithoutChangingAnything) {
  ScopedTempDir dir;
  CraftOptions c;
  c.backing = "old";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("img"), c).ok());
  ASSERT_TRUE(testutil::WriteBytes(dir.Sub("raw"), std::vector<uint8_t>(4096, 0)).ok());
  CraftOptions plain;
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("nobacking"), plain).ok());
  auto snap = Snapshot(dir.path());
  EXPECT_EQ(RewriteBacking(dir.Sub("img"), std::string(1024, 'a'), "raw").code(),
            Code::kInvalidArgument);
  EXPECT_EQ(RewriteBacking(dir.Sub("img"), std::string("a\0b", 3), "raw").code(),
            Code::kInvalidArgument);
  EXPECT_EQ(RewriteBacking(dir.Sub("img"), std::nullopt, "raw").code(), Code::kInvalidArgument);
  EXPECT_EQ(RewriteBacking(dir.Sub("raw"), "x", "raw").code(), Code::kUnsupported);
  EXPECT_EQ(RewriteBacking(dir.Sub("missing"), "x", "raw").code(), Code::kNotFound);
  EXPECT_EQ(RewriteBackingFormat(dir.Sub("nobacking"), "raw").code(), Code::kInvalidArgument);
  EXPECT_EQ(RewriteBackingFormat(dir.Sub("img"), "Not A Format").code(), Code::kInvalidArgument);
  EXPECT_EQ(Snapshot(dir.path()), snap);
}

TEST(RewriteBacking, RefusesImageMarkedCorrupt) {
  ScopedTempDir dir;
  CraftOptions c;
  c.incompatible_features = kQcow2IncompatCorrupt;
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("img"), c).ok());
  std::string before = ReadAll(dir.Sub("img"));
  EXPECT_EQ(RewriteBacking(dir.Sub("img"), "x", "raw").code(), Code::kCorrupt);
  EXPECT_EQ(ReadAll(dir.Sub("img")), before);
}

// --- In use ------------------------------------------------------------------

// Holds a lock as QEMU does: an OFD read lock on one byte, through its own
// open file description.
class HeldLock {
 public:
  HeldLock(const std::string& path, off_t byte) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    EXPECT_EQ(::fcntl(fd_, F_OFD_SETLK, &fl), 0) << std::strerror(errno);
  }
  ~HeldLock() { ::close(fd_); }

 private:
  int fd_;
};

TEST(InUse, DetectsQemuStyleLocks) {
  ScopedTempDir dir;
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("img"), CraftOptions{}).ok());
  Result<bool> free = ImageInUse(dir.Sub("img"));
  ASSERT_TRUE(free.ok());
  EXPECT_FALSE(*free);
  EXPECT_TRUE(CheckNotInUse(dir.Sub("img")).ok());
  for (off_t byte : {0, 100, 101, 201, 203}) {
    HeldLock lock(dir.Sub("img"), byte);
    Result<bool> busy = ImageInUse(dir.Sub("img"));
    ASSERT_TRUE(busy.ok());
    EXPECT_TRUE(*busy) << "byte " << byte;
    EXPECT_EQ(CheckNotInUse(dir.Sub("img")).code(), Code::kBusy);
  }
  {
    HeldLock unrelated(dir.Sub("img"), 4096);
    EXPECT_FALSE(*ImageInUse(dir.Sub("img")));
  }
  EXPECT_EQ(ImageInUse(dir.Sub("missing")).status().code(), Code::kNotFound);
}

TEST(InUse, RewriteRefusesLockedImage) {
  ScopedTempDir dir;
  CraftOptions c;
  c.backing = "old";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("img"), c).ok());
  std::string before = ReadAll(dir.Sub("img"));
  HeldLock lock(dir.Sub("img"), 201);
  EXPECT_EQ(RewriteBacking(dir.Sub("img"), "new", "raw").code(), Code::kBusy);
  EXPECT_EQ(SetBackingFormat(dir.Sub("img"), "raw").code(), Code::kBusy);
  EXPECT_EQ(ReadAll(dir.Sub("img")), before);
}

TEST(InUse, UpdateLockKeepsOthersOut) {
  ScopedTempDir dir;
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("img"), CraftOptions{}).ok());
  int fd = ::open(dir.Sub("img").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(LockForUpdate(fd, dir.Sub("img")).ok());
  EXPECT_TRUE(*ImageInUse(dir.Sub("img")));
  EXPECT_EQ(RewriteBacking(dir.Sub("img"), "x", "raw").code(), Code::kBusy);
  ::close(fd);
  EXPECT_FALSE(*ImageInUse(dir.Sub("img")));
}

// --- Overlays and retargets ---------------------------------------------------

TrustContext PoolTrust(const std::string& pool_dir) {
  TrustContext t;
  t.in_pool = [pool_dir](const std::string& p) { return p.rfind(pool_dir + "/", 0) == 0; };
  return t;
}

TEST(CreateOverlay, RecordsStringAsWrittenAndTrustedFormat) {
  ScopedTempDir dir;
  ASSERT_TRUE(CreateRaw(dir.Sub("base.raw"), 5000).ok());
  ImageInspector insp;
  ASSERT_TRUE(CreateOverlay(insp, dir.Sub("top.qcow2"), "base.raw", dir.Sub("base.raw"),
                            std::nullopt, PoolTrust(dir.path()))
                  .ok());
  Result<File> f = File::OpenRead(dir.Sub("top.qcow2"));
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, 3u);
  EXPECT_EQ(*h->backing_file, "base.raw");
  EXPECT_EQ(*h->backing_format, "raw");
  EXPECT_EQ(h->size, 5120u);  // the backing's size, rounded to 512 as qemu does
}

TEST(CreateOverlay, RefusesWithoutChangingAnything) {
  ScopedTempDir dir;
  ASSERT_TRUE(CreateRaw(dir.Sub("base.raw"), 1 << 20).ok());
  // A "raw" volume whose content is a qcow2 header pointing outside the pool.
  CraftOptions evil;
  evil.backing = "/etc/shadow";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("evil.img"), evil).ok());
  ASSERT_TRUE(testutil::WriteBytes(dir.Sub("taken"), {1}).ok());
  auto snap = Snapshot(dir.path());
  ImageInspector insp;
  TrustContext trust = PoolTrust(dir.path());
  EXPECT_EQ(
      CreateOverlay(insp, dir.Sub("a"), "missing", dir.Sub("missing"), std::nullopt, trust).code(),
      Code::kNotFound);
  EXPECT_EQ(CreateOverlay(insp, dir.Sub("a"), "evil.img", dir.Sub("evil.img"), std::nullopt, trust)
                .code(),
            Code::kPermissionDenied);
  EXPECT_EQ(
      CreateOverlay(insp, dir.Sub("taken"), "base.raw", dir.Sub("base.raw"), std::nullopt, trust)
          .code(),
      Code::kExists);
  EXPECT_EQ(
      CreateOverlay(insp, dir.Sub("a"), "base.raw", dir.Sub("base.raw"), "nosuchfmt", trust).code(),
      Code::kInvalidArgument);
  EXPECT_EQ(CreateOverlay(insp, dir.Sub("a"), "", dir.Sub("base.raw"), std::nullopt, trust).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(Snapshot(dir.path()), snap);
  // Declaring the format explicitly is the documented way out.
  EXPECT_TRUE(
      CreateOverlay(insp, dir.Sub("a"), "evil.img", dir.Sub("evil.img"), "raw", trust).ok());
}

TEST(Retarget, KeepsRecordedFormatAndResolvesRelativeToImage) {
  ScopedTempDir dir;
  std::filesystem::create_directory(dir.Sub("sub"));
  ASSERT_TRUE(CreateRaw(dir.Sub("base1"), 1 << 20).ok());
  ASSERT_TRUE(CreateRaw(dir.Sub("base2"), 1 << 20).ok());
  ImageInspector insp;
  TrustContext trust = PoolTrust(dir.path());
  ASSERT_TRUE(
      CreateOverlay(insp, dir.Sub("sub/top"), "../base1", dir.Sub("base1"), "raw", trust).ok());
  ASSERT_TRUE(Retarget(insp, dir.Sub("sub/top"), "../base2", trust).ok());
  Result<File> f = File::OpenRead(dir.Sub("sub/top"));
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  EXPECT_EQ(*h->backing_file, "../base2");
  EXPECT_EQ(*h->backing_format, "raw");
  // "base2" next to the image does not exist: relative means relative.
  std::string before = ReadAll(dir.Sub("sub/top"));
  EXPECT_EQ(Retarget(insp, dir.Sub("sub/top"), "base2", trust).code(), Code::kNotFound);
  EXPECT_EQ(Retarget(insp, dir.Sub("sub/top"), "", trust).code(), Code::kInvalidArgument);
  EXPECT_EQ(Retarget(insp, dir.Sub("base1"), "base2", trust).code(), Code::kUnsupported);
  EXPECT_EQ(ReadAll(dir.Sub("sub/top")), before);
}

TEST(Retarget, DeterminesFormatWhenNoneIsRecorded) {
  ScopedTempDir dir;
  ASSERT_TRUE(CreateRaw(dir.Sub("base"), 1 << 20).ok());
  CraftOptions c;
  c.backing = "base";  // no format recorded
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("top"), c).ok());
  CraftOptions evil;
  evil.backing = "/etc/shadow";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("evil"), evil).ok());
  ImageInspector insp;
  TrustContext trust = PoolTrust(dir.path());
  std::string before = ReadAll(dir.Sub("top"));
  EXPECT_EQ(Retarget(insp, dir.Sub("top"), "evil", trust).code(), Code::kPermissionDenied);
  EXPECT_EQ(ReadAll(dir.Sub("top")), before);
  ASSERT_TRUE(Retarget(insp, dir.Sub("top"), dir.Sub("base"), trust).ok());
  Result<File> f = File::OpenRead(dir.Sub("top"));
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  EXPECT_EQ(*h->backing_file, dir.Sub("base"));
  EXPECT_EQ(*h->backing_format, "raw");
}

TEST(SetBackingFormat, RecordsKnownFormatsOnly) {
  ScopedTempDir dir;
  CraftOptions c;
  c.backing = "base";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("top"), c).ok());
  std::string before = ReadAll(dir.Sub("top"));
  EXPECT_EQ(SetBackingFormat(dir.Sub("top"), "qcow9").code(), Code::kInvalidArgument);
  EXPECT_EQ(ReadAll(dir.Sub("top")), before);
  ASSERT_TRUE(SetBackingFormat(dir.Sub("top"), "vmdk").ok());
  Result<File> f = File::OpenRead(dir.Sub("top"));
  Result<Qcow2Header> h = ParseQcow2Header(*f);
  EXPECT_EQ(*h->backing_file, "base");
  EXPECT_EQ(*h->backing_format, "vmdk");
}

// --- Volume XML ----------------------------------------------------------------

TEST(VolumeXml, ParsesEverySupportedElement) {
  Result<VolumeSpec> v = ParseVolumeXml(R"(<volume type='file'>
  <name>disk1.qcow2</name>
  <capacity unit='G'>10</capacity>
  <allocation unit='bytes'>0</allocation>
  <target>
    <path>/ignored/path</path>
    <format type='qcow2'/>
    <permissions><mode>0640</mode><owner>107</owner><group>-1</group></permissions>
    <compat>1.1</compat>
    <clusterSize unit='KiB'>128</clusterSize>
    <features><lazy_refcounts/><extended_l2/></features>
  </target>
  <backingStore><path>/pool/base.qcow2</path><format type='qcow2'/></backingStore>
</volume>)");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->name, "disk1.qcow2");
  EXPECT_EQ(*v->capacity, 10ull << 30);
  EXPECT_EQ(v->format, "qcow2");
  EXPECT_EQ(*v->compat, "1.1");
  EXPECT_EQ(*v->cluster_size, 128u * 1024);
  EXPECT_TRUE(v->lazy_refcounts);
  EXPECT_TRUE(v->extended_l2);
  EXPECT_EQ(*v->backing_path, "/pool/base.qcow2");
  EXPECT_EQ(*v->backing_format, "qcow2");
  EXPECT_EQ(*v->mode, 0640u);
  EXPECT_EQ(*v->owner, 107u);
  EXPECT_FALSE(v->group);
}

TEST(VolumeXml, DefaultsToRawInBytes) {
  Result<VolumeSpec> v = ParseVolumeXml("<volume><name>r</name><capacity>4096</capacity></volume>");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->format, "raw");
  EXPECT_EQ(*v->capacity, 4096u);
  EXPECT_FALSE(v->backing_path);
}

TEST(VolumeXml, ScalesUnitsAsLibvirt) {
  struct Case {
    const char* unit;
    uint64_t bytes;
  } cases[] = {{"", 3},           {"b", 3},          {"bytes", 3},      {"byte", 3},
               {"k", 3072},       {"KiB", 3072},     {"KB", 3000},      {"kb", 3000},
               {"M", 3ull << 20}, {"MB", 3000000},   {"G", 3ull << 30}, {"GiB", 3ull << 30},
               {"T", 3ull << 40}, {"P", 3ull << 50}, {"E", 3ull << 60}};
  for (const Case& c : cases) {
    Result<uint64_t> v = ScaleLibvirtUnit(3, c.unit);
    ASSERT_TRUE(v.ok()) << c.unit;
    EXPECT_EQ(*v, c.bytes) << c.unit;
  }
  EXPECT_EQ(ScaleLibvirtUnit(3, "Q").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ScaleLibvirtUnit(3, "KX").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ScaleLibvirtUnit(16, "E").status().code(), Code::kInvalidArgument);  // 2^64
}

TEST(VolumeXml, RejectsBadDocumentsWithOneLineReason) {
  const char* bad[] = {
      "",
      "<volume><name>x</name>",                                   // not well-formed
      "<pool><name>x</name><capacity>1</capacity></pool>",        // wrong root
      "<volume><capacity>1</capacity></volume>",                  // no name
      "<volume><name>a/b</name><capacity>1</capacity></volume>",  // slash
      "<volume><name>..</name><capacity>1</capacity></volume>",
      "<volume><name>x</name></volume>",  // no capacity
      "<volume><name>x</name><capacity>-1</capacity></volume>",
      "<volume><name>x</name><capacity>12abc</capacity></volume>",
      "<volume><name>x</name><capacity unit='Q'>1</capacity></volume>",
      "<volume><name>x</name><capacity>99999999999999999999999</capacity></volume>",
      "<volume><name>x</name><capacity>1</capacity><target><format type='vmdk'/></target>"
      "</volume>",
      "<volume><name>x</name><capacity>1</capacity><target><format type='qcow2'/>"
      "<compat>0.9</compat></target></volume>",
      "<volume><name>x</name><capacity>1</capacity><target><format type='qcow2'/>"
      "<clusterSize>1000</clusterSize></target></volume>",
      "<volume><name>x</name><capacity>1</capacity><target><compat>1.1</compat></target>"
      "</volume>",  // compat on raw
      "<volume><name>x</name><capacity>1</capacity><target><format type='qcow2'/>"
      "<compat>0.10</compat><features><lazy_refcounts/></features></target></volume>",
      "<volume><name>x</name><capacity>1</capacity><target><format type='qcow2'/>"
      "<features><bogus/></features></target></volume>",
      "<volume><name>x</name><capacity>1</capacity><target><permissions><mode>0999</mode>"
      "</permissions></target></volume>",
      "<volume><name>x</name><capacity>1</capacity><target><permissions><owner>abc</owner>"
      "</permissions></target></volume>",
      "<volume><name>x</name><capacity>1</capacity><backingStore><path>/b</path>"
      "</backingStore></volume>",  // backing on raw
      "<volume type='block'><name>x</name><capacity>1</capacity></volume>",
  };
  for (const char* xml : bad) {
    Result<VolumeSpec> v = ParseVolumeXml(xml);
    ASSERT_FALSE(v.ok()) << xml;
    EXPECT_EQ(v.status().code(), Code::kInvalidArgument) << xml;
    EXPECT_EQ(v.status().message().find('\n'), std::string::npos) << v.status().message();
  }
}

}  // namespace
}  // namespace chainfs::core
