// Where qemu is stricter than a lenient reading of the formats, chainfs
// agrees with it (issue 9), on images crafted in memory or in a temporary
// directory: unknown qcow2 versions, sizes in whole sectors, the zero flag
// of version 2, the empty map, short escaped tokens of file bytes in
// messages, and the map rendered and resumed extent by extent.
#include <gtest/gtest.h>

#include <fstream>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/data/chain_reader.h"
#include "core/data/map_text.h"
#include "core/data/qcow2_reader.h"
#include "core/data/raw_reader.h"
#include "core/format/qcow2/header.h"
#include "core/util/endian.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::CraftOptions;
using testutil::ScopedTempDir;

constexpr uint64_t kCopied = 1ull << 63;
constexpr uint64_t kZeroFlag = 1ull << 0;

const char kQemuEmptyMapJson[] =
    "[{ \"start\": 0, \"length\": 0, \"depth\": 0, \"present\": false, \"zero\": false, "
    "\"data\": false}]\n";
const char kQemuMapHeader[] = "Offset          Length          Mapped to       File\n";

std::string ProbedName(const std::vector<uint8_t>& bytes) {
  MemoryReader r(bytes);
  Result<const FormatDriver*> d = ProbeFormat(r);
  return d.ok() ? std::string((*d)->Name()) : "error: " + d.status().ToString();
}

std::vector<uint8_t> WithVersion(uint32_t version) {
  std::vector<uint8_t> img = testutil::CraftQcow2Image(CraftOptions{});
  StoreBe32(img.data() + kQcow2OffVersion, version);
  return img;
}

std::unique_ptr<ChainReader> OneImage(std::unique_ptr<ImageReader> image) {
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(std::move(image));
  return ChainReader::FromImages(std::move(v)).value();
}

std::unique_ptr<ChainReader> OpenQcow2(const std::vector<uint8_t>& bytes) {
  Result<std::unique_ptr<Qcow2Reader>> r =
      Qcow2Reader::Open(std::make_unique<MemoryReader>(bytes), "mem.qcow2");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return nullptr;
  return OneImage(std::move(*r));
}

std::string MapText(const ChainReader& r, MapFormat format, Status* status = nullptr) {
  std::string out;
  Status s = StreamMapText(r, format, 0, UINT64_MAX, [&out](std::string_view t) {
    out.append(t);
    return Status::Ok();
  });
  if (status) *status = s;
  EXPECT_TRUE(status || s.ok()) << s.ToString();
  return out;
}

// --- Unknown qcow2 versions -------------------------------------------------

TEST(QemuStrictQcow2Version, UnknownVersionsProbeAsQcow2NeverRaw) {
  for (uint32_t v : {4u, 5u, 0x100u, 0xffffffffu}) {
    EXPECT_EQ(ProbedName(WithVersion(v)), "qcow2") << v;
    MemoryReader r(WithVersion(v));
    Result<ImageMeta> m = FindDriver("qcow2")->Parse(r);
    ASSERT_FALSE(m.ok()) << v;
    EXPECT_EQ(m.status().code(), Code::kUnsupported);
    EXPECT_EQ(m.status().message(), fmt::format("Unsupported qcow2 version {}", v));
  }
  // As in qemu: version 1 is the qcow driver's, version 0 nobody's.
  EXPECT_EQ(ProbedName(WithVersion(1)), "qcow");
  EXPECT_EQ(ProbedName(WithVersion(0)), "raw");
  EXPECT_EQ(ProbedName(WithVersion(2)), "qcow2");
  EXPECT_EQ(ProbedName(WithVersion(3)), "qcow2");
}

