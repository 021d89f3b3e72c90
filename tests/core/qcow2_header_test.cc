// qcow2 header parser and driver: hostile crafted headers in memory, and
// real images made by qemu-img at test time compared with `qemu-img info`.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "core/format/driver.h"
#include "core/format/qcow2/header.h"
#include "core/io/file.h"
#include "core/util/endian.h"
#include "core/util/json.h"
#include "tests/util/qcow2_craft.h"
#include "tests/util/run.h"

namespace chainfs::core {
namespace {

using testutil::CraftOptions;
using testutil::CraftQcow2Header;
using testutil::CraftQcow2Image;
using testutil::RunResult;
using testutil::ScopedTempDir;

Result<Qcow2Header> ParseBytes(std::vector<uint8_t> bytes) {
  MemoryReader r(std::move(bytes));
  return ParseQcow2Header(r);
}

const FormatDriver& Driver() { return *FindDriver("qcow2"); }

Result<ImageMeta> ParseMeta(std::vector<uint8_t> bytes) {
  MemoryReader r(std::move(bytes));
  return Driver().Parse(r);
}

bool HasProblemContaining(const std::vector<std::string>& problems, std::string_view needle) {
  return std::any_of(problems.begin(), problems.end(),
                     [&](const std::string& p) { return p.find(needle) != std::string::npos; });
}

std::vector<uint8_t> Str(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// Options with every kind of header content, for truncation sweeps.
CraftOptions RichOptions() {
  CraftOptions o;
  o.backing = "base image.qcow2";
  o.backing_format = "qcow2";
  o.data_file = "data.raw";
  o.incompatible_features = kQcow2IncompatDataFile;
  o.feature_table = true;
  o.extra_extensions.push_back({0x12345678, 0, Str("hello")});
  return o;
}

// --- Well-formed crafted headers ------------------------------------------

TEST(Qcow2Header, ParsesMinimalV3Header) {
  CraftOptions o;
  o.size = 10ull << 30;
  o.cluster_bits = 12;
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Image(o));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->version, 3u);
  EXPECT_EQ(h->size, 10ull << 30);
  EXPECT_EQ(h->cluster_size(), 4096u);
  EXPECT_EQ(h->header_length, 112u);
  EXPECT_EQ(h->refcount_bits(), 16u);
  EXPECT_EQ(h->compression_type, kQcow2CompressionZlib);
  EXPECT_FALSE(h->backing_file.has_value());
  EXPECT_FALSE(h->backing_format.has_value());
  EXPECT_TRUE(h->extensions.empty());
  EXPECT_EQ(h->extensions_end, 120u);
  EXPECT_TRUE(h->problems.empty()) << h->problems.front();
}

TEST(Qcow2Header, ParsesV2HeaderWithAssumedV3Fields) {
  CraftOptions o;
  o.version = 2;
  o.backing = "/images/base.img";
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Image(o));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->version, 2u);
  EXPECT_EQ(h->header_length, 72u);
  EXPECT_EQ(h->refcount_order, 4u);
  EXPECT_EQ(h->incompatible_features, 0u);
  EXPECT_EQ(h->backing_file_offset, 80u);  // after the 8-byte end marker
  EXPECT_EQ(h->backing_file, "/images/base.img");
  EXPECT_TRUE(h->problems.empty());
}

TEST(Qcow2Header, ParsesEveryExtensionType) {
  CraftOptions o = RichOptions();
  o.crypt_method = kQcow2CryptLuks;
  std::vector<uint8_t> crypt(16);
  StoreBe64(crypt.data(), 0x40000);
  StoreBe64(crypt.data() + 8, 0x1f9000);
  o.extra_extensions.push_back({kQcow2ExtCryptHeader, 0, crypt});
  std::vector<uint8_t> bitmaps(24);
  StoreBe32(bitmaps.data(), 3);
  StoreBe64(bitmaps.data() + 8, 96);
  StoreBe64(bitmaps.data() + 16, 0x30000);
  o.extra_extensions.push_back({kQcow2ExtBitmaps, 0, bitmaps});
  o.extra_feature_names.push_back({0, 33, "future feature"});

  Result<Qcow2Header> h = ParseBytes(CraftQcow2Header(o));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->backing_file, "base image.qcow2");
  EXPECT_EQ(h->backing_format, "qcow2");
  EXPECT_EQ(h->data_file, "data.raw");
  ASSERT_TRUE(h->crypt_header.has_value());
  EXPECT_EQ(h->crypt_header->offset, 0x40000u);
  EXPECT_EQ(h->crypt_header->length, 0x1f9000u);
  ASSERT_TRUE(h->bitmaps_extension.has_value());
  EXPECT_EQ(h->bitmaps_extension->nb_bitmaps, 3u);
  EXPECT_EQ(h->bitmaps_extension->directory_size, 96u);
  EXPECT_EQ(h->bitmaps_extension->directory_offset, 0x30000u);
  EXPECT_EQ(h->FeatureName(0, 0), "dirty bit");
  EXPECT_EQ(h->FeatureName(1, 0), "lazy refcounts");
  EXPECT_EQ(h->FeatureName(0, 33), "future feature");
  EXPECT_EQ(h->FeatureName(0, 40), "");
  // Every extension, the unknown one included, is kept in file order.
  std::vector<uint32_t> types;
  for (const Qcow2Extension& e : h->extensions) types.push_back(e.type);
  EXPECT_EQ(types,
            (std::vector<uint32_t>{kQcow2ExtBackingFormat, kQcow2ExtDataFile, kQcow2ExtFeatureTable,
                                   0x12345678, kQcow2ExtCryptHeader, kQcow2ExtBitmaps}));
  EXPECT_EQ(h->extensions[3].data, Str("hello"));
  // Each extension starts 8-aligned even after odd lengths ("qcow2", "hello").
  for (const Qcow2Extension& e : h->extensions) EXPECT_EQ(e.offset % 8, 0u);
}

