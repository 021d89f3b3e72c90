// Tests for the non-qcow2, non-raw format drivers: real images made by
// qemu-img at test time agree with `qemu-img info --output=json`; formats
// qemu-img cannot make are crafted here; hostile inputs never crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/format/driver.h"
#include "core/format/vmdk.h"
#include "core/io/file.h"
#include "core/io/reader.h"
#include "core/util/endian.h"
#include "core/util/json.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::Run;
using testutil::RunResult;
using testutil::ScopedTempDir;

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<uint8_t> bytes(size_t(std::max<std::streamoff>(0, in.tellg())));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
  EXPECT_TRUE(in) << path;
  return bytes;
}

// A reader over shared bytes, cut at `size`, with `patch` laid over them at
// `patch_at`: cheap truncated and mutated variants of one image.
class PatchedReader : public Reader {
 public:
  PatchedReader(const std::vector<uint8_t>& base, uint64_t size, uint64_t patch_at = 0,
                std::vector<uint8_t> patch = {})
      : base_(base),
        size_(std::min<uint64_t>(size, base.size())),
        patch_at_(patch_at),
        patch_(std::move(patch)) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) const override {
    if (offset >= size_) return size_t{0};
    size_t n = std::min<uint64_t>(buf.size(), size_ - offset);
    std::memcpy(buf.data(), base_.data() + offset, n);
    for (size_t i = 0; i < patch_.size(); ++i) {
      uint64_t at = patch_at_ + i;
      if (at >= offset && at < offset + n) buf[at - offset] = patch_[i];
    }
    max_read_ = std::max<uint64_t>(max_read_, n);
    return n;
  }
  uint64_t Size() const override { return size_; }
  // Returns the largest single read so far.
  uint64_t max_read() const { return max_read_; }

 private:
  const std::vector<uint8_t>& base_;
  uint64_t size_;
  uint64_t patch_at_;
  std::vector<uint8_t> patch_;
  mutable uint64_t max_read_ = 0;
};

// Returns the name of the driver ProbeFormat picks.
std::string ProbedName(const Reader& r) {
  Result<const FormatDriver*> d = ProbeFormat(r);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? std::string((*d)->Name()) : std::string();
}

Result<ImageMeta> ParseAs(const std::string& format, const Reader& r) {
  const FormatDriver* d = FindDriver(format);
  if (d == nullptr) return Error(Code::kInvalidArgument, "no driver {}", format);
  return d->Parse(r);
}

// Runs Probe and Parse of `format` on `r`; checks that any error is a
// one-line message. Returns whether Parse succeeded.
bool ProbeAndParseSurvives(const std::string& format, const Reader& r) {
  const FormatDriver* d = FindDriver(format);
  std::vector<uint8_t> head(std::min<uint64_t>(kProbeBytes, r.Size()));
  EXPECT_TRUE(ReadExact(r, 0, head, "head").ok());
  int score = d->Probe(head, r.Size());
  EXPECT_GE(score, 0);
  EXPECT_LE(score, 100);
  Result<ImageMeta> m = d->Parse(r);
  if (!m.ok()) {
    EXPECT_FALSE(m.status().message().empty());
    EXPECT_EQ(m.status().message().find('\n'), std::string::npos) << m.status().message();
    return false;
  }
  for (const std::string& p : m->problems) EXPECT_EQ(p.find('\n'), std::string::npos) << p;
  return true;
}

// Truncates `image` at every length up to `upto` and mutates every byte of
// each window (0x00, 0xff, and 8-byte all-ones runs) -- never a crash.
void Torture(const std::string& format, const std::vector<uint8_t>& image, uint64_t upto,
             const std::vector<std::pair<uint64_t, uint64_t>>& windows, uint64_t stride = 1) {
  for (uint64_t len = 0; len < std::min<uint64_t>(upto, image.size()); len += stride) {
    ProbeAndParseSurvives(format, PatchedReader(image, len));
  }
  for (auto [start, length] : windows) {
    for (uint64_t at = start; at < start + length && at < image.size(); ++at) {
      for (std::vector<uint8_t> patch : {std::vector<uint8_t>{0x00}, std::vector<uint8_t>{0xff},
                                         std::vector<uint8_t>(8, 0xff)}) {
        ProbeAndParseSurvives(format, PatchedReader(image, image.size(), at, patch));
      }
    }
  }
}

// --- qemu-img helpers ------------------------------------------------------

// Runs qemu-img (retrying LUKS creation's spurious CPU-benchmark failure).
bool QemuImg(std::vector<std::string> args) {
  args.insert(args.begin(), "qemu-img");
  RunResult r = testutil::RunRetryingQemuCpuBenchmark(args);
  if (r.exit_code == 0) return true;
  ADD_FAILURE() << "qemu-img failed: " << r.err;
  return false;
}