TEST(QemuStrictQcow2Version, ChainStopsAtUnknownVersionWithProblem) {
  ScopedTempDir dir;
  ASSERT_TRUE(testutil::WriteBytes(dir.Sub("v4.qcow2"), WithVersion(4)).ok());
  ImageInspector inspector;
  Chain c = ResolveChain(inspector, dir.Sub("v4.qcow2"));
  ASSERT_EQ(c.elements.size(), 1u);
  EXPECT_EQ(c.elements[0].format, "qcow2");
  EXPECT_FALSE(c.healthy());
  EXPECT_FALSE(c.complete);
  ASSERT_FALSE(c.problems.empty());
  EXPECT_NE(c.problems[0].message.find("Unsupported qcow2 version 4"), std::string::npos)
      << c.problems[0].message;
  EXPECT_FALSE(ChainReader::Open(c).ok());

  // As a backing without a recorded format, it is not taken for raw (which
  // would be accepted as a probed raw base without a backing): its format
  // must be declared, and the fix offered declares qcow2.
  CraftOptions top;
  top.backing = "v4.qcow2";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("top.qcow2"), top).ok());
  Chain t = ResolveChain(inspector, dir.Sub("top.qcow2"));
  EXPECT_FALSE(t.complete);
  ASSERT_EQ(t.problems.size(), 1u);
  EXPECT_EQ(t.problems[0].kind, ProblemKind::kMissingBackingFormat);
  EXPECT_NE(t.problems[0].fix.find("qcow2"), std::string::npos) << t.problems[0].fix;
  EXPECT_EQ(t.problems[0].fix.find("echo raw"), std::string::npos) << t.problems[0].fix;
  EXPECT_EQ(t.problems[0].fix.find("-F raw"), std::string::npos) << t.problems[0].fix;
  EXPECT_FALSE(ChainReader::Open(t).ok());
  // Declared as qcow2, the chain stops there with qemu's reason.
  top.backing_format = "qcow2";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("top2.qcow2"), top).ok());
  Chain t2 = ResolveChain(inspector, dir.Sub("top2.qcow2"));
  EXPECT_FALSE(t2.complete);
  ASSERT_EQ(t2.problems.size(), 1u);
  EXPECT_EQ(t2.problems[0].index, 1);
  EXPECT_NE(t2.problems[0].message.find("Unsupported qcow2 version 4"), std::string::npos)
      << t2.problems[0].message;
}

// --- Sizes in whole sectors -------------------------------------------------

TEST(QemuStrictSizes, RawSizeRoundsUpTo512) {
  const std::pair<uint64_t, uint64_t> cases[] = {
      {0, 0}, {1, 512}, {511, 512}, {512, 512}, {513, 1024}, {1000, 1024}, {4096, 4096}};
  for (auto [file, expected] : cases) {
    MemoryReader r(std::vector<uint8_t>(file, 0x5a));
    Result<ImageMeta> m = FindDriver("raw")->Parse(r);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->virtual_size, expected) << file;
    EXPECT_EQ(RawVirtualSize(file), expected);
  }
  EXPECT_EQ(RawVirtualSize(UINT64_MAX), UINT64_MAX & ~uint64_t{511});
}

TEST(QemuStrictSizes, RawCatWritesTheRoundedSizeWithZeroTail) {
  ScopedTempDir dir;
  std::vector<uint8_t> bytes(1000, 0x5c);
  ASSERT_TRUE(testutil::WriteBytes(dir.Sub("odd.raw"), bytes).ok());
  ImageInspector inspector;
  Chain c = ResolveChain(inspector, dir.Sub("odd.raw"));
  ASSERT_TRUE(c.healthy());
  EXPECT_EQ(c.elements[0].meta->virtual_size, 1024u);
  Result<std::unique_ptr<ChainReader>> r = ChainReader::Open(c);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Size(), 1024u);
  std::string got;
  ASSERT_TRUE((*r)->ReadStream(0, UINT64_MAX, [&got](uint64_t, std::span<const uint8_t> b) {
                     got.append(reinterpret_cast<const char*>(b.data()), b.size());
                     return Status::Ok();
                   }).ok());
  ASSERT_EQ(got.size(), 1024u);
  EXPECT_EQ(got.substr(0, 1000), std::string(1000, '\x5c'));
  EXPECT_EQ(got.substr(1000), std::string(24, '\0'));
}