TEST(Qcow2Header, SkipsUnknownExtensionsByTheirPaddedLength) {
  CraftOptions o;
  o.extra_extensions.push_back({0xdeadbeef, 0, std::vector<uint8_t>(13, 0xff)});
  o.backing_format = "raw";
  o.backing = "b";
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Header(o));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->backing_format, "raw");
  ASSERT_EQ(h->extensions.size(), 2u);
  EXPECT_EQ(h->extensions[1].offset, 112u + 8 + 8);  // "raw" padded to 8
  EXPECT_EQ(h->extensions[1].data.size(), 13u);
  EXPECT_EQ(h->backing_file, "b");
}

TEST(Qcow2Header, EncodesExtensionsAsItParsesThem) {
  std::vector<Qcow2Extension> exts = {{kQcow2ExtBackingFormat, 0, Str("qcow2")},
                                      {0x77, 0, Str("0123456789")}};
  std::vector<uint8_t> area = EncodeQcow2Extensions(exts);
  EXPECT_EQ(area.size(), 16u + 24 + 8);
  std::vector<uint8_t> bytes = CraftQcow2Header(CraftOptions{});
  bytes.resize(112);
  bytes.insert(bytes.end(), area.begin(), area.end());
  Result<Qcow2Header> h = ParseBytes(bytes);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_EQ(h->extensions.size(), 2u);
  EXPECT_EQ(h->extensions[0].data, Str("qcow2"));
  EXPECT_EQ(h->extensions[1].data, Str("0123456789"));
  EXPECT_EQ(h->extensions_end, bytes.size());
}

TEST(Qcow2Header, ParsesCompressionTypeOnlyWithItsBit) {
  CraftOptions o;
  o.incompatible_features = kQcow2IncompatCompression;
  o.compression_type = kQcow2CompressionZstd;
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Header(o));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->compression_type, kQcow2CompressionZstd);

  o.compression_type = kQcow2CompressionZlib;  // bit without a type
  EXPECT_EQ(ParseBytes(CraftQcow2Header(o)).status().code(), Code::kCorrupt);
  o.incompatible_features = 0;
  o.compression_type = kQcow2CompressionZstd;  // type without the bit
  EXPECT_EQ(ParseBytes(CraftQcow2Header(o)).status().code(), Code::kCorrupt);
  o.incompatible_features = kQcow2IncompatCompression;
  o.compression_type = 2;  // unknown type
  EXPECT_EQ(ParseBytes(CraftQcow2Header(o)).status().code(), Code::kCorrupt);
  // With header_length 104 there is no compression_type field, so zlib.
  CraftOptions short_header;
  short_header.header_length = 104;
  short_header.compression_type = 1;  // not written: outside the header
  h = ParseBytes(CraftQcow2Header(short_header));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->compression_type, kQcow2CompressionZlib);
}

// --- Hostile headers --------------------------------------------------------

TEST(Qcow2Header, RejectsTruncationAtEveryBytePosition) {
  for (uint32_t version : {2u, 3u}) {
    CraftOptions o = RichOptions();
    o.version = version;
    if (version == 2) o.incompatible_features = 0;
    std::vector<uint8_t> full = CraftQcow2Header(o);
    ASSERT_TRUE(ParseBytes(full).ok()) << ParseBytes(full).status().ToString();
    for (size_t n = 0; n < full.size(); ++n) {
      std::vector<uint8_t> cut(full.begin(), full.begin() + n);
      Result<Qcow2Header> h = ParseBytes(cut);
      EXPECT_FALSE(h.ok()) << "version " << version << " truncated at " << n;
      if (!h.ok()) {
        EXPECT_EQ(h.status().code(), Code::kCorrupt) << n;
      }
    }
  }
}

TEST(Qcow2Header, RejectsBadMagicAndVersion) {
  std::vector<uint8_t> bytes = CraftQcow2Header(CraftOptions{});
  std::vector<uint8_t> bad_magic = bytes;
  bad_magic[3] = 0xfc;
  EXPECT_EQ(ParseBytes(bad_magic).status().code(), Code::kCorrupt);
  for (uint32_t version : {0u, 1u, 4u, 0xffffffffu}) {
    std::vector<uint8_t> b = bytes;
    StoreBe32(b.data() + kQcow2OffVersion, version);
    EXPECT_EQ(ParseBytes(b).status().code(), Code::kUnsupported) << version;
  }
}

TEST(Qcow2Header, RejectsClusterBitsOutOfRange) {
  for (uint32_t bits : {0u, 8u, 22u, 63u, 0xffffffffu}) {
    CraftOptions o;
    o.cluster_bits = bits;
    Result<Qcow2Header> h = ParseBytes(CraftQcow2Header(o));
    ASSERT_FALSE(h.ok()) << bits;
    EXPECT_EQ(h.status().code(), Code::kCorrupt);
    EXPECT_NE(h.status().message().find("cluster_bits"), std::string::npos);
  }
  for (uint32_t bits : {9u, 21u}) {
    CraftOptions o;
    o.cluster_bits = bits;
    EXPECT_TRUE(ParseBytes(CraftQcow2Header(o)).ok()) << bits;
  }
}