Json QemuInfo(const std::string& path, const std::string& format) {
  RunResult r = Run({"qemu-img", "info", "--output=json", "-f", format, path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Result<Json> j = Json::Parse(r.out);
  EXPECT_TRUE(j.ok()) << j.status().ToString();
  return j.ok() ? *j : Json::MakeObject();
}

// Compares two JSON values ignoring object key order (qemu-img prints
// QDicts in hash order) and integer signedness.
::testing::AssertionResult JsonSame(const Json& a, const Json& b, const std::string& where = "") {
  if (a.is_object() && b.is_object()) {
    if (a.as_object().size() != b.as_object().size()) {
      return ::testing::AssertionFailure() << where << ": " << a.Dump() << " vs " << b.Dump();
    }
    for (const auto& [k, v] : a.as_object()) {
      const Json* o = b.Find(k);
      if (!o)
        return ::testing::AssertionFailure()
               << where << ": missing key " << k << " in " << b.Dump();
      auto r = JsonSame(v, *o, where + "." + k);
      if (!r) return r;
    }
    return ::testing::AssertionSuccess();
  }
  if (a.is_array() && b.is_array()) {
    if (a.as_array().size() != b.as_array().size()) {
      return ::testing::AssertionFailure() << where << ": " << a.Dump() << " vs " << b.Dump();
    }
    for (size_t i = 0; i < a.as_array().size(); ++i) {
      auto r = JsonSame(a.as_array()[i], b.as_array()[i], where + "[" + std::to_string(i) + "]");
      if (!r) return r;
    }
    return ::testing::AssertionSuccess();
  }
  if (a.Dump() == b.Dump()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << where << ": " << a.Dump() << " vs " << b.Dump();
}

// Checks the fields qemu-img info and ImageMeta share.
void ExpectAgreesWithQemu(const ImageMeta& m, const Json& q) {
  ASSERT_TRUE(q.Find("virtual-size"));
  EXPECT_EQ(m.virtual_size, q.Find("virtual-size")->as_uint());
  if (const Json* c = q.Find("cluster-size")) {
    ASSERT_TRUE(m.cluster_size.has_value());
    EXPECT_EQ(*m.cluster_size, c->as_uint());
  } else {
    EXPECT_FALSE(m.cluster_size.has_value()) << *m.cluster_size;
  }
  const Json* enc = q.Find("encrypted");
  EXPECT_EQ(m.encrypted, enc != nullptr && enc->as_bool());
  if (const Json* b = q.Find("backing-filename")) {
    ASSERT_TRUE(m.backing.has_value());
    EXPECT_EQ(*m.backing, b->as_string());
  } else {
    EXPECT_FALSE(m.backing.has_value());
  }
  if (const Json* bf = q.Find("backing-filename-format")) {
    ASSERT_TRUE(m.backing_format.has_value());
    EXPECT_EQ(*m.backing_format, bf->as_string());
  } else {
    EXPECT_FALSE(m.backing_format.has_value()) << *m.backing_format;
  }
  if (const Json* d = q.Find("dirty-flag")) {
    EXPECT_EQ(m.dirty, d->as_bool());
  }
}

// Probes and parses `path` as chainfs does, then compares with qemu-img
// (run with `qemu_format`, which differs only for ploop = "parallels").
ImageMeta CheckAgainstQemu(const std::string& path, const std::string& format,
                           const std::string& qemu_format = "") {
  Result<File> f = File::OpenRead(path);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  if (!f.ok()) return {};
  EXPECT_EQ(ProbedName(*f), format) << path;
  Result<ImageMeta> m = ParseAs(format, *f);
  EXPECT_TRUE(m.ok()) << path << ": " << m.status().ToString();
  if (!m.ok()) return {};
  EXPECT_EQ(m->format, format);
  Json q = QemuInfo(path, qemu_format.empty() ? format : qemu_format);
  if (qemu_format.empty()) {
    EXPECT_EQ(q.Find("format")->as_string(), format);
  }
  ExpectAgreesWithQemu(*m, q);
  if (const Json* fs = q.Find("format-specific"); fs && format != "vmdk") {
    EXPECT_TRUE(JsonSame(*fs, m->format_specific, "format-specific"));
  } else if (!fs) {
    EXPECT_TRUE(m->format_specific.is_null()) << m->format_specific.Dump();
  }
  return *m;
}

// Compares vmdk format-specific data with qemu-img's once extent names are
// resolved against the image path as qemu does (ResolveVmdkExtentNames).
void ExpectVmdkSpecificMatches(const std::string& path, const ImageMeta& m) {
  Json q = QemuInfo(path, "vmdk");
  const Json* qfs = q.Find("format-specific");
  ASSERT_TRUE(qfs);
  ASSERT_TRUE(m.format_specific.is_object()) << m.format_specific.Dump();
  Json expected = *qfs;
  Json data = *expected.Find("data");
  Json extents = Json::MakeArray();
  for (const Json& e : data.Find("extents")->as_array()) {
    if (e.Find("filename")->as_string() == path) {
      extents.Push(e);
      continue;
    }
    // A parser never opens other files, so it cannot know a sparse
    // extent's grain size.
    Json::Object kept;
    for (const auto& [k, v] : e.as_object()) {
      if (k != "cluster-size") kept.emplace_back(k, v);
    }
    extents.Push(Json(std::move(kept)));
  }
  data.Set("extents", std::move(extents));
  expected.Set("data", std::move(data));
  Json ours = ResolveVmdkExtentNames(m.format_specific, path);
  EXPECT_TRUE(JsonSame(expected, ours, "format-specific"));
  // Extent objects keep qemu-img's key order, so whole-value comparisons
  // (the interop tests) work too.
  if (m.cluster_size) {
    EXPECT_EQ(ours.Find("data")->Find("extents")->as_array(),
              expected.Find("data")->Find("extents")->as_array());
  }
}

TEST(VmdkExtentNames, ResolvesSelfAndRelativeNames) {
  Json fs = Json::MakeObject();
  Json data = Json::MakeObject();
  Json extents = Json::MakeArray();
  for (const char* n : {"", "d-s001.vmdk", "/abs/x.vmdk"}) {
    Json e = Json::MakeObject();
    e.Set("filename", n);
    extents.Push(std::move(e));
  }
  data.Set("cid", 1);
  data.Set("extents", std::move(extents));
  fs.Set("type", "vmdk");
  fs.Set("data", std::move(data));
  Json r = ResolveVmdkExtentNames(fs, "/pool/d.vmdk");
  const Json::Array& out = r.Find("data")->Find("extents")->as_array();
  EXPECT_EQ(out[0].Find("filename")->as_string(), "/pool/d.vmdk");
  EXPECT_EQ(out[1].Find("filename")->as_string(), "/pool/d-s001.vmdk");
  EXPECT_EQ(out[2].Find("filename")->as_string(), "/abs/x.vmdk");
  EXPECT_EQ(r.Find("data")->Find("cid")->as_uint(), 1u);
  Json other = Json::MakeObject();
  other.Set("type", "luks");
  EXPECT_EQ(ResolveVmdkExtentNames(other, "/x"), other);
}

class QemuFormats : public ::testing::Test {
 protected:
  ScopedTempDir dir_;
  std::string P(const std::string& name) { return dir_.Sub(name); }
};

// --- qcow --------------------------------------------------------------------

TEST_F(QemuFormats, QcowMatchesQemuImg) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "qcow", P("a.qcow"), "100M"}));
  ImageMeta m = CheckAgainstQemu(P("a.qcow"), "qcow");
  EXPECT_EQ(*m.cluster_size, 4096u);
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "7M"}));
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", P("b.qcow")}));
  m = CheckAgainstQemu(P("b.qcow"), "qcow");
  EXPECT_EQ(m.backing, "base.raw");
  EXPECT_FALSE(m.backing_format.has_value());  // qcow cannot record it
}

