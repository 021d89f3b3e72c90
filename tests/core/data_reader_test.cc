// The read path on crafted images: cluster kinds, subclusters, compressed
// clusters, chain fall-through, hostile tables, and the L2 cache.
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <random>
#include <thread>

#include "core/data/chain_reader.h"
#include "core/data/decompress.h"
#include "core/data/l2_cache.h"
#include "core/data/qcow2_reader.h"
#include "core/data/raw_reader.h"
#include "core/util/endian.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

constexpr uint64_t kCopied = 1ull << 63;
constexpr uint64_t kCompressed = 1ull << 62;

// Builds a crafted qcow2 image in memory and lets tests place L2 tables,
// data clusters and entries by hand.
class ImageBuilder {
 public:
  explicit ImageBuilder(testutil::CraftOptions opts = {}) : opts_(opts) {
    bytes_ = testutil::CraftQcow2Image(opts_);
    MemoryReader r(bytes_);
    Result<Qcow2Header> h = ParseQcow2Header(r);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    if (h.ok()) header_ = *h;
  }
  uint64_t cluster_size() const { return uint64_t{1} << opts_.cluster_bits; }
  // Appends a cluster filled with `fill`; returns its offset.
  uint64_t AddCluster(uint8_t fill = 0) {
    uint64_t off = bytes_.size();
    bytes_.resize(off + cluster_size(), fill);
    return off;
  }
  // Appends arbitrary bytes at the end (no alignment); returns their offset.
  uint64_t AddBytes(const std::vector<uint8_t>& b) {
    uint64_t off = bytes_.size();
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return off;
  }
  void SetL1(uint64_t index, uint64_t entry) {
    StoreBe64(bytes_.data() + header_.l1_table_offset + index * 8, entry);
  }
  void SetL2(uint64_t table, uint64_t index, uint64_t entry, uint64_t bitmap = 0) {
    const uint64_t esize = (opts_.incompatible_features & kQcow2IncompatExtendedL2) ? 16 : 8;
    StoreBe64(bytes_.data() + table + index * esize, entry);
    if (esize == 16) StoreBe64(bytes_.data() + table + index * esize + 8, bitmap);
  }
  // Gives an L2 table to L1 entry 0 and returns its offset.
  uint64_t AddL2() {
    uint64_t t = AddCluster();
    SetL1(0, t | kCopied);
    return t;
  }
  void Patch32(uint64_t off, uint32_t v) { StoreBe32(bytes_.data() + off, v); }
  std::vector<uint8_t>& bytes() { return bytes_; }
  const Qcow2Header& header() const { return header_; }

  Result<std::unique_ptr<Qcow2Reader>> Open(Qcow2ReaderOptions o = {}) const {
    return Qcow2Reader::Open(std::make_unique<MemoryReader>(bytes_), "mem.qcow2", o);
  }
  // Opens the image through a reader that records the host ranges it is
  // advised to read ahead (Reader::Advise) into `advised`.
  Result<std::unique_ptr<Qcow2Reader>> OpenRecordingAdvice(
      std::vector<std::pair<uint64_t, uint64_t>>* advised) const {
    class Recording : public MemoryReader {
     public:
      Recording(std::vector<uint8_t> b, std::vector<std::pair<uint64_t, uint64_t>>* log)
          : MemoryReader(std::move(b)), log_(log) {}
      void Advise(uint64_t offset, uint64_t length) const override {
        log_->emplace_back(offset, length);
      }

     private:
      std::vector<std::pair<uint64_t, uint64_t>>* log_;
    };
    return Qcow2Reader::Open(std::make_unique<Recording>(bytes_, advised), "mem.qcow2", {});
  }
  // Opens the image as a one-element chain.
  std::unique_ptr<ChainReader> Chain() const {
    Result<std::unique_ptr<Qcow2Reader>> r = Open();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return nullptr;
    std::vector<std::unique_ptr<ImageReader>> v;
    v.push_back(std::move(*r));
    return ChainReader::FromImages(std::move(v)).value();
  }

 private:
  testutil::CraftOptions opts_;
  std::vector<uint8_t> bytes_;
  Qcow2Header header_;
};

testutil::CraftOptions Small(uint32_t cluster_bits = 16, uint64_t size = 1 << 20) {
  testutil::CraftOptions o;
  o.cluster_bits = cluster_bits;
  o.size = size;
  return o;
}