TEST(Qcow2Header, RejectsBadHeaderLength) {
  for (uint32_t len : {8u, 72u, 96u, 108u, 4104u}) {
    CraftOptions o;
    o.cluster_bits = 12;
    o.header_length = len;
    EXPECT_EQ(ParseBytes(CraftQcow2Header(o)).status().code(), Code::kCorrupt) << len;
  }
  // A long header is fine when it is all there, and must all be there.
  CraftOptions o;
  o.header_length = 256;
  std::vector<uint8_t> bytes = CraftQcow2Header(o);
  EXPECT_TRUE(ParseBytes(bytes).ok());
  bytes.resize(200);
  EXPECT_EQ(ParseBytes(bytes).status().code(), Code::kCorrupt);
}

TEST(Qcow2Header, RejectsRefcountOrderAboveSix) {
  CraftOptions o;
  o.refcount_order = 7;
  EXPECT_EQ(ParseBytes(CraftQcow2Header(o)).status().code(), Code::kCorrupt);
  o.refcount_order = 6;
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Header(o));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->refcount_bits(), 64u);
}

TEST(Qcow2Header, RejectsBackingNameOffsetInsideHeader) {
  CraftOptions o;
  o.backing = "base.qcow2";
  std::vector<uint8_t> bytes = CraftQcow2Header(o);
  for (uint64_t off : {1ull, 8ull, 71ull, 104ull, 111ull}) {
    StoreBe64(bytes.data() + kQcow2OffBackingFileOffset, off);
    Result<Qcow2Header> h = ParseBytes(bytes);
    ASSERT_FALSE(h.ok()) << off;
    EXPECT_EQ(h.status().code(), Code::kCorrupt);
    EXPECT_NE(h.status().message().find("inside the header"), std::string::npos);
  }
}

TEST(Qcow2Header, RejectsBackingNameInsideExtensionArea) {
  CraftOptions o;
  o.backing = "base.qcow2";
  o.backing_format = "qcow2";
  std::vector<uint8_t> bytes = CraftQcow2Header(o);
  // Point the name into the middle of the backing format extension.
  StoreBe64(bytes.data() + kQcow2OffBackingFileOffset, 116);
  EXPECT_EQ(ParseBytes(bytes).status().code(), Code::kCorrupt);
  StoreBe64(bytes.data() + kQcow2OffBackingFileOffset, 124);
  EXPECT_EQ(ParseBytes(bytes).status().code(), Code::kCorrupt);
}

TEST(Qcow2Header, RejectsBackingNamePastEofOrPastFirstCluster) {
  CraftOptions o;
  o.backing = "base.qcow2";
  std::vector<uint8_t> bytes = CraftQcow2Header(o);
  std::vector<uint8_t> longer = bytes;
  StoreBe32(longer.data() + kQcow2OffBackingFileSize, 11);  // one byte past EOF
  EXPECT_EQ(ParseBytes(longer).status().code(), Code::kCorrupt);
  std::vector<uint8_t> far = bytes;
  StoreBe64(far.data() + kQcow2OffBackingFileOffset, 60000);  // in cluster, past EOF
  EXPECT_EQ(ParseBytes(far).status().code(), Code::kCorrupt);
  StoreBe64(far.data() + kQcow2OffBackingFileOffset, 65537);  // past the first cluster
  EXPECT_EQ(ParseBytes(far).status().code(), Code::kCorrupt);
  StoreBe64(far.data() + kQcow2OffBackingFileOffset, ~0ull - 3);  // overflow bait
  EXPECT_EQ(ParseBytes(far).status().code(), Code::kCorrupt);
}

TEST(Qcow2Header, RejectsHugeBackingFileSize) {
  for (uint32_t size : {1024u, 65536u, 0xffffffffu}) {
    CraftOptions o;
    o.backing = std::string(1023, 'a');
    std::vector<uint8_t> bytes = CraftQcow2Header(o);
    ASSERT_TRUE(ParseBytes(bytes).ok());
    bytes.resize(bytes.size() + 70000, 'a');  // the bytes exist, the size is still too big
    StoreBe32(bytes.data() + kQcow2OffBackingFileSize, size);
    Result<Qcow2Header> h = ParseBytes(bytes);
    ASSERT_FALSE(h.ok()) << size;
    EXPECT_EQ(h.status().code(), Code::kCorrupt);
  }
}

TEST(Qcow2Header, RejectsExtensionLengthNear4GiB) {
  for (uint32_t len : {0xffffffffu, 0xfffffff8u, 0x80000000u, 65536u}) {
    CraftOptions o;
    o.extra_extensions.push_back({0x12345678, 0, Str("data")});
    std::vector<uint8_t> bytes = CraftQcow2Header(o);
    StoreBe32(bytes.data() + 112 + 4, len);
    Result<Qcow2Header> h = ParseBytes(bytes);
    ASSERT_FALSE(h.ok()) << len;
    EXPECT_EQ(h.status().code(), Code::kCorrupt);
  }
}