TEST_F(QemuFormats, QcowEncryptedMatchesQemuImg) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "qcow", "--object", "secret,id=s0,data=pw", "-o",
                       "encrypt.format=aes,encrypt.key-secret=s0", P("e.qcow"), "10M"}));
  ImageMeta m = CheckAgainstQemu(P("e.qcow"), "qcow");
  EXPECT_TRUE(m.encrypted);
  EXPECT_EQ(m.encryption_format, "aes");
}

TEST(QcowHeader, RejectsBackingNamePastEof) {
  std::vector<uint8_t> h(48);
  StoreBe32(h.data(), 0x514649fb);
  StoreBe32(h.data() + 4, 1);
  StoreBe64(h.data() + 8, 1 << 20);  // backing name offset past EOF
  StoreBe32(h.data() + 16, 10);
  StoreBe64(h.data() + 24, 1 << 20);
  h[32] = 12;
  h[33] = 9;
  Result<ImageMeta> m = ParseAs("qcow", MemoryReader(h));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kCorrupt);
  StoreBe64(h.data() + 8, 40);
  StoreBe32(h.data() + 16, 5000);  // longer than QEMU's buffer
  EXPECT_FALSE(ParseAs("qcow", MemoryReader(h)).ok());
}

TEST_F(QemuFormats, QcowSurvivesHostileHeaders) {
  ASSERT_TRUE(QemuImg(
      {"create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", "-u", P("b.qcow"), "1M"}));
  std::vector<uint8_t> img = ReadAll(P("b.qcow"));
  ASSERT_TRUE(ProbeAndParseSurvives("qcow", MemoryReader(img)));
  EXPECT_FALSE(ProbeAndParseSurvives("qcow", PatchedReader(img, 47)));
  Torture("qcow", img, 80, {{0, 80}});
}

// --- qed ---------------------------------------------------------------------

TEST_F(QemuFormats, QedMatchesQemuImg) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "qed", P("a.qed"), "100M"}));
  CheckAgainstQemu(P("a.qed"), "qed");
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "10M"}));
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "qed", "-b", "base.raw", "-F", "raw", P("o.qed")}));
  ImageMeta m = CheckAgainstQemu(P("o.qed"), "qed");
  EXPECT_EQ(m.backing_format, "raw");  // QED_F_BACKING_FORMAT_NO_PROBE
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "qed", "-b", "a.qed", "-F", "qed", P("o2.qed")}));
  m = CheckAgainstQemu(P("o2.qed"), "qed");
  EXPECT_EQ(m.backing, "a.qed");
  EXPECT_FALSE(m.backing_format.has_value());
}

TEST_F(QemuFormats, QedSurvivesHostileHeaders) {
  ASSERT_TRUE(QemuImg(
      {"create", "-q", "-f", "qed", "-b", "base.raw", "-F", "raw", "-u", P("o.qed"), "1M"}));
  std::vector<uint8_t> img = ReadAll(P("o.qed"));
  ASSERT_TRUE(ProbeAndParseSurvives("qed", MemoryReader(img)));
  Torture("qed", img, 80, {{0, 80}});
  std::vector<uint8_t> bad = img;
  StoreLe32(bad.data() + 56, 0xfffffff0u);  // backing name outside the header
  EXPECT_FALSE(ParseAs("qed", MemoryReader(bad)).ok());
}

// --- vmdk --------------------------------------------------------------------

TEST_F(QemuFormats, VmdkMonolithicSparseMatchesQemuImg) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vmdk", P("a.vmdk"), "100M"}));
  ImageMeta m = CheckAgainstQemu(P("a.vmdk"), "vmdk");
  ExpectVmdkSpecificMatches(P("a.vmdk"), m);
  EXPECT_TRUE(m.problems.empty()) << m.problems[0];
}