std::vector<uint8_t> ReadAll(const ChainReader& r) {
  std::vector<uint8_t> out(r.Size());
  Result<size_t> n = r.Read(0, out);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return out;
}

bool AllEqual(const std::vector<uint8_t>& v, size_t from, size_t len, uint8_t b) {
  for (size_t i = from; i < from + len; ++i) {
    if (v[i] != b) return false;
  }
  return true;
}

std::vector<uint8_t> Deflate(const std::vector<uint8_t>& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(in.size() + 1024);
  zs.next_in = const_cast<uint8_t*>(in.data());
  zs.avail_in = uInt(in.size());
  zs.next_out = out.data();
  zs.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::vector<uint8_t> Zstd(const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out(ZSTD_compressBound(in.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

// A compressed-cluster L2 entry for 2^cluster_bits clusters.
uint64_t CompressedEntry(uint32_t cluster_bits, uint64_t offset, uint64_t size) {
  const uint32_t shift = 62 - (cluster_bits - 8);
  const uint64_t sectors = (offset + size - 1) / 512 - offset / 512;  // additional sectors
  return kCompressed | (sectors << shift) | offset;
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(i % 7 == 0 ? rng() : i / 256);
  return v;
}

// --- Cluster kinds ---------------------------------------------------------

TEST(Qcow2Reader, ReadsNormalClusterAndZerosElsewhere) {
  ImageBuilder b(Small());
  uint64_t l2 = b.AddL2();
  uint64_t data = b.AddCluster(0x5a);
  b.SetL2(l2, 1, data | kCopied);
  auto chain = b.Chain();
  ASSERT_TRUE(chain);
  std::vector<uint8_t> all = ReadAll(*chain);
  ASSERT_EQ(all.size(), 1u << 20);
  EXPECT_TRUE(AllEqual(all, 0, 65536, 0));
  EXPECT_TRUE(AllEqual(all, 65536, 65536, 0x5a));
  EXPECT_TRUE(AllEqual(all, 131072, all.size() - 131072, 0));
  // A read straddling the boundary.
  std::vector<uint8_t> buf(100);
  ASSERT_TRUE(chain->Read(65536 - 50, buf).ok());
  EXPECT_TRUE(AllEqual(buf, 0, 50, 0));
  EXPECT_TRUE(AllEqual(buf, 50, 50, 0x5a));
}

TEST(Qcow2Reader, ReadPastEndIsShortThenEmpty) {
  ImageBuilder b(Small());
  auto chain = b.Chain();
  std::vector<uint8_t> buf(4096, 0xff);
  Result<size_t> n = chain->Read((1 << 20) - 1000, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1000u);
  n = chain->Read(1 << 20, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST(Qcow2Reader, MergesContiguousClustersIntoOneStatus) {
  ImageBuilder b(Small());
  uint64_t l2 = b.AddL2();
  uint64_t c1 = b.AddCluster(1);
  uint64_t c2 = b.AddCluster(2);
  uint64_t c3 = b.AddCluster(3);
  b.SetL2(l2, 0, c1 | kCopied);
  b.SetL2(l2, 1, c2 | kCopied);
  b.SetL2(l2, 3, c3 | kCopied);  // index 2 unallocated
  auto r = b.Open();
  ASSERT_TRUE(r.ok());
  Result<BlockStatus> st = (*r)->GetStatus(0, 1 << 20, true);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->allocation, Allocation::kData);
  EXPECT_EQ(st->length, 131072u);
  EXPECT_EQ(*st->host_offset, c1);
  st = (*r)->GetStatus(131072, 1 << 20, true);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->allocation, Allocation::kUnallocated);
  EXPECT_EQ(st->length, 65536u);
}

TEST(Qcow2Reader, ZeroFlagHidesBackingAndUnallocatedShowsIt) {
  ImageBuilder base(Small());
  uint64_t bl2 = base.AddL2();
  for (uint64_t i = 0; i < 4; ++i) base.SetL2(bl2, i, base.AddCluster(uint8_t(0x10 + i)) | kCopied);
  ImageBuilder top(Small());
  uint64_t tl2 = top.AddL2();
  top.SetL2(tl2, 0, 1);  // zero, no offset ("zero plain")
  uint64_t prealloc = top.AddCluster(0xee);
  top.SetL2(tl2, 1, prealloc | kCopied | 1);  // zero with an allocated cluster
  top.SetL2(tl2, 2, top.AddCluster(0x77) | kCopied);
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(top.Open().value());
  v.push_back(base.Open().value());
  auto chain = ChainReader::FromImages(std::move(v)).value();
  std::vector<uint8_t> all = ReadAll(*chain);
  EXPECT_TRUE(AllEqual(all, 0, 131072, 0));
  EXPECT_TRUE(AllEqual(all, 131072, 65536, 0x77));
  EXPECT_TRUE(AllEqual(all, 196608, 65536, 0x13));
  EXPECT_TRUE(AllEqual(all, 262144, all.size() - 262144, 0));

  Result<std::vector<MapExtent>> map = chain->Map();
  ASSERT_TRUE(map.ok()) << map.status().ToString();
  ASSERT_GE(map->size(), 5u);
  const auto& m = *map;
  EXPECT_EQ(m[0].length, 65536u);
  EXPECT_TRUE(m[0].zero && !m[0].data && m[0].present && m[0].depth == 0 && !m[0].offset);
  EXPECT_TRUE(m[1].zero && m[1].offset && *m[1].offset == prealloc);
  EXPECT_TRUE(m[2].data && m[2].depth == 0);
  EXPECT_TRUE(m[3].data && m[3].depth == 1 && m[3].length == 65536u);
  // The rest is unallocated everywhere: zeros at the base's depth, not present.
  EXPECT_TRUE(m[4].zero && !m[4].present && m[4].depth == 1);
  EXPECT_EQ(m[4].start + m[4].length, 1u << 20);
}

TEST(Qcow2Reader, ReadsZlibAndZstdCompressedClusters) {
  for (uint8_t type : {kQcow2CompressionZlib, kQcow2CompressionZstd}) {
    SCOPED_TRACE(int(type));
    testutil::CraftOptions o = Small();
    if (type == kQcow2CompressionZstd) {
      o.compression_type = type;
      o.incompatible_features = kQcow2IncompatCompression;
    }
    ImageBuilder b(o);
    uint64_t l2 = b.AddL2();
    std::vector<uint8_t> plain = Pattern(65536, 5);
    std::vector<uint8_t> packed = type == kQcow2CompressionZlib ? Deflate(plain) : Zstd(plain);
    b.AddBytes({1, 2, 3});  // compressed data need not be aligned
    uint64_t off = b.AddBytes(packed);
    b.SetL2(l2, 2, CompressedEntry(16, off, packed.size()));
    auto chain = b.Chain();
    ASSERT_TRUE(chain);
    std::vector<uint8_t> got(65536);
    ASSERT_TRUE(chain->Read(131072, got).ok());
    EXPECT_EQ(got, plain);
    // A read of part of the cluster, twice (the second from the cache).
    std::vector<uint8_t> part(1000);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(chain->Read(131072 + 5000, part).ok());
      EXPECT_TRUE(std::equal(part.begin(), part.end(), plain.begin() + 5000));
    }
    Result<std::vector<MapExtent>> map = chain->Map(131072, 65536);
    ASSERT_TRUE(map.ok());
    ASSERT_EQ(map->size(), 1u);
    EXPECT_TRUE((*map)[0].data && (*map)[0].compressed && !(*map)[0].offset);
  }
}

TEST(Qcow2Reader, ExtendedL2SubclustersFollowTheirBitmaps) {
  testutil::CraftOptions o = Small();
  o.incompatible_features = kQcow2IncompatExtendedL2;
  ImageBuilder top(o);
  uint64_t l2 = top.AddL2();
  uint64_t data = top.AddCluster(0xab);
  // Cluster 0: subcluster 1 allocated, 2 zero, others fall through.
  top.SetL2(l2, 0, data | kCopied, (1ull << 1) | (1ull << (32 + 2)));
  // Cluster 1: no host cluster, subcluster 0 reads as zeros.
  top.SetL2(l2, 1, 0, 1ull << 32);
  ImageBuilder base(Small());
  uint64_t bl2 = base.AddL2();
  base.SetL2(bl2, 0, base.AddCluster(0x11) | kCopied);
  base.SetL2(bl2, 1, base.AddCluster(0x22) | kCopied);
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(top.Open().value());
  v.push_back(base.Open().value());
  auto chain = ChainReader::FromImages(std::move(v)).value();
  std::vector<uint8_t> all = ReadAll(*chain);
  const size_t sc = 2048;
  EXPECT_TRUE(AllEqual(all, 0, sc, 0x11));
  EXPECT_TRUE(AllEqual(all, sc, sc, 0xab));
  EXPECT_TRUE(AllEqual(all, 2 * sc, sc, 0));
  EXPECT_TRUE(AllEqual(all, 3 * sc, 65536 - 3 * sc, 0x11));
  EXPECT_TRUE(AllEqual(all, 65536, sc, 0));
  EXPECT_TRUE(AllEqual(all, 65536 + sc, 65536 - sc, 0x22));
  Result<std::vector<MapExtent>> map = chain->Map(0, 65536);
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(map->size(), 4u);
  EXPECT_EQ((*map)[1].depth, 0);
  EXPECT_EQ(*(*map)[1].offset, data + sc);
  EXPECT_TRUE((*map)[2].zero && *(*map)[2].offset == data + 2 * sc);
  EXPECT_EQ((*map)[3].depth, 1);
}

TEST(ChainReader, ReadsZerosPastAShorterBacking) {
  testutil::ScopedTempDir dir;
  std::vector<uint8_t> raw(100000, 0x33);
  ASSERT_TRUE(testutil::WriteBytes(dir.Sub("b.raw"), raw).ok());
  ImageBuilder top(Small());
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(top.Open().value());
  v.push_back(RawReader::Open(dir.Sub("b.raw")).value());
  EXPECT_EQ(v[1]->Size(), 100352u);  // rounded up to 512 like qemu
  auto chain = ChainReader::FromImages(std::move(v)).value();
  std::vector<uint8_t> all = ReadAll(*chain);
  EXPECT_TRUE(AllEqual(all, 0, 100000, 0x33));
  EXPECT_TRUE(AllEqual(all, 100000, all.size() - 100000, 0));
  Result<std::vector<MapExtent>> map = chain->Map();
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(map->size(), 3u);
  EXPECT_EQ((*map)[0].depth, 1);
  EXPECT_TRUE((*map)[0].data);
  EXPECT_EQ((*map)[0].length, 100000u);
  EXPECT_TRUE((*map)[1].zero && (*map)[1].depth == 1 && (*map)[1].present);
  EXPECT_TRUE((*map)[2].zero && (*map)[2].depth == 0 && !(*map)[2].present);
  EXPECT_EQ((*map)[2].start, 100352u);
}

TEST(ChainReader, StreamsInOrderAndStopsOnSinkError) {
  ImageBuilder b(Small());
  auto chain = b.Chain();
  uint64_t expect = 0;
  Status s = chain->ReadStream(
      0, UINT64_MAX,
      [&](uint64_t off, std::span<const uint8_t> bytes) {
        EXPECT_EQ(off, expect);
        expect += bytes.size();
        return Status::Ok();
      },
      300000);
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(expect, 1u << 20);
  int calls = 0;
  s = chain->ReadStream(0, UINT64_MAX, [&](uint64_t, std::span<const uint8_t>) {
    ++calls;
    return Error(Code::kIo, "stdout closed");
  });
  EXPECT_EQ(s.code(), Code::kIo);
  EXPECT_EQ(calls, 1);
}

// --- Hostile tables -------------------------------------------------------

Code ReadAllCode(const ImageBuilder& b) {
  Result<std::unique_ptr<Qcow2Reader>> r = b.Open();
  if (!r.ok()) return r.status().code();
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(std::move(*r));
  auto chain = ChainReader::FromImages(std::move(v)).value();
  std::vector<uint8_t> out(chain->Size());
  Result<size_t> n = chain->Read(0, out);
  Result<std::vector<MapExtent>> m = chain->Map();
  if (!n.ok()) return n.status().code();
  if (!m.ok()) return m.status().code();
  return Code::kOk;
}

TEST(Qcow2Reader, RejectsL2TablePastEof) {
  ImageBuilder b(Small());
  b.SetL1(0, (uint64_t{1} << 40) | kCopied);
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsUnalignedL2Table) {
  ImageBuilder b(Small());
  uint64_t l2 = b.AddCluster();
  b.SetL1(0, (l2 + 512) | kCopied);
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsDataClusterPastEof) {
  ImageBuilder b(Small());
  uint64_t l2 = b.AddL2();
  b.SetL2(l2, 0, (uint64_t{1} << 45) | kCopied);
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsUnalignedDataCluster) {
  ImageBuilder b(Small());
  uint64_t l2 = b.AddL2();
  b.SetL2(l2, 0, (b.AddCluster() + 4096) | kCopied);
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsCompressedClusterPastEof) {
  ImageBuilder b(Small());
  uint64_t l2 = b.AddL2();
  b.SetL2(l2, 0, CompressedEntry(16, uint64_t{1} << 40, 1000));
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsGarbageCompressedData) {
  for (uint8_t type : {kQcow2CompressionZlib, kQcow2CompressionZstd}) {
    testutil::CraftOptions o = Small();
    if (type == kQcow2CompressionZstd) {
      o.compression_type = type;
      o.incompatible_features = kQcow2IncompatCompression;
    }
    ImageBuilder b(o);
    uint64_t l2 = b.AddL2();
    uint64_t off = b.AddBytes(std::vector<uint8_t>(3000, 0xff));
    b.SetL2(l2, 0, CompressedEntry(16, off, 3000));
    EXPECT_EQ(ReadAllCode(b), Code::kCorrupt) << int(type);
  }
}

TEST(Qcow2Reader, RejectsCompressedStreamThatEndsEarly) {
  ImageBuilder b(Small());
  uint64_t l2 = b.AddL2();
  std::vector<uint8_t> packed = Deflate(std::vector<uint8_t>(1000, 7));  // 1000 bytes, not 64K
  uint64_t off = b.AddBytes(packed);
  b.SetL2(l2, 0, CompressedEntry(16, off, packed.size()));
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsSubclusterBothAllocatedAndZero) {
  testutil::CraftOptions o = Small();
  o.incompatible_features = kQcow2IncompatExtendedL2;
  ImageBuilder b(o);
  uint64_t l2 = b.AddL2();
  b.SetL2(l2, 0, b.AddCluster() | kCopied, (1ull << 5) | (1ull << 37));
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsAllocatedSubclustersWithoutCluster) {
  testutil::CraftOptions o = Small();
  o.incompatible_features = kQcow2IncompatExtendedL2;
  ImageBuilder b(o);
  uint64_t l2 = b.AddL2();
  b.SetL2(l2, 3, 0, 1ull << 4);
  EXPECT_EQ(ReadAllCode(b), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsL1TableTooSmallForTheDisk) {
  ImageBuilder b(Small(16, 1ull << 40));  // 1 TiB needs 2048 L1 entries
  b.Patch32(kQcow2OffL1Size, 3);
  Result<std::unique_ptr<Qcow2Reader>> r = b.Open();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
}

TEST(Qcow2Reader, RejectsL1TablePastEof) {
  ImageBuilder b(Small());
  StoreBe64(b.bytes().data() + kQcow2OffL1TableOffset, uint64_t{1} << 40);
  Result<std::unique_ptr<Qcow2Reader>> r = b.Open();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
}

TEST(Qcow2Reader, RefusesEncryptedImages) {
  testutil::CraftOptions o = Small();
  o.crypt_method = kQcow2CryptAes;
  ImageBuilder b(o);
  Result<std::unique_ptr<Qcow2Reader>> r = b.Open();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
}

TEST(Qcow2Reader, RefusesDataFileUnlessAllowed) {
  testutil::CraftOptions o = Small();
  o.incompatible_features = kQcow2IncompatDataFile;
  o.data_file = "/etc/passwd";
  ImageBuilder b(o);
  Result<std::unique_ptr<Qcow2Reader>> r = b.Open();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied);
}

TEST(Qcow2Reader, SurvivesRandomGarbageTables) {
  // Random L1/L2 contents: any answer is fine, a crash or hang is not.
  for (uint32_t seed = 0; seed < 40; ++seed) {
    testutil::CraftOptions o = Small(seed % 2 ? 16 : 14, 4 << 20);
    if (seed % 3 == 0) o.incompatible_features = kQcow2IncompatExtendedL2;
    ImageBuilder b(o);
    std::mt19937_64 rng(seed);
    uint64_t l2 = b.AddCluster();
    uint64_t l2b = b.AddCluster();
    for (int i = 0; i < 4; ++i) b.AddCluster(uint8_t(rng()));
    b.SetL1(0, l2 | kCopied);
    b.SetL1(1, rng() % 2 ? l2b : rng());
    for (uint64_t i = 0; i < b.cluster_size() / 8; ++i) {
      uint64_t v = rng();
      if (i % 3 == 0) v &= ~(uint64_t{0x00ffffffffffff00} & ~uint64_t(b.bytes().size() - 1));
      StoreBe64(b.bytes().data() + l2 + i * 8, v);
      StoreBe64(b.bytes().data() + l2b + i * 8, rng() % 4 == 0 ? 0 : v ^ rng());
    }
    Code c = ReadAllCode(b);
    EXPECT_TRUE(c == Code::kOk || c == Code::kCorrupt || c == Code::kUnsupported)
        << "seed " << seed << ": " << CodeName(c);
  }
}

// --- Decompression --------------------------------------------------------

TEST(Decompress, OutputIsBoundedByTheCluster) {
  std::vector<uint8_t> big(1 << 20, 9);
  std::vector<uint8_t> packed = Deflate(big);
  std::vector<uint8_t> out(4096);
  EXPECT_TRUE(InflateRaw(packed, out).ok());  // only one cluster's worth is produced
  EXPECT_TRUE(AllEqual(out, 0, out.size(), 9));
  std::vector<uint8_t> zpacked = Zstd(big);
  EXPECT_TRUE(DecompressZstd(zpacked, out).ok());
  EXPECT_EQ(DecompressCluster(7, packed, out).code(), Code::kUnsupported);
  EXPECT_EQ(DecompressZstd({}, out).code(), Code::kCorrupt);
}

// --- L2 cache -------------------------------------------------------------

TEST(L2Cache, EvictsLeastRecentlyUsed) {
  L2Cache c(2);
  auto block = [](uint8_t v) { return std::make_shared<const std::vector<uint8_t>>(1, v); };
  c.Insert(1, block(1));
  c.Insert(2, block(2));
  ASSERT_TRUE(c.Find(1));  // 1 is now the most recent
  c.Insert(3, block(3));
  EXPECT_TRUE(c.Find(1));
  EXPECT_FALSE(c.Find(2));
  EXPECT_TRUE(c.Find(3));
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.stats().evictions, 1u);
  // A second insert of a key keeps the first block.
  EXPECT_EQ((*c.Insert(3, block(9)))[0], 3);
}

TEST(L2Cache, StaysWithinCapacityUnderConcurrentUse) {
  L2Cache c(100);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&c, t] {
      for (uint64_t i = 0; i < 5000; ++i) {
        uint64_t key = ((i * 7919 + uint64_t(t)) % 1000) * 4096;
        if (!c.Find(key)) c.Insert(key, std::make_shared<const std::vector<uint8_t>>(8));
      }
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_LE(c.size(), c.capacity());
  EXPECT_GT(c.stats().evictions, 0u);
}

TEST(L2Cache, DefaultGeometryFollowsQemu) {
  // 1 GiB, 64 KiB clusters: two L2 tables cover it, whole tables cached.
  L2CacheGeometry g = DefaultL2CacheGeometry(1ull << 30, 16, 8);
  EXPECT_EQ(g.entry_bytes, 65536u);
  EXPECT_EQ(g.capacity, 2u);
  // 256 GiB is exactly what 32 MiB covers with 64 KiB clusters.
  g = DefaultL2CacheGeometry(256ull << 30, 16, 8);
  EXPECT_EQ(g.entry_bytes, 65536u);
  EXPECT_EQ(g.capacity * g.entry_bytes, 32u << 20);
  // 1 TiB would need 128 MiB: capped at 32 MiB in 4 KiB slices.
  g = DefaultL2CacheGeometry(1ull << 40, 16, 8);
  EXPECT_EQ(g.entry_bytes, 4096u);
  EXPECT_EQ(g.capacity * g.entry_bytes, 32u << 20);
  // Extended L2 entries need twice the cache for the same disk.
  g = DefaultL2CacheGeometry(256ull << 30, 16, 16);
  EXPECT_EQ(g.entry_bytes, 4096u);
  // Clusters smaller than 4 KiB are their own slices.
  g = DefaultL2CacheGeometry(1ull << 40, 9, 8);
  EXPECT_EQ(g.entry_bytes, 512u);
}

TEST(Qcow2Reader, SlicedCacheReadsTheSameBytes) {
  ImageBuilder b(Small(16, 2ull << 30));
  uint64_t l2 = b.AddL2();
  uint64_t c = b.AddCluster(0x42);
  b.SetL2(l2, 5000, c | kCopied);  // in the second 4 KiB slice and beyond
  Qcow2ReaderOptions o;
  o.l2_cache_max_bytes = 8192;  // forces 4 KiB slices, 2 of them
  Result<std::unique_ptr<Qcow2Reader>> r = b.Open(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->l2_geometry().entry_bytes, 4096u);
  EXPECT_EQ((*r)->l2_geometry().capacity, 2u);
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(std::move(*r));
  auto chain = ChainReader::FromImages(std::move(v)).value();
  std::vector<uint8_t> buf(3 * 65536);
  ASSERT_TRUE(chain->Read(4999ull * 65536, buf).ok());
  EXPECT_TRUE(AllEqual(buf, 0, 65536, 0));
  EXPECT_TRUE(AllEqual(buf, 65536, 65536, 0x42));
  EXPECT_TRUE(AllEqual(buf, 131072, 65536, 0));
}

// --- Rendering ------------------------------------------------------------

TEST(MapRender, JsonMatchesQemuImgLayout) {
  std::vector<MapExtent> m(2);
  m[0] = {0, 65536, 0, true, false, true, false, 327680, "/x"};
  m[1] = {65536, 1024, 1, false, true, false, false, std::nullopt, ""};
  EXPECT_EQ(MapToJson(m),
            "[{ \"start\": 0, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, "
            "\"data\": true, \"offset\": 327680},\n"
            "{ \"start\": 65536, \"length\": 1024, \"depth\": 1, \"present\": false, \"zero\": "
            "true, \"data\": false}]\n");
  Result<std::string> h = MapToHuman(m);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h,
            "Offset          Length          Mapped to       File\n"
            "0               0x10000         0x50000         /x\n");
  m[0].offset.reset();
  EXPECT_EQ(MapToHuman(m).status().code(), Code::kUnsupported);
}


TEST(ChainReaderPrefetch, AdvisesTheHostRangesOfStoredDataAtTheirOwnDepth) {
  // base: guest clusters 0..3 stored; top: cluster 2 stored, cluster 1 a
  // zero cluster. Prefetching the first 256 KiB advises each image of its
  // own stored ranges only: zeros and what the top hides are not read.
  ImageBuilder base(Small());
  uint64_t bl2 = base.AddL2();
  std::vector<uint64_t> host;
  for (uint64_t i = 0; i < 4; ++i) {
    host.push_back(base.AddCluster(uint8_t(0x10 + i)));
    base.SetL2(bl2, i, host.back() | kCopied);
  }
  ImageBuilder top(Small());
  uint64_t tl2 = top.AddL2();
  top.SetL2(tl2, 1, 1);  // zero
  uint64_t top2 = top.AddCluster(0x77);
  top.SetL2(tl2, 2, top2 | kCopied);
  std::vector<std::pair<uint64_t, uint64_t>> top_advised, base_advised;
  std::vector<std::unique_ptr<ImageReader>> v;
  v.push_back(top.OpenRecordingAdvice(&top_advised).value());
  v.push_back(base.OpenRecordingAdvice(&base_advised).value());
  auto chain = ChainReader::FromImages(std::move(v)).value();
  const uint64_t c = base.cluster_size();
  top_advised.clear();  // opening read the headers and tables
  base_advised.clear();
  chain->Prefetch(0, 4 * c);
  EXPECT_EQ(top_advised, (std::vector<std::pair<uint64_t, uint64_t>>{{top2, c}}));
  EXPECT_EQ(base_advised,
            (std::vector<std::pair<uint64_t, uint64_t>>{{host[0], c}, {host[3], c}}));
  // The bytes read afterwards are the chain's, prefetch or not.
  std::vector<uint8_t> buf(4 * c);
  ASSERT_EQ(chain->Read(0, buf).value(), buf.size());
  EXPECT_EQ(buf[0], 0x10);
  EXPECT_EQ(buf[c], 0);
  EXPECT_EQ(buf[2 * c], 0x77);
  EXPECT_EQ(buf[3 * c], 0x13);
}

}  // namespace
}  // namespace chainfs::core