TEST(Qcow2Header, RejectsExtensionRunningIntoBackingName) {
  CraftOptions o;
  o.backing = "base";
  o.extra_extensions.push_back({0x12345678, 0, Str("12345678")});
  std::vector<uint8_t> bytes = CraftQcow2Header(o);
  // Swallowing the end marker still ends exactly at the name: acceptable.
  StoreBe32(bytes.data() + 112 + 4, 16);
  EXPECT_TRUE(ParseBytes(bytes).ok());
  // One byte more runs into the name.
  StoreBe32(bytes.data() + 112 + 4, 17);
  EXPECT_EQ(ParseBytes(bytes).status().code(), Code::kCorrupt);
}

TEST(Qcow2Header, RejectsExtensionAreaWithoutEndPastEof) {
  std::vector<uint8_t> bytes = CraftQcow2Header(CraftOptions{});
  bytes.resize(112);  // no end marker, no backing: the area runs to the cluster end
  EXPECT_EQ(ParseBytes(bytes).status().code(), Code::kCorrupt);
}

TEST(Qcow2Header, RejectsOverlongBackingFormatAndBadCryptExtension) {
  CraftOptions o;
  o.backing = "b";
  o.backing_format = std::string(16, 'x');
  EXPECT_EQ(ParseBytes(CraftQcow2Header(o)).status().code(), Code::kCorrupt);
  o.backing_format = std::string(15, 'x');
  EXPECT_TRUE(ParseBytes(CraftQcow2Header(o)).ok());

  CraftOptions c;
  c.crypt_method = kQcow2CryptLuks;
  c.extra_extensions.push_back({kQcow2ExtCryptHeader, 0, std::vector<uint8_t>(15)});
  EXPECT_EQ(ParseBytes(CraftQcow2Header(c)).status().code(), Code::kCorrupt);
}

TEST(Qcow2Header, SurvivesRandomByteCorruption) {
  CraftOptions o = RichOptions();
  o.cluster_bits = 12;  // a small image keeps 3000 copies cheap
  o.autoclear_features = kQcow2AutoclearBitmaps;
  std::vector<uint8_t> bitmaps(24);
  StoreBe32(bitmaps.data(), 1);
  StoreBe64(bitmaps.data() + 8, 32);
  StoreBe64(bitmaps.data() + 16, 0x1000);
  o.extra_extensions.push_back({kQcow2ExtBitmaps, 0, bitmaps});
  const std::vector<uint8_t> image = CraftQcow2Image(o);
  const size_t header_area = CraftQcow2Header(o).size();
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int parsed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> b = image;
    for (int k = 0, n = int(next() % 4) + 1; k < n; ++k) {
      b[next() % header_area] = uint8_t(next());
    }
    MemoryReader r(std::move(b));
    Result<ImageMeta> m = Driver().Parse(r);  // must not crash, leak or hang
    if (m.ok()) {
      ++parsed;
      EXPECT_EQ(m->format, "qcow2");
    } else {
      EXPECT_FALSE(m.status().message().empty());
    }
  }
  EXPECT_GT(parsed, 0);
}

TEST(Qcow2Header, ReportsDuplicateExtensionOnceAndStaysFast) {
  CraftOptions o;
  // 8000 empty copies of the same unknown extension.
  for (int i = 0; i < 8000; ++i) o.extra_extensions.push_back({0x1234, 0, {}});
  o.extra_extensions.push_back({kQcow2ExtBackingFormat, 0, Str("raw")});
  o.extra_extensions.push_back({kQcow2ExtBackingFormat, 0, Str("qcow2")});
  o.backing = "b";
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Header(o));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->backing_format, "qcow2");
  EXPECT_EQ(h->problems.size(), 2u + 2u);  // two duplicate types + tables past EOF
}

TEST(Qcow2Header, ReportsUnknownIncompatibleBitsButReturnsMetadata) {
  CraftOptions o;
  o.backing = "base.qcow2";
  o.incompatible_features = (1ull << 20) | (1ull << 63) | kQcow2IncompatDirty;
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Image(o));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->unknown_incompatible_features(), (1ull << 20) | (1ull << 63));
  EXPECT_EQ(h->backing_file, "base.qcow2");
  ASSERT_EQ(h->problems.size(), 1u);
  EXPECT_NE(h->problems[0].find("bit 20"), std::string::npos);
  EXPECT_NE(h->problems[0].find("bit 63"), std::string::npos);

  // With a feature name table the names appear in the problem.
  o.feature_table = true;
  o.extra_feature_names.push_back({0, 20, "shiny new thing"});
  Result<ImageMeta> m = ParseMeta(CraftQcow2Image(o));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->dirty);
  EXPECT_EQ(m->backing, "base.qcow2");
  ASSERT_EQ(m->problems.size(), 1u);
  EXPECT_NE(m->problems[0].find("'shiny new thing' (bit 20)"), std::string::npos) << m->problems[0];
}

TEST(Qcow2Header, ReportsCorruptBit) {
  CraftOptions o;
  o.incompatible_features = kQcow2IncompatCorrupt;
  Result<ImageMeta> m = ParseMeta(CraftQcow2Image(o));
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(HasProblemContaining(m->problems, "marked corrupt"));
  EXPECT_TRUE(m->format_specific.Find("data")->Find("corrupt")->as_bool());
}