TEST_F(QemuFormats, VmdkStreamOptimizedMatchesQemuImg) {
  ASSERT_TRUE(QemuImg(
      {"create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", P("s.vmdk"), "10M"}));
  ImageMeta m = CheckAgainstQemu(P("s.vmdk"), "vmdk");
  ExpectVmdkSpecificMatches(P("s.vmdk"), m);
}

TEST_F(QemuFormats, VmdkTwoGbMaxExtentSparseDescriptorMatchesQemuImg) {
  ASSERT_TRUE(QemuImg(
      {"create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", P("t.vmdk"), "5G"}));
  Result<File> f = File::OpenRead(P("t.vmdk"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(ProbedName(*f), "vmdk");
  Result<ImageMeta> m = ParseAs("vmdk", *f);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  Json q = QemuInfo(P("t.vmdk"), "vmdk");
  EXPECT_EQ(m->virtual_size, q.Find("virtual-size")->as_uint());
  // qemu-img takes the cluster size from the first extent file, which a
  // parser does not open.
  EXPECT_FALSE(m->cluster_size.has_value());
  ExpectVmdkSpecificMatches(P("t.vmdk"), *m);
  EXPECT_EQ(m->format_specific.Find("data")->Find("extents")->as_array().size(), 3u);
}

TEST_F(QemuFormats, VmdkMonolithicFlatDescriptorMatchesQemuImg) {
  ASSERT_TRUE(QemuImg(
      {"create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", P("f.vmdk"), "10M"}));
  ImageMeta m = CheckAgainstQemu(P("f.vmdk"), "vmdk");
  ExpectVmdkSpecificMatches(P("f.vmdk"), m);
}

TEST_F(QemuFormats, VmdkParentHintIsBackingWithVmdkFormat) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vmdk", P("base.vmdk"), "10M"}));
  ASSERT_TRUE(
      QemuImg({"create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", P("top.vmdk")}));
  ImageMeta m = CheckAgainstQemu(P("top.vmdk"), "vmdk");
  EXPECT_EQ(m.backing, "base.vmdk");
  EXPECT_EQ(m.backing_format, "vmdk");
  ExpectVmdkSpecificMatches(P("top.vmdk"), m);
}

TEST_F(QemuFormats, VmdkSparseSurvivesHostileHeaders) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vmdk", P("a.vmdk"), "1M"}));
  std::vector<uint8_t> img = ReadAll(P("a.vmdk"));
  ASSERT_TRUE(ProbeAndParseSurvives("vmdk", MemoryReader(img)));
  Torture("vmdk", img, 1100, {{0, 96}, {512, 128}}, 3);
}

TEST(VmdkHeader, HugeEmbeddedDescriptorSizeIsCapped) {
  std::vector<uint8_t> img(64 * 1024);
  StoreLe32(img.data(), 0x564d444b);
  StoreLe32(img.data() + 4, 1);
  StoreLe64(img.data() + 12, 2048);               // capacity
  StoreLe64(img.data() + 20, 128);                // granularity
  StoreLe64(img.data() + 28, 1);                  // descriptor at sector 1
  StoreLe64(img.data() + 36, uint64_t{1} << 50);  // absurd descriptor size
  StoreLe32(img.data() + 44, 512);
  StoreLe64(img.data() + 56, 4);
  StoreLe64(img.data() + 64, 8);
  PatchedReader r(img, img.size());
  Result<ImageMeta> m = ParseAs("vmdk", r);
  EXPECT_FALSE(m.ok());  // the capped read still lies past the end
  EXPECT_LE(r.max_read(), kVmdkMaxDescriptorBytes);
}

TEST(VmdkDescriptor, MultiMegabyteDescriptorIsReadOnlyUpToTheLimit) {
  std::string text =
      "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
      "createType=\"monolithicFlat\"\nRW 2048 FLAT \"x-flat.vmdk\" 0\n";
  while (text.size() < (6u << 20)) text += "RW 2048 FLAT \"x-flat.vmdk\" 0\n# padding\n";
  std::vector<uint8_t> bytes(text.begin(), text.end());
  PatchedReader r(bytes, bytes.size());
  EXPECT_EQ(ProbedName(r), "vmdk");
  Result<ImageMeta> m = ParseAs("vmdk", r);
  // Either refused (too many extents) or parsed from the first MiB with a
  // problem; never more than the limit read.
  if (m.ok()) {
    EXPECT_FALSE(m->problems.empty());
  }
  EXPECT_LE(r.max_read(), kVmdkMaxDescriptorBytes);
}

TEST(VmdkDescriptor, ParsesKeysAndExtents) {
  Result<VmdkDescriptor> d = ParseVmdkDescriptor(
      "# Disk DescriptorFile\r\nversion=1\r\nCID=fffffffe\r\nparentCID=0000000a\r\n"
      "createType=\"twoGbMaxExtentFlat\"\r\nparentFileNameHint=\"../base dir/b.vmdk\"\r\n"
      "RW 100 FLAT \"a b.vmdk\" 0\r\nNOACCESS 5 FLAT \"n.vmdk\" 0\r\nRDONLY 7 SPARSE \"c.vmdk\"\r\n"
      "RW 99999999999999999999999 FLAT \"big.vmdk\" 0\r\nddb.adapterType = \"ide\"\r\n");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->cid, 0xfffffffeu);
  EXPECT_EQ(d->parent_cid, 10u);
  EXPECT_EQ(d->create_type, "twoGbMaxExtentFlat");
  EXPECT_EQ(d->parent_hint, "../base dir/b.vmdk");
  ASSERT_EQ(d->extents.size(), 2u);
  EXPECT_EQ(d->extents[0].filename, "a b.vmdk");
  EXPECT_EQ(d->extents[0].sectors, 100u);
  EXPECT_EQ(d->extents[1].type, "SPARSE");
  EXPECT_EQ(d->problems.size(), 1u);  // the overflowing extent line
}