TEST(QemuStrictSizes, Qcow2SizeFieldRoundsDownTo512) {
  for (auto [field, expected] : std::vector<std::pair<uint64_t, uint64_t>>{
           {1000, 512}, {511, 0}, {512, 512}, {65536 + 100, 65536}, {1, 0}}) {
    CraftOptions o;
    o.size = field;
    std::vector<uint8_t> img = testutil::CraftQcow2Image(o);
    MemoryReader r(img);
    Result<ImageMeta> m = FindDriver("qcow2")->Parse(r);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->virtual_size, expected) << field;
    std::unique_ptr<ChainReader> chain = OpenQcow2(img);
    ASSERT_TRUE(chain);
    EXPECT_EQ(chain->Size(), expected) << field;
    std::vector<uint8_t> buf(field + 512, 0xff);
    Result<size_t> n = chain->Read(0, buf);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, expected);
  }
}

// --- The zero flag of version 2 ---------------------------------------------

// A version 2 or 3 image whose cluster 0 holds data, cluster 1 is "zero" by
// the flag and cluster 2 holds data: 3 clusters of 64 KiB in a 1 MiB disk.
std::vector<uint8_t> ZeroFlagImage(uint32_t version, bool zero_on_allocated) {
  CraftOptions o;
  o.version = version;
  o.size = 1 << 20;
  std::vector<uint8_t> img = testutil::CraftQcow2Image(o);
  const uint64_t l2 = testutil::CraftAppendL2Table(img, 0);
  testutil::CraftSetL2Entry(img, l2, 0, testutil::CraftAppendCluster(img, 0x11) | kCopied);
  const uint64_t host = zero_on_allocated ? testutil::CraftAppendCluster(img, 0xee) | kCopied : 0;
  testutil::CraftSetL2Entry(img, l2, 1, host | kZeroFlag);
  testutil::CraftSetL2Entry(img, l2, 2, testutil::CraftAppendCluster(img, 0x22) | kCopied);
  return img;
}

TEST(QemuStrictZeroFlag, Version2ZeroFlagIsCorruptionNotZeros) {
  for (bool allocated : {false, true}) {
    std::unique_ptr<ChainReader> chain = OpenQcow2(ZeroFlagImage(2, allocated));
    ASSERT_TRUE(chain);
    std::vector<uint8_t> buf(65536);
    // The clusters around it read fine.
    ASSERT_TRUE(chain->Read(0, buf).ok());
    EXPECT_EQ(buf[0], 0x11);
    ASSERT_TRUE(chain->Read(131072, buf).ok());
    EXPECT_EQ(buf[0], 0x22);
    // The flagged one is an error, wherever a read touches it.
    for (uint64_t at : {uint64_t{65536}, uint64_t{65536 + 4096}, uint64_t{0}}) {
      std::vector<uint8_t> big(3 * 65536);
      Result<size_t> n = chain->Read(at, big);
      ASSERT_FALSE(n.ok()) << "allocated " << allocated << " at " << at;
      EXPECT_EQ(n.status().code(), Code::kCorrupt);
      EXPECT_NE(n.status().message().find("version 2"), std::string::npos);
    }
    // So is the map: the error, after what precedes it.
    Status s;
    std::string text = MapText(*chain, MapFormat::kJson, &s);
    EXPECT_EQ(s.code(), Code::kCorrupt) << s.ToString();
    EXPECT_EQ(text.find("\"start\": 65536"), std::string::npos) << text;
    EXPECT_FALSE(chain->Map().ok());
  }
}

TEST(QemuStrictZeroFlag, Version3ZeroFlagStillReadsAsZeros) {
  std::unique_ptr<ChainReader> chain = OpenQcow2(ZeroFlagImage(3, false));
  ASSERT_TRUE(chain);
  std::vector<uint8_t> buf(3 * 65536, 0xff);
  ASSERT_TRUE(chain->Read(0, buf).ok());
  EXPECT_EQ(buf[0], 0x11);
  EXPECT_EQ(buf[65536], 0);
  EXPECT_EQ(buf[2 * 65536 - 1], 0);
  EXPECT_EQ(buf[2 * 65536], 0x22);
}