TEST(Qcow2Header, ReportsTablesPastEndOfFile) {
  Result<Qcow2Header> h = ParseBytes(CraftQcow2Header(CraftOptions{}));
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(HasProblemContaining(h->problems, "refcount table at offset 65536"));
  EXPECT_TRUE(HasProblemContaining(h->problems, "L1 table"));
}

TEST(Qcow2Header, ReportsMisalignedAndOversizedTables) {
  std::vector<uint8_t> bytes = CraftQcow2Image(CraftOptions{});
  StoreBe64(bytes.data() + kQcow2OffL1TableOffset, 65536 + 8);
  StoreBe32(bytes.data() + kQcow2OffRefcountTableClusters, 0xffffffff);
  StoreBe32(bytes.data() + kQcow2OffNbSnapshots, 0xffffffff);
  StoreBe64(bytes.data() + kQcow2OffSnapshotsOffset, ~0ull);
  Result<Qcow2Header> h = ParseBytes(bytes);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(HasProblemContaining(h->problems, "L1 table offset 65544 is not aligned"));
  EXPECT_TRUE(HasProblemContaining(h->problems, "refcount table is"));
  EXPECT_TRUE(HasProblemContaining(h->problems, "snapshot table"));

  StoreBe32(bytes.data() + kQcow2OffL1Size, 0);  // too small for 64 MiB
  h = ParseBytes(bytes);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(HasProblemContaining(h->problems, "too few"));
}

// Appends a bitmap directory cluster to a crafted image and points a
// bitmaps extension at it.
std::vector<uint8_t> ImageWithBitmaps(const std::vector<std::pair<std::string, uint8_t>>& bitmaps,
                                      uint32_t flags, uint64_t dir_size_delta = 0) {
  std::vector<uint8_t> dir;
  for (const auto& [name, gran] : bitmaps) {
    size_t at = dir.size();
    dir.resize(at + (24 + name.size() + 7) / 8 * 8, 0);
    StoreBe64(dir.data() + at, 0);
    StoreBe32(dir.data() + at + 12, flags);
    dir[at + 16] = 1;
    dir[at + 17] = gran;
    StoreBe16(dir.data() + at + 18, uint16_t(name.size()));
    std::copy(name.begin(), name.end(), dir.begin() + at + 24);
  }
  CraftOptions o;
  o.autoclear_features = kQcow2AutoclearBitmaps;
  std::vector<uint8_t> ext(24);
  StoreBe32(ext.data(), uint32_t(bitmaps.size()));
  StoreBe64(ext.data() + 8, dir.size() + dir_size_delta);
  o.extra_extensions.push_back({kQcow2ExtBitmaps, 0, ext});
  std::vector<uint8_t> image = CraftQcow2Image(o);
  const uint64_t dir_offset = image.size();
  image.resize(image.size() + 65536, 0);
  std::copy(dir.begin(), dir.end(), image.begin() + dir_offset);
  uint64_t ext_at = 112;  // the only extension
  StoreBe64(image.data() + ext_at + 8 + 16, dir_offset);
  return image;
}

TEST(Qcow2Header, ParsesBitmapDirectory) {
  Result<ImageMeta> m = ParseMeta(ImageWithBitmaps({{"b0", 16}, {"second-bitmap", 20}}, 2));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->problems.empty()) << m->problems.front();
  const Json* list = m->format_specific.Find("data")->Find("bitmaps");
  ASSERT_NE(list, nullptr);
  ASSERT_EQ(list->as_array().size(), 2u);
  const Json& second = list->as_array()[1];
  EXPECT_EQ(second.Find("name")->as_string(), "second-bitmap");
  EXPECT_EQ(second.Find("granularity")->as_uint(), 1u << 20);
  ASSERT_EQ(second.Find("flags")->as_array().size(), 1u);
  EXPECT_EQ(second.Find("flags")->as_array()[0].as_string(), "auto");
}

TEST(Qcow2Header, IgnoresMalformedBitmapDirectoryWithProblem) {
  // Directory size one byte short of the last entry.
  Result<ImageMeta> m = ParseMeta(ImageWithBitmaps({{"b0", 16}, {"b1", 16}}, 0, uint64_t(-9)));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(HasProblemContaining(m->problems, "bitmaps ignored"));
  EXPECT_EQ(m->format_specific.Find("data")->Find("bitmaps"), nullptr);
  // Directory size beyond any sane bound.
  m = ParseMeta(ImageWithBitmaps({{"b0", 16}}, 0, 1ull << 40));
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(HasProblemContaining(m->problems, "bitmaps ignored"));
}

TEST(Qcow2Driver, ProbesVersionsTwoAndAbove) {
  const FormatDriver& d = Driver();
  std::vector<uint8_t> head = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
  EXPECT_EQ(d.Probe(head, 1 << 20), 100);
  head[7] = 2;
  EXPECT_EQ(d.Probe(head, 1 << 20), 100);
  head[7] = 1;  // qcow v1 belongs to the qcow driver
  EXPECT_EQ(d.Probe(head, 1 << 20), 0);
  head[7] = 0;
  EXPECT_EQ(d.Probe(head, 1 << 20), 0);
  // Issue 9, as qemu: an unknown version is a qcow2 image qemu cannot open
  // ("Unsupported qcow2 version 4"), never raw.
  head[7] = 4;
  EXPECT_EQ(d.Probe(head, 1 << 20), 100);
  EXPECT_EQ(d.Probe(std::span<const uint8_t>(head.data(), 7), 7), 0);
  EXPECT_EQ(d.Probe({}, 0), 0);
  MemoryReader r(CraftQcow2Image(CraftOptions{}));
  Result<const FormatDriver*> probed = ProbeFormat(r);
  ASSERT_TRUE(probed.ok());
  EXPECT_EQ((*probed)->Name(), "qcow2");
}