TEST(VmdkDescriptor, ExtentSizesThatOverflowAreRejected) {
  std::string text = "version=1\ncreateType=\"monolithicFlat\"\n";
  for (int i = 0; i < 20; ++i) text += "RW 18014398509481984 FLAT \"f\" 0\n";  // 2^54 each
  std::vector<uint8_t> bytes(text.begin(), text.end());
  Result<ImageMeta> m = ParseAs("vmdk", MemoryReader(bytes));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kCorrupt);
}

TEST(VmdkDescriptor, ProbeFollowsQemuRules) {
  auto score = [](std::string s) {
    return ProbeVmdkDescriptor(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  };
  EXPECT_EQ(score("# Disk DescriptorFile\nversion=1\n"), 100);
  EXPECT_EQ(score("# c\r\n   \r\nversion=3\r\n"), 100);
  EXPECT_EQ(score("version=4\n"), 0);
  EXPECT_EQ(score("hello\nversion=1\n"), 0);
  EXPECT_EQ(score("# Disk DescriptorFile\nversion=1"), 0);  // cut off
  EXPECT_EQ(score(""), 0);
}

TEST(VmdkDescriptor, TextWithoutCreateTypeIsCorrupt) {
  std::string text = "version=1\nRW 10 FLAT \"f\" 0\n";
  std::vector<uint8_t> bytes(text.begin(), text.end());
  EXPECT_FALSE(ParseAs("vmdk", MemoryReader(bytes)).ok());
}

TEST(Vmdk3Header, CraftedCowdImageParses) {
  std::vector<uint8_t> img(4096);
  std::memcpy(img.data(), "COWD", 4);
  StoreLe32(img.data() + 4, 1);
  StoreLe32(img.data() + 12, 20480);  // sectors
  StoreLe32(img.data() + 16, 16);     // granularity
  StoreLe32(img.data() + 20, 4);      // grain directory at sector 4
  StoreLe32(img.data() + 24, 10);
  MemoryReader r(img);
  EXPECT_EQ(ProbedName(r), "vmdk");
  Result<ImageMeta> m = ParseAs("vmdk", r);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->virtual_size, 20480u * 512);
  EXPECT_EQ(m->cluster_size, 8192u);
  StoreLe32(img.data() + 20, 0x7fffffff);
  EXPECT_FALSE(ParseAs("vmdk", MemoryReader(img)).ok());
}

// --- vdi ---------------------------------------------------------------------

TEST_F(QemuFormats, VdiMatchesQemuImg) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vdi", P("a.vdi"), "100M"}));
  CheckAgainstQemu(P("a.vdi"), "vdi");
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vdi", "-o", "static=on", P("s.vdi"), "10M"}));
  CheckAgainstQemu(P("s.vdi"), "vdi");
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vdi", P("odd.vdi"), "12345678"}));
  CheckAgainstQemu(P("odd.vdi"), "vdi");
}

TEST_F(QemuFormats, VdiSurvivesHostileHeaders) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vdi", P("a.vdi"), "100M"}));
  std::vector<uint8_t> img = ReadAll(P("a.vdi"));
  Torture("vdi", img, 520, {{64, 16}, {336, 120}, {420, 40}});
  std::vector<uint8_t> bad = img;
  StoreLe32(bad.data() + 384, 0x3ffffff0);  // blocks_in_image: map past EOF
  StoreLe64(bad.data() + 368, 1 << 20);
  Result<ImageMeta> m = ParseAs("vdi", MemoryReader(bad));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kCorrupt);
}

// --- vpc ---------------------------------------------------------------------

TEST_F(QemuFormats, VpcMatchesQemuImgForChsAndCurrentSize) {
  for (std::string size : {"100M", "1G", "12345678", "3G"}) {
    ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vpc", P("a.vpc"), size}));
    CheckAgainstQemu(P("a.vpc"), "vpc");
    ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vpc", "-o", "force_size=on", P("b.vpc"), size}));
    CheckAgainstQemu(P("b.vpc"), "vpc");
  }
}

// Sets the creator application in both footer copies and fixes the checksums.
void SetVpcCreator(std::vector<uint8_t>& img, const char (&app)[5]) {
  for (uint64_t at : {uint64_t{0}, img.size() - 512}) {
    uint8_t* f = img.data() + at;
    std::memcpy(f + 28, app, 4);
    uint32_t sum = 0;
    for (size_t i = 0; i < 512; ++i) sum += (i >= 64 && i < 68) ? 0 : f[i];
    StoreBe32(f + 64, ~sum);
  }
}