// --- The empty map ----------------------------------------------------------

TEST(QemuStrictEmptyMap, EmptyDiskMapsAsQemuImgPrintsIt) {
  ScopedTempDir dir;
  ASSERT_TRUE(testutil::WriteBytes(dir.Sub("empty.raw"), {}).ok());
  Result<std::unique_ptr<RawReader>> raw = RawReader::Open(dir.Sub("empty.raw"));
  ASSERT_TRUE(raw.ok());
  std::unique_ptr<ChainReader> chain = OneImage(std::move(*raw));
  EXPECT_EQ(MapText(*chain, MapFormat::kJson), kQemuEmptyMapJson);
  EXPECT_EQ(MapText(*chain, MapFormat::kHuman), kQemuMapHeader);
  EXPECT_EQ(MapToJson({}), kQemuEmptyMapJson);
  EXPECT_EQ(MapToHuman({}).value(), kQemuMapHeader);
  // A zero-sized qcow2 (size field below 512) maps the same way.
  CraftOptions o;
  o.size = 511;
  std::unique_ptr<ChainReader> q = OpenQcow2(testutil::CraftQcow2Image(o));
  ASSERT_TRUE(q);
  EXPECT_EQ(MapText(*q, MapFormat::kJson), kQemuEmptyMapJson);
}

// --- Short, escaped tokens of file bytes in messages ------------------------

// Returns every message the driver produced for `bytes`: the parse error or
// the problems.
std::vector<std::string> Messages(const std::string& format, const std::vector<uint8_t>& bytes) {
  MemoryReader r(bytes);
  Result<ImageMeta> m = FindDriver(format)->Parse(r);
  if (!m.ok()) return {m.status().message()};
  return m->problems;
}