TEST(Qcow2Driver, FillsImageMetaFromHeader) {
  CraftOptions o;
  o.size = 123456789;
  o.cluster_bits = 14;
  o.backing = "../other pool/base.img";
  o.backing_format = "raw";
  o.compatible_features = kQcow2CompatLazyRefcounts;
  o.incompatible_features = kQcow2IncompatExtendedL2 | kQcow2IncompatDirty;
  o.crypt_method = kQcow2CryptAes;
  Result<ImageMeta> m = ParseMeta(CraftQcow2Image(o));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->format, "qcow2");
  EXPECT_EQ(m->virtual_size, 123456789u / 512 * 512);  // whole sectors, as qemu (issue 9)
  EXPECT_EQ(m->cluster_size, 16384u);
  EXPECT_EQ(m->backing, "../other pool/base.img");
  EXPECT_EQ(m->backing_format, "raw");
  EXPECT_TRUE(m->dirty);
  EXPECT_TRUE(m->encrypted);
  EXPECT_EQ(m->encryption_format, "aes");
  EXPECT_EQ(m->compat, "1.1");
  EXPECT_EQ(m->features, (std::vector<std::string>{"lazy_refcounts", "extended_l2"}));
  EXPECT_TRUE(m->problems.empty()) << m->problems.front();
  Result<Json> expected =
      Json::Parse(R"({"type":"qcow2","data":{"compat":"1.1","compression-type":"zlib",)"
                  R"("lazy-refcounts":true,"refcount-bits":16,"encrypt":{"format":"aes"},)"
                  R"("corrupt":false,"extended-l2":true}})");
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(m->format_specific, *expected) << m->format_specific.Dump(2);
}

TEST(Qcow2Driver, ReportsLuksWithoutHeaderAsProblem) {
  CraftOptions o;
  o.crypt_method = kQcow2CryptLuks;
  std::vector<uint8_t> crypt(16);
  StoreBe64(crypt.data(), 1ull << 40);  // far past EOF
  StoreBe64(crypt.data() + 8, 4096);
  o.extra_extensions.push_back({kQcow2ExtCryptHeader, 0, crypt});
  Result<ImageMeta> m = ParseMeta(CraftQcow2Image(o));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->encryption_format, "luks");
  EXPECT_TRUE(HasProblemContaining(m->problems, "LUKS header"));
  EXPECT_EQ(m->format_specific.Find("data")->Find("encrypt")->Find("format")->as_string(), "luks");
}

// --- Real images from qemu-img --------------------------------------------

// Compares JSON values with objects as unordered maps; explains the first
// difference in *why.
bool SameJson(const Json& a, const Json& b, const std::string& at, std::string* why) {
  if (a.is_object() && b.is_object()) {
    std::map<std::string, const Json*> ma, mb;
    for (const auto& [k, v] : a.as_object()) ma[k] = &v;
    for (const auto& [k, v] : b.as_object()) mb[k] = &v;
    for (const auto& [k, v] : ma) {
      if (!mb.count(k)) return *why = at + "." + k + " only in ours", false;
      if (!SameJson(*v, *mb[k], at + "." + k, why)) return false;
    }
    for (const auto& [k, v] : mb) {
      if (!ma.count(k)) return *why = at + "." + k + " only in qemu's", false;
    }
    return true;
  }
  if (a.is_array() && b.is_array()) {
    if (a.as_array().size() != b.as_array().size()) return *why = at + " array sizes differ", false;
    for (size_t i = 0; i < a.as_array().size(); ++i) {
      if (!SameJson(a.as_array()[i], b.as_array()[i], at + "[" + std::to_string(i) + "]", why)) {
        return false;
      }
    }
    return true;
  }
  if (!(a == b)) return *why = at + ": " + a.Dump() + " vs " + b.Dump(), false;
  return true;
}