TEST_F(QemuFormats, VpcCreatorDecidesBetweenChsAndCurrentSize) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vpc", P("a.vpc"), "12345678"}));
  std::vector<uint8_t> img = ReadAll(P("a.vpc"));
  // qemu writes current_size = the CHS size; make them differ as they do
  // in Hyper-V images.
  uint64_t chs = uint64_t{LoadBe16(img.data() + 56)} * img[58] * img[59] * 512;
  uint64_t current = chs - 64 * 512;
  StoreBe64(img.data() + 48, current);
  StoreBe64(img.data() + img.size() - 512 + 48, current);
  for (const char* app : {"win ", "qem2", "d2v ", "CTXS", "tap", "vpc ", "qemu", "XXXX"}) {
    char name[5] = {};
    std::memcpy(name, app, std::strlen(app));
    SetVpcCreator(img, name);
    std::ofstream(P("c.vpc"), std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(img.data()), std::streamsize(img.size()));
    ImageMeta m = CheckAgainstQemu(P("c.vpc"), "vpc");
    bool uses_current = std::string_view(app) != "vpc " && std::string_view(app) != "qemu" &&
                        std::string_view(app) != "XXXX";
    EXPECT_EQ(m.virtual_size, uses_current ? current : chs) << app;
    EXPECT_TRUE(m.problems.empty()) << app << ": " << m.problems[0];
  }
}

TEST_F(QemuFormats, VpcFixedProbesRawButParsesAsVpc) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vpc", "-o", "subformat=fixed", P("f.vpc"), "10M"}));
  Result<File> f = File::OpenRead(P("f.vpc"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(ProbedName(*f), "raw");  // the footer is only at the end, as QEMU sees it
  Result<ImageMeta> m = ParseAs("vpc", *f);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ExpectAgreesWithQemu(*m, QemuInfo(P("f.vpc"), "vpc"));
}

TEST_F(QemuFormats, VpcSurvivesHostileHeaders) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vpc", P("a.vpc"), "10M"}));
  std::vector<uint8_t> img = ReadAll(P("a.vpc"));
  Torture("vpc", img, 1600, {{0, 100}, {512, 64}}, 2);
  std::vector<uint8_t> bad = img;
  StoreBe64(bad.data() + 16, uint64_t{1} << 62);  // dynamic header far past EOF
  Result<ImageMeta> m = ParseAs("vpc", MemoryReader(bad));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kCorrupt);
}

// --- vhdx --------------------------------------------------------------------

TEST_F(QemuFormats, VhdxMatchesQemuImg) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vhdx", P("a.vhdx"), "100M"}));
  ImageMeta m = CheckAgainstQemu(P("a.vhdx"), "vhdx");
  EXPECT_TRUE(m.problems.empty()) << m.problems[0];
  ASSERT_TRUE(QemuImg(
      {"create", "-q", "-f", "vhdx", "-o", "block_size=1M,log_size=1M", P("b.vhdx"), "12345678"}));
  CheckAgainstQemu(P("b.vhdx"), "vhdx");
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "vhdx", "-o", "block_size=64M", P("c.vhdx"), "3G"}));
  CheckAgainstQemu(P("c.vhdx"), "vhdx");
}

TEST_F(QemuFormats, VhdxSurvivesHostileHeaders) {
  ASSERT_TRUE(QemuImg(
      {"create", "-q", "-f", "vhdx", "-o", "block_size=1M,log_size=1M", P("a.vhdx"), "10M"}));
  std::vector<uint8_t> img = ReadAll(P("a.vhdx"));
  ASSERT_TRUE(ProbeAndParseSurvives("vhdx", MemoryReader(img)));
  // The metadata region sits where the region table says; mutate its table
  // and items as well as the checksummed structures.
  uint64_t meta = 0;
  for (uint32_t i = 0; i < LoadLe32(img.data() + 192 * 1024 + 8); ++i) {
    const uint8_t* e = img.data() + 192 * 1024 + 16 + i * 32;
    if (e[0] == 0x06 && e[1] == 0xa2) meta = LoadLe64(e + 16);
  }
  ASSERT_NE(meta, 0u);
  Torture("vhdx", img, 300 * 1024,
          {{0, 8}, {64 * 1024 + 64, 12}, {192 * 1024, 48}, {meta, 96}, {meta + 64 * 1024, 24}},
          4093);
  std::vector<uint8_t> bad = img;
  StoreLe32(bad.data() + meta + 10, 0xffff);  // entry count
  EXPECT_FALSE(ParseAs("vhdx", MemoryReader(bad)).ok());
}

// --- luks --------------------------------------------------------------------

// LUKS creation benchmarks the PBKDF for seconds, so the suite makes its
// images once.
// Two LUKS images made by qemu-img for each test. Made in SetUp rather than
// once per suite: CTest runs every test in its own process anyway, and a
// failure here must fail the test (a suite set-up failure reads as "skipped").
class LuksImages : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(QemuImg({"create", "-q", "-f", "luks", "--object", "secret,id=s0,data=pw", "-o",
                         "key-secret=s0,iter-time=300", Path("a.luks"), "4M"}));
    ASSERT_TRUE(QemuImg({"create", "-q", "-f", "luks", "--object", "secret,id=s0,data=pw", "-o",
                         "key-secret=s0,iter-time=300,cipher-alg=aes-128,cipher-mode=cbc,"
                         "ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha256",
                         Path("b.luks"), "1M"}));
  }
  std::string Path(const std::string& name) const { return dir_.Sub(name); }
  ScopedTempDir dir_;
};