void ExpectShortAndEscaped(const std::vector<std::string>& messages, const std::string& needle) {
  ASSERT_FALSE(messages.empty());
  bool found = false;
  for (const std::string& msg : messages) {
    for (char c : msg) EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << msg;
    EXPECT_EQ(msg.find("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), std::string::npos) << msg;
    if (msg.find(needle) != std::string::npos) found = true;
  }
  EXPECT_TRUE(found) << needle << " in " << ::testing::PrintToString(messages);
}

TEST(QemuStrictMessages, Qcow2FeatureNamesAreShortEscapedTokens) {
  CraftOptions o;
  o.incompatible_features = 1ull << 40;
  o.feature_table = true;
  o.extra_feature_names = {{0, 40, "evil\n0: forged line\x1b[31m" + std::string(30, 'A')}};
  ExpectShortAndEscaped(Messages("qcow2", testutil::CraftQcow2Image(o)), "evil\\n0: forged");
}

TEST(QemuStrictMessages, VmdkDescriptorTextIsShortEscapedTokens) {
  std::string desc =
      "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
      "createType=\"bad\x01type" + std::string(200, 'A') + "\"\n"
      "RW 2048 FL\x1b" "AT" + std::string(100, 'A') + " \"x.vmdk\"\n";
  ExpectShortAndEscaped(Messages("vmdk", std::vector<uint8_t>(desc.begin(), desc.end())),
                        "bad\\x01type");
  std::vector<std::string> m = Messages("vmdk", std::vector<uint8_t>(desc.begin(), desc.end()));
  bool extent = false;
  for (const std::string& s : m) extent |= s.find("FL\\x1bAT") != std::string::npos;
  EXPECT_TRUE(extent) << ::testing::PrintToString(m);
}

TEST(QemuStrictMessages, LuksCipherNameIsAShortEscapedToken) {
  // A LUKS1 header with a hostile cipher name: magic, version 1, cipher name
  // (32 bytes), mode, hash, payload offset 4096 sectors, key bytes 32.
  std::vector<uint8_t> h((2 << 20) + 4096, 0);
  const uint8_t magic[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
  std::copy(std::begin(magic), std::end(magic), h.begin());
  StoreBe16(h.data() + 6, 1);
  std::string cipher = "e\nvil" + std::string(26, 'A');
  std::copy(cipher.begin(), cipher.end(), h.begin() + 8);
  std::string mode = "xts-plain64", hash = "sha256";
  std::copy(mode.begin(), mode.end(), h.begin() + 40);
  std::copy(hash.begin(), hash.end(), h.begin() + 72);
  StoreBe32(h.data() + 104, 4096);
  StoreBe32(h.data() + 108, 32);
  std::vector<std::string> m = Messages("luks", h);
  ExpectShortAndEscaped(m, "e\\nvil");
}

// --- monolithicFlat vmdk: what qemu-img's actual-size adds ------------------

TEST(QemuStrictVmdk, FlatExtentAllocationIsCounted) {
  ScopedTempDir dir;
  std::vector<uint8_t> flat(3 * 4096 + 100, 0x33);
  ASSERT_TRUE(testutil::WriteBytes(dir.Sub("d-flat.vmdk"), flat).ok());
  std::string desc =
      "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
      "createType=\"monolithicFlat\"\nRW 25 FLAT \"d-flat.vmdk\" 0\n";
  ASSERT_TRUE(
      testutil::WriteBytes(dir.Sub("d.vmdk"), std::vector<uint8_t>(desc.begin(), desc.end())).ok());
  ImageInspector inspector;
  Result<std::shared_ptr<const Inspection>> in = inspector.Inspect(dir.Sub("d.vmdk"));
  ASSERT_TRUE(in.ok());
  ASSERT_TRUE((*in)->meta) << (*in)->parse_status.ToString();
  Result<FileStat> extent = StatPath(dir.Sub("d-flat.vmdk"));
  ASSERT_TRUE(extent.ok());
  EXPECT_GT(extent->allocation, 0u);
  EXPECT_EQ((*in)->meta->external_allocation, extent->allocation);
  EXPECT_EQ(QemuActualSize((*in)->stat.allocation, (*in)->meta.get()),
            (*in)->stat.allocation + extent->allocation);
  EXPECT_EQ(QemuActualSize(4096, nullptr), 4096u);

  // An extent that does not exist, or is the descriptor itself, adds nothing.
  std::string gone = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
                     "RW 25 FLAT \"gone.vmdk\" 0\nRW 25 FLAT \"e.vmdk\" 0\n";
  ASSERT_TRUE(
      testutil::WriteBytes(dir.Sub("e.vmdk"), std::vector<uint8_t>(gone.begin(), gone.end())).ok());
  in = inspector.Inspect(dir.Sub("e.vmdk"));
  ASSERT_TRUE(in.ok() && (*in)->meta);
  EXPECT_EQ((*in)->meta->external_allocation, 0u);
}

// --- The map, streamed and resumed ------------------------------------------

// A chain of two crafted qcow2 images with many small extents of every kind.
std::unique_ptr<ChainReader> PatchworkChain() {
  CraftOptions o;
  o.cluster_bits = 12;
  o.size = 4 << 20;  // 1024 clusters
  std::vector<uint8_t> base = testutil::CraftQcow2Image(o);
  std::vector<uint8_t> top = testutil::CraftQcow2Image(o);
  const uint64_t bl2 = testutil::CraftAppendL2Table(base, 0);
  const uint64_t tl2 = testutil::CraftAppendL2Table(top, 0);
  uint64_t seed = 7;
  for (uint64_t i = 0; i < 512; ++i) {  // the first 512 clusters (one L2 table)
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    switch ((seed >> 33) % 5) {
      case 0:
        testutil::CraftSetL2Entry(top, tl2, i, testutil::CraftAppendCluster(top, 1) | kCopied);
        break;
      case 1:
        testutil::CraftSetL2Entry(top, tl2, i, kZeroFlag);
        break;
      case 2:
        testutil::CraftSetL2Entry(base, bl2, i, testutil::CraftAppendCluster(base, 2) | kCopied);
        break;
      default:
        break;  // unallocated in both
    }
  }
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(Qcow2Reader::Open(std::make_unique<MemoryReader>(top), "top.qcow2").value());
  v.push_back(Qcow2Reader::Open(std::make_unique<MemoryReader>(base), "base.qcow2").value());
  return ChainReader::FromImages(std::move(v)).value();
}

TEST(QemuStrictMapStream, StreamedTextEqualsWholeRendering) {
  std::unique_ptr<ChainReader> chain = PatchworkChain();
  Result<std::vector<MapExtent>> all = chain->Map();
  ASSERT_TRUE(all.ok());
  ASSERT_GT(all->size(), 200u);
  for (size_t chunk : {size_t{1}, size_t{100}, size_t{64 << 10}}) {
    std::string json, human;
    size_t pieces = 0;
    ASSERT_TRUE(StreamMapText(*chain, MapFormat::kJson, 0, UINT64_MAX,
                              [&](std::string_view t) {
                                json.append(t);
                                ++pieces;
                                return Status::Ok();
                              },
                              chunk)
                    .ok());
    ASSERT_TRUE(StreamMapText(*chain, MapFormat::kHuman, 0, UINT64_MAX,
                              [&](std::string_view t) {
                                human.append(t);
                                return Status::Ok();
                              },
                              chunk)
                    .ok());
    EXPECT_EQ(json, MapToJson(*all));
    EXPECT_EQ(human, MapToHuman(*all).value());
    if (chunk == 1) {
      EXPECT_GT(pieces, all->size());  // handed over as it goes
    }
  }
}

TEST(QemuStrictMapStream, ResumesAtAnyExtentWithTheSameBytes) {
  std::unique_ptr<ChainReader> chain = PatchworkChain();
  for (MapFormat format : {MapFormat::kJson, MapFormat::kHuman}) {
    // One pass recording a resume point before every extent.
    std::vector<MapResumePoint> points;
    std::string full;
    MapTextRenderer renderer(format);
    MapIterator it = chain->MapFrom(0);
    for (;;) {
      Result<std::optional<MapExtent>> e = it.Next();
      ASSERT_TRUE(e.ok());
      if (!*e) break;
      points.push_back(renderer.position());
      ASSERT_TRUE(renderer.Add(**e, full).ok());
      EXPECT_EQ(renderer.position().text_offset, full.size());
    }
    renderer.Finish(full);
    ASSERT_GT(points.size(), 200u);
    for (size_t i = 0; i < points.size(); i += 37) {
      const MapResumePoint& p = points[i];
      MapTextRenderer again(format, p);
      MapIterator rest = chain->MapFrom(p.guest_offset);
      std::string tail;
      for (;;) {
        Result<std::optional<MapExtent>> e = rest.Next();
        ASSERT_TRUE(e.ok());
        if (!*e) break;
        ASSERT_TRUE(again.Add(**e, tail).ok());
      }
      again.Finish(tail);
      ASSERT_LE(p.text_offset, full.size());
      EXPECT_EQ(tail, full.substr(p.text_offset)) << "resumed before extent " << i;
    }
  }
}

TEST(QemuStrictMapStream, IteratorHoldsOneExtentAndStopsAfterAnError) {
  std::unique_ptr<ChainReader> chain = OpenQcow2(ZeroFlagImage(2, false));
  ASSERT_TRUE(chain);
  MapIterator it = chain->MapFrom(0);
  Result<std::optional<MapExtent>> e = it.Next();
  ASSERT_FALSE(e.ok());  // the data extent is not final before the flagged cluster fails
  EXPECT_EQ(e.status().code(), Code::kCorrupt);
  Result<std::optional<MapExtent>> after = it.Next();
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->has_value());
  // Past the flagged cluster, the map reads again.
  MapIterator later = chain->MapFrom(131072);
  Result<std::optional<MapExtent>> d = later.Next();
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_EQ((*d)->start, 131072u);
  EXPECT_TRUE((*d)->data);
}

}  // namespace
}  // namespace chainfs::core