Json QemuInfo(const std::string& path) {
  RunResult r = testutil::Run({"qemu-img", "info", "--output=json", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Result<Json> j = Json::Parse(r.out);
  EXPECT_TRUE(j.ok()) << j.status().ToString() << "\n" << r.out;
  return j.ok() ? *j : Json();
}

Result<ImageMeta> ParseFile(const std::string& path) {
  Result<File> f = File::OpenRead(path);
  if (!f.ok()) return f.status();
  return Driver().Parse(*f);
}

// Checks our metadata for `path` against `qemu-img info --output=json`.
void ExpectMatchesQemu(const std::string& path) {
  SCOPED_TRACE(path);
  Json info = QemuInfo(path);
  ASSERT_TRUE(info.is_object());
  Result<ImageMeta> m = ParseFile(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(info.Find("format")->as_string(), m->format);
  EXPECT_EQ(info.Find("virtual-size")->as_uint(), m->virtual_size);
  EXPECT_EQ(info.Find("cluster-size")->as_uint(), m->cluster_size.value_or(0));
  EXPECT_EQ(info.Find("dirty-flag")->as_bool(), m->dirty);
  const Json* encrypted = info.Find("encrypted");
  EXPECT_EQ(encrypted != nullptr && encrypted->as_bool(), m->encrypted);
  const Json* backing = info.Find("backing-filename");
  EXPECT_EQ(backing ? std::optional<std::string>(backing->as_string()) : std::nullopt, m->backing);
  const Json* backing_fmt = info.Find("backing-filename-format");
  EXPECT_EQ(backing_fmt ? std::optional<std::string>(backing_fmt->as_string()) : std::nullopt,
            m->backing_format);
  std::string why;
  EXPECT_TRUE(SameJson(m->format_specific, *info.Find("format-specific"), "format-specific", &why))
      << why << "\nours: " << m->format_specific.Dump(2);
  EXPECT_TRUE(m->problems.empty()) << m->problems.front();
}

void MustRun(const std::vector<std::string>& argv) {
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err;
}

struct QemuCase {
  std::string name;
  std::vector<std::string> options;  // between `create -f qcow2` and the file name
  std::vector<std::string> expect_features;
};

class Qcow2QemuImage : public ::testing::TestWithParam<QemuCase> {};

TEST_P(Qcow2QemuImage, MatchesQemuImgInfo) {
  ScopedTempDir dir;
  const std::string path = dir.Sub("test.qcow2");
  std::vector<std::string> argv = {"qemu-img", "create", "-q", "-f", "qcow2"};
  for (const std::string& opt : GetParam().options) {
    std::string o = opt;
    if (size_t at = o.find("{dir}"); at != std::string::npos) o.replace(at, 5, dir.path());
    argv.push_back(o);
  }
  argv.push_back(path);
  argv.push_back("100M");
  RunResult r = testutil::RunRetryingQemuCpuBenchmark(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectMatchesQemu(path);
  Result<ImageMeta> m = ParseFile(path);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->features, GetParam().expect_features);
}

INSTANTIATE_TEST_SUITE_P(
    Created, Qcow2QemuImage,
    ::testing::Values(
        QemuCase{"V2Compat010", {"-o", "compat=0.10"}, {}}, QemuCase{"V3Default", {}, {}},
        QemuCase{"Cluster512", {"-o", "cluster_size=512"}, {}},
        QemuCase{"Cluster4K", {"-o", "cluster_size=4k"}, {}},
        QemuCase{"Cluster16K", {"-o", "cluster_size=16k"}, {}},
        QemuCase{"Cluster2M", {"-o", "cluster_size=2M"}, {}},
        QemuCase{"LazyRefcounts", {"-o", "lazy_refcounts=on"}, {"lazy_refcounts"}},
        QemuCase{"ExtendedL2", {"-o", "extended_l2=on"}, {"extended_l2"}},
        QemuCase{"Zstd", {"-o", "compression_type=zstd"}, {}},
        QemuCase{"RefcountBits1", {"-o", "refcount_bits=1"}, {}},
        QemuCase{"RefcountBits64", {"-o", "refcount_bits=64"}, {}},
        QemuCase{"DataFile", {"-o", "data_file={dir}/data.raw"}, {}},
        QemuCase{"DataFileRaw", {"-o", "data_file={dir}/data.raw,data_file_raw=on"}, {}},
        QemuCase{
            "Aes",
            {"--object", "secret,id=s0,data=x", "-o", "encrypt.format=aes,encrypt.key-secret=s0"},
            {}},
        QemuCase{"Luks",
                 {"--object", "secret,id=s0,data=x", "-o",
                  "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100"},
                 {}},
        QemuCase{"LuksEssivCbc",
                 {"--object", "secret,id=s0,data=x", "-o",
                  "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100,"
                  "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,"
                  "encrypt.ivgen-hash-alg=sha256"},
                 {}},
        QemuCase{"Everything",
                 {"-o", "lazy_refcounts=on,extended_l2=on,compression_type=zstd,cluster_size=128k"},
                 {"lazy_refcounts", "extended_l2"}}),
    [](const ::testing::TestParamInfo<QemuCase>& info) { return info.param.name; });

TEST(Qcow2QemuImages, MatchesQemuImgInfoForOverlays) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "raw", dir.Sub("base.raw"), "10M"});
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
           dir.Sub("mid.qcow2")});
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b",
           dir.Sub("mid.qcow2"), "-F", "qcow2", dir.Sub("top.qcow2")});
  ExpectMatchesQemu(dir.Sub("mid.qcow2"));
  ExpectMatchesQemu(dir.Sub("top.qcow2"));
  Result<ImageMeta> mid = ParseFile(dir.Sub("mid.qcow2"));
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->backing, "base.raw");
  EXPECT_EQ(mid->backing_format, "raw");
  EXPECT_EQ(mid->virtual_size, 10u << 20);
}

TEST(Qcow2QemuImages, MatchesQemuImgInfoForBitmaps) {
  ScopedTempDir dir;
  const std::string path = dir.Sub("bm.qcow2");
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", path, "100M"});
  MustRun({"qemu-img", "bitmap", "--add", path, "b0"});
  MustRun({"qemu-img", "bitmap", "--add", "-g", "1M", "--disable", path, "second"});
  ExpectMatchesQemu(path);
  Result<ImageMeta> m = ParseFile(path);
  ASSERT_TRUE(m.ok());
  ASSERT_NE(m->format_specific.Find("data")->Find("bitmaps"), nullptr);
  EXPECT_EQ(m->format_specific.Find("data")->Find("bitmaps")->as_array().size(), 2u);
}