TEST_F(LuksImages, MatchQemuImg) {
  ImageMeta m = CheckAgainstQemu(Path("a.luks"), "luks");
  EXPECT_TRUE(m.encrypted);
  EXPECT_EQ(m.encryption_format, "luks");
  EXPECT_TRUE(m.problems.empty()) << m.problems[0];
  m = CheckAgainstQemu(Path("b.luks"), "luks");
  EXPECT_EQ(m.format_specific.Find("data")->Find("ivgen-hash-alg")->as_string(), "sha256");
}

TEST_F(LuksImages, SurviveHostileHeaders) {
  std::vector<uint8_t> img = ReadAll(Path("b.luks"));
  Torture("luks", img, 600, {{0, 600}}, 1);
  std::vector<uint8_t> bad = img;
  StoreBe32(bad.data() + 104, 0x7fffffff);  // payload past EOF
  Result<ImageMeta> m = ParseAs("luks", MemoryReader(bad));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kCorrupt);
  bad = img;
  StoreBe32(bad.data() + 208 + 44, 7);  // slot 0 stripes
  m = ParseAs("luks", MemoryReader(bad));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->problems.size(), 1u);
}

std::vector<uint8_t> MakeLuks2(uint64_t hdr_size, const std::string& json, uint64_t file_size) {
  std::vector<uint8_t> img(file_size);
  const uint8_t magic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
  std::memcpy(img.data(), magic, 6);
  StoreBe16(img.data() + 6, 2);
  StoreBe64(img.data() + 8, hdr_size);
  std::memcpy(img.data() + 168, "6a1b2c3d-0000-4000-8000-000000000001", 36);
  std::memcpy(img.data() + 4096, json.data(), std::min<size_t>(json.size(), file_size - 4096));
  return img;
}

const char kLuks2Json[] =
    R"({"keyslots":{"0":{"type":"luks2","key_size":64,"area":{"type":"raw","offset":"32768",)"
    R"("size":"258048","encryption":"aes-xts-plain64","key_size":64}}},"tokens":{},)"
    R"("segments":{"0":{"type":"crypt","offset":"1048576","size":"dynamic","iv_tweak":"0",)"
    R"("encryption":"aes-xts-plain64","sector_size":512}},"digests":{},)"
    R"("config":{"json_size":"12288","keyslots_size":"1015808"}})";

TEST(Luks2Header, CraftedImageParsesSegment) {
  std::vector<uint8_t> img = MakeLuks2(16384, kLuks2Json, 3 << 20);
  MemoryReader r(img);
  EXPECT_EQ(ProbedName(r), "luks");
  Result<ImageMeta> m = ParseAs("luks", r);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->virtual_size, (3u << 20) - (1u << 20));
  EXPECT_TRUE(m->encrypted);
  const Json& data = *m->format_specific.Find("data");
  EXPECT_EQ(data.Find("cipher-alg")->as_string(), "aes-256");
  EXPECT_EQ(data.Find("cipher-mode")->as_string(), "xts");
  EXPECT_EQ(data.Find("payload-offset")->as_uint(), 1u << 20);
  EXPECT_EQ(data.Find("uuid")->as_string(), "6a1b2c3d-0000-4000-8000-000000000001");
  EXPECT_FALSE(m->problems.empty());  // QEMU cannot open LUKS2
}

TEST(Luks2Header, HugeJsonSizeIsRefused) {
  std::vector<uint8_t> img = MakeLuks2(uint64_t{1} << 62, kLuks2Json, 1 << 20);
  EXPECT_FALSE(ParseAs("luks", MemoryReader(img)).ok());
  // A legal 4 MiB header whose JSON area has no terminator: read is capped.
  std::vector<uint8_t> big = MakeLuks2(4 << 20, std::string((4 << 20) - 4096, '{'), 5 << 20);
  PatchedReader r(big, big.size());
  Result<ImageMeta> m = ParseAs("luks", r);
  ASSERT_FALSE(m.ok());
  EXPECT_LE(r.max_read(), uint64_t{1} << 20);
  // Segment offset beyond the file.
  std::string j = kLuks2Json;
  j.replace(j.find("1048576"), 7, "9999999999999");
  EXPECT_FALSE(ParseAs("luks", MemoryReader(MakeLuks2(16384, j, 2 << 20))).ok());
}

TEST(Luks2Header, SurvivesHostileJson) {
  std::vector<uint8_t> img = MakeLuks2(16384, kLuks2Json, 2 << 20);
  size_t json_end = 4096 + sizeof(kLuks2Json);
  Torture("luks", img, 0, {{0, 16}, {4096, json_end - 4096}}, 1);
  for (uint64_t len = 0; len < json_end + 16; len += 97) {
    ProbeAndParseSurvives("luks", PatchedReader(img, len));
  }
}

// --- ploop -------------------------------------------------------------------

TEST_F(QemuFormats, PloopMatchesQemuParallels) {
  ASSERT_TRUE(QemuImg({"create", "-q", "-f", "parallels", P("a.hds"), "100M"}));
  ImageMeta m = CheckAgainstQemu(P("a.hds"), "ploop", "parallels");
  EXPECT_FALSE(m.dirty);
  std::vector<uint8_t> img = ReadAll(P("a.hds"));
  Torture("ploop", img, 80, {{0, 80}});
}

TEST(PloopHeader, OldMagicUsesLow32BitsOfSize) {
  std::vector<uint8_t> img(4096);
  std::memcpy(img.data(), "WithoutFreeSpace", 16);
  StoreLe32(img.data() + 16, 2);
  StoreLe32(img.data() + 28, 2048);
  StoreLe32(img.data() + 32, 10);
  StoreLe64(img.data() + 36, (uint64_t{7} << 32) | 4096);
  StoreLe32(img.data() + 44, 0x746f6e59);  // in use
  MemoryReader r(img);
  EXPECT_EQ(ProbedName(r), "ploop");
  Result<ImageMeta> m = ParseAs("ploop", r);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->virtual_size, 4096u * 512);
  EXPECT_TRUE(m->dirty);
  StoreLe32(img.data() + 32, 0x10000000);  // BAT past EOF
  EXPECT_FALSE(ParseAs("ploop", MemoryReader(img)).ok());
}

// --- cow ---------------------------------------------------------------------

std::vector<uint8_t> MakeCow(const std::string& backing, uint64_t size) {
  std::vector<uint8_t> img(2048);
  StoreBe32(img.data(), 0x4f4f4f4d);
  StoreBe32(img.data() + 4, 2);
  std::memcpy(img.data() + 8, backing.data(), std::min<size_t>(backing.size(), 1024));
  StoreBe64(img.data() + 1036, size);
  StoreBe32(img.data() + 1044, 512);
  return img;
}

TEST(CowHeader, CraftedImageReportsBackingAndSize) {
  std::vector<uint8_t> img = MakeCow("/images/base.img", uint64_t{1} << 30);
  MemoryReader r(img);
  EXPECT_EQ(ProbedName(r), "cow");
  Result<ImageMeta> m = ParseAs("cow", r);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->format, "cow");
  EXPECT_EQ(m->virtual_size, uint64_t{1} << 30);
  EXPECT_EQ(m->backing, "/images/base.img");
  EXPECT_FALSE(m->backing_format.has_value());
  EXPECT_FALSE(m->cluster_size.has_value());
}

TEST(CowHeader, RejectsUnterminatedBackingAndOtherVersions) {
  Result<ImageMeta> m = ParseAs("cow", MemoryReader(MakeCow(std::string(1024, 'a'), 1 << 20)));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kCorrupt);
  std::vector<uint8_t> v3 = MakeCow("b", 1 << 20);
  StoreBe32(v3.data() + 4, 3);
  EXPECT_EQ(ParseAs("cow", MemoryReader(v3)).status().code(), Code::kUnsupported);
  Torture("cow", MakeCow("base", 1 << 20), 1060, {{0, 16}, {1030, 20}});
}

// --- iso ---------------------------------------------------------------------

std::vector<uint8_t> MakeIso(uint32_t blocks, uint64_t file_size) {
  std::vector<uint8_t> img(file_size);
  uint8_t* pvd = img.data() + 32768;
  pvd[0] = 1;
  std::memcpy(pvd + 1, "CD001", 5);
  pvd[6] = 1;
  StoreLe32(pvd + 80, blocks);
  StoreBe32(pvd + 84, blocks);
  StoreLe16(pvd + 128, 2048);
  StoreBe16(pvd + 130, 2048);
  uint8_t* term = pvd + 2048;
  term[0] = 255;
  std::memcpy(term + 1, "CD001", 5);
  term[6] = 1;
  return img;
}

TEST(IsoImage, CraftedImageProbesAndSizesByFile) {
  std::vector<uint8_t> img = MakeIso(40, 40 * 2048);
  MemoryReader r(img);
  EXPECT_EQ(ProbedName(r), "iso");
  Result<ImageMeta> m = ParseAs("iso", r);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->virtual_size, 40u * 2048);
  EXPECT_TRUE(m->problems.empty());
  Result<ImageMeta> t = ParseAs("iso", MemoryReader(MakeIso(400, 40 * 2048)));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->problems.size(), 1u);  // truncated
}

TEST(IsoImage, RejectsMissingPrimaryDescriptor) {
  std::vector<uint8_t> img(32768 + 70 * 2048);
  for (int i = 0; i < 70; ++i) {
    uint8_t* d = img.data() + 32768 + i * 2048;
    d[0] = 2;  // supplementary descriptors forever
    std::memcpy(d + 1, "CD001", 5);
  }
  EXPECT_FALSE(ParseAs("iso", MemoryReader(img)).ok());
  std::vector<uint8_t> iso = MakeIso(40, 40 * 2048);
  Torture("iso", iso, 0, {{32768, 140}, {32768 + 2048, 8}});
  for (uint64_t len = 32760; len < 32768 + 4200; len += 7) {
    ProbeAndParseSurvives("iso", PatchedReader(iso, len));
  }
}

// --- probing across formats -----------------------------------------------------

TEST(FormatProbe, EmptyAndTinyFilesAreRaw) {
  std::vector<uint8_t> empty;
  EXPECT_EQ(ProbedName(MemoryReader(empty)), "raw");
  std::vector<uint8_t> tiny = {'L', 'U', 'K', 'S'};
  EXPECT_EQ(ProbedName(MemoryReader(tiny)), "raw");
  for (const FormatDriver* d : AllDrivers()) {
    if (d->Name() == "raw" || d->Name() == "qcow2") continue;
    for (size_t n = 0; n < 16; ++n) {
      std::vector<uint8_t> zeros(n);
      EXPECT_EQ(d->Probe(zeros, n), 0) << d->Name();
      EXPECT_FALSE(d->Parse(MemoryReader(zeros)).ok()) << d->Name();
    }
  }
}

}  // namespace
}  // namespace chainfs::core