TEST(Qcow2QemuImages, MatchesQemuImgInfoForDirtyLazyRefcountImage) {
  ScopedTempDir dir;
  const std::string path = dir.Sub("dirty.qcow2");
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "10M"});
  // Set the dirty bit as a crashed QEMU with lazy refcounts leaves it.
  Result<File> f = File::OpenRead(path);
  ASSERT_TRUE(f.ok());
  std::vector<uint8_t> head(f->Size());
  ASSERT_TRUE(ReadExact(*f, 0, head, "image").ok());
  head[kQcow2OffIncompatibleFeatures + 7] |= 1;
  ASSERT_TRUE(testutil::WriteBytes(path, head).ok());
  ExpectMatchesQemu(path);
  EXPECT_TRUE(ParseFile(path)->dirty);
}

// --- Test helpers checked against qemu-img ----------------------------------

TEST(Qcow2Craft, CraftedImagesPassQemuImgCheck) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "raw", dir.Sub("base.raw"), "1M"});
  std::vector<CraftOptions> cases(5);
  cases[1].version = 2;
  cases[1].backing = "base.raw";
  cases[2].cluster_bits = 9;
  cases[2].size = 1ull << 30;  // L1 spans many clusters
  cases[3].refcount_order = 0;
  cases[3].cluster_bits = 12;
  cases[4].backing = "base.raw";
  cases[4].backing_format = "raw";
  cases[4].feature_table = true;
  cases[4].compatible_features = kQcow2CompatLazyRefcounts;
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string path = dir.Sub("c" + std::to_string(i) + ".qcow2");
    ASSERT_TRUE(testutil::WriteCraftedQcow2(path, cases[i]).ok());
    RunResult check = testutil::Run({"qemu-img", "check", path});
    EXPECT_EQ(check.exit_code, 0) << "case " << i << ": " << check.out << check.err;
    ExpectMatchesQemu(path);
  }
}

TEST(Qcow2Craft, StripBackingFormatKeepsOtherExtensionsAndPassesCheck) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("base.qcow2"), "10M"});
  const std::string top = dir.Sub("top.qcow2");
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top});
  Result<File> before_file = File::OpenRead(top);
  ASSERT_TRUE(before_file.ok());
  Result<Qcow2Header> before = ParseQcow2Header(*before_file);
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->backing_format, "qcow2");

  ASSERT_TRUE(testutil::StripBackingFormat(top).ok());
  Json info = QemuInfo(top);
  EXPECT_EQ(info.Find("backing-filename-format"), nullptr);
  EXPECT_EQ(info.Find("backing-filename")->as_string(), "base.qcow2");
  RunResult check = testutil::Run({"qemu-img", "check", top});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  Result<File> after_file = File::OpenRead(top);
  ASSERT_TRUE(after_file.ok());
  Result<Qcow2Header> after = ParseQcow2Header(*after_file);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->backing_format.has_value());
  EXPECT_EQ(after->backing_file, "base.qcow2");
  EXPECT_EQ(after->extensions.size() + 1, before->extensions.size());
  EXPECT_EQ(after->feature_names.size(), before->feature_names.size());
  ExpectMatchesQemu(top);
  // A second strip has nothing to remove.
  EXPECT_EQ(testutil::StripBackingFormat(top).code(), Code::kInvalidArgument);
}

TEST(Qcow2Craft, SetBackingStringRetargetsAndRemoves) {
  ScopedTempDir dir;
  const std::string img = dir.Sub("img.qcow2");
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", img, "10M"});
  // A backing that does not exist, with a format: qemu-img still reads the header.
  ASSERT_TRUE(testutil::SetBackingString(img, "missing/nowhere.qcow2", "qcow2").ok());
  Json info = QemuInfo(img);
  EXPECT_EQ(info.Find("backing-filename")->as_string(), "missing/nowhere.qcow2");
  EXPECT_EQ(info.Find("backing-filename-format")->as_string(), "qcow2");
  ExpectMatchesQemu(img);

  // A loop onto itself, without a format.
  ASSERT_TRUE(testutil::SetBackingString(img, "img.qcow2", std::nullopt).ok());
  Result<ImageMeta> m = ParseFile(img);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->backing, "img.qcow2");
  EXPECT_FALSE(m->backing_format.has_value());
  ExpectMatchesQemu(img);

  // Removing it leaves a clean standalone image.
  ASSERT_TRUE(testutil::SetBackingString(img, "", std::nullopt).ok());
  m = ParseFile(img);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->backing.has_value());
  RunResult check = testutil::Run({"qemu-img", "check", img});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  ExpectMatchesQemu(img);

  EXPECT_EQ(testutil::SetBackingString(img, std::string(1024, 'x'), std::nullopt).code(),
            Code::kInvalidArgument);
}

TEST(Run, CollectsOutputAndExitCode) {
  RunResult r = testutil::Run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  RunResult big = testutil::Run({"head", "-c", "300000", "/dev/zero"});
  EXPECT_EQ(big.exit_code, 0);
  EXPECT_EQ(big.out.size(), 300000u);
  RunResult missing = testutil::Run({"/nonexistent/program"});
  EXPECT_EQ(missing.exit_code, 127);
  RunResult echo = testutil::RunWithInput({"cat"}, "piped");
  EXPECT_EQ(echo.out, "piped");
}

}  // namespace
}  // namespace chainfs::core
