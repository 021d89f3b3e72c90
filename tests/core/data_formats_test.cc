// The read path of every format qemu-img reads besides qcow2 and raw (qed,
// vdi, vpc, vhdx, vmdk, qcow v1), against qemu itself: images made by
// qemu-img and qemu-io, the engine's full read equal to `qemu-img convert
// -O raw` byte for byte, its map equal to `qemu-img map --output=json`
// (vhdx too: qemu's driver reports no block status, and neither does ours
// for the map); overlays over qed, vmdk and qcow fall through to
// their backing; corrupted tables give kCorrupt, never a crash.
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
#include "core/data/format_readers.h"
#include "core/data/image_reader.h"
#include "core/format/driver.h"
#include "core/io/file.h"
#include "core/util/endian.h"
#include "core/util/json.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::RunResult;
using testutil::ScopedTempDir;

// Patterned writes (every fifth a zero write when `zeros`) at `align`-aligned
// offsets inside [0, size), for qemu-io.
std::vector<std::string> RandomWrites(uint32_t seed, uint64_t size, int count, uint64_t align,
                                      uint64_t max_units, bool zeros) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> cmds;
  for (int i = 0; i < count; ++i) {
    uint64_t len = std::min<uint64_t>((1 + rng() % max_units) * align, size);
    uint64_t off = (rng() % ((size - len) / align + 1)) * align;
    if (zeros && i % 5 == 4) {
      cmds.push_back(fmt::format("write -z {} {}", off, len));
    } else {
      cmds.push_back(fmt::format("write -P {:#x} {} {}", 1 + rng() % 254, off, len));
    }
  }
  return cmds;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::string out(size_t(in.tellg()), '\0');
  in.seekg(0);
  in.read(out.data(), std::streamsize(out.size()));
  EXPECT_TRUE(in.good()) << path;
  return out;
}

// How the map is compared with qemu-img's.
enum class MapCheck {
  kExact,  // MapToJson equals `qemu-img map --output=json`
  kNone,
};

class DataFormatsTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }

  void Tool(const std::vector<std::string>& argv) {
    RunResult r = testutil::Run(argv);
    ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << argv[1] << ": " << r.err << r.out;
  }
  void QemuImg(std::vector<std::string> args) {
    args.insert(args.begin(), "qemu-img");
    Tool(args);
  }
  void Io(const std::string& name, const std::string& fmt, const std::vector<std::string>& cmds) {
    std::vector<std::string> argv = {"qemu-io", "-f", fmt};
    for (const std::string& c : cmds) {
      argv.push_back("-c");
      argv.push_back(c);
    }
    argv.push_back(P(name));
    Tool(argv);
  }
  // Makes a raw source of `size` bytes filled by qemu-io (seeded writes and
  // a few fixed ones that cover unaligned edges).
  void MakeSource(const std::string& name, uint64_t size, uint32_t seed) {
    QemuImg({"create", "-q", "-f", "raw", P(name), std::to_string(size)});
    Io(name, "raw", RandomWrites(seed, size, 40, 512, 600, false));
    Io(name, "raw", {"write -P 0x5a 0 4096", fmt::format("write -P 0xa5 {} 512", size - 512)});
  }

  // Opens one image in `format` (as if recorded in metadata), backing ignored.
  Result<std::unique_ptr<ChainReader>> OpenAs(const std::string& name, const std::string& format) {
    ChainElement e;
    e.path = P(name);
    e.format = format;
    e.format_source = FormatSource::kMetadata;
    Result<std::unique_ptr<ImageReader>> img = OpenImageReader(e);
    if (!img.ok()) return img.status();
    std::vector<std::unique_ptr<ImageReader>> v;
    v.push_back(std::move(*img));
    return ChainReader::FromImages(std::move(v));
  }
  // Opens the whole chain of `name`, its format probed as chainfs does.
  Result<std::unique_ptr<ChainReader>> OpenChain(const std::string& name) {
    Chain chain = ResolveChain(inspector_, P(name));
    return ChainReader::Open(chain);
  }

  // Checks `reader` (of image `name` read as `format`) against qemu-img.
  void ExpectMatchesQemu(const ChainReader& reader, const std::string& name,
                         const std::string& format, MapCheck map_check) {
    SCOPED_TRACE(name);
    const std::string expected_path = P(name + ".expected");
    QemuImg({"convert", "-f", format, "-O", "raw", P(name), expected_path});
    Result<FileStat> est = StatPath(expected_path);
    ASSERT_TRUE(est.ok());
    ASSERT_EQ(reader.Size(), est->id.size);
    // Compared chunk by chunk: multi-extent images are gigabytes (of holes).
    std::ifstream expected(expected_path, std::ios::binary);
    std::vector<char> want;
    uint64_t compared = 0;
    Status s = reader.ReadStream(
        0, UINT64_MAX,
        [&](uint64_t off, std::span<const uint8_t> b) {
          want.resize(b.size());
          expected.read(want.data(), std::streamsize(want.size()));
          if (!expected.good()) return Error(Code::kIo, "expected file ends early");
          if (std::memcmp(want.data(), b.data(), b.size()) != 0) {
            size_t i = 0;
            while (uint8_t(want[i]) == b[i]) ++i;
            return Error(Code::kCorrupt, "first difference at guest offset {}", off + i);
          }
          compared += b.size();
          return Status::Ok();
        },
        (1u << 20) + 4096 + 512);  // odd chunks straddle clusters and blocks
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(compared, est->id.size);
    ::unlink(expected_path.c_str());
    if (map_check == MapCheck::kNone) return;
    RunResult q = testutil::Run({"qemu-img", "map", "-f", format, "--output=json", P(name)});
    ASSERT_EQ(q.exit_code, 0) << q.err;
    Result<std::vector<MapExtent>> map = reader.Map();
    ASSERT_TRUE(map.ok()) << map.status().ToString();
    const std::string ours = MapToJson(*map);
    if (ours != q.out) {  // name the first differing extent, not the whole map
      size_t i = 0;
      while (i < ours.size() && i < q.out.size() && ours[i] == q.out[i]) ++i;
      size_t from = ours.rfind('{', i);
      from = from == std::string::npos ? 0 : from;
      ADD_FAILURE() << "map differs from qemu-img map at\n ours: " << ours.substr(from, 160)
                    << "\n qemu: " << q.out.substr(from, 160);
    }
  }
  void ExpectImageMatchesQemu(const std::string& name, const std::string& format,
                              MapCheck map_check) {
    Result<std::unique_ptr<ChainReader>> r = OpenAs(name, format);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ExpectMatchesQemu(**r, name, format, map_check);
  }
  void ExpectChainMatchesQemu(const std::string& name, const std::string& format,
                              MapCheck map_check) {
    Result<std::unique_ptr<ChainReader>> r = OpenChain(name);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ExpectMatchesQemu(**r, name, format, map_check);
  }

  // Returns the block layout chainfs parses from `name` as `format`.
  BlockLayout LayoutOf(const std::string& name, const std::string& format) {
    Result<File> f = File::OpenRead(P(name));
    EXPECT_TRUE(f.ok());
    if (!f.ok()) return {};
    Result<ImageMeta> m = FindDriver(format)->Parse(*f);
    EXPECT_TRUE(m.ok() && m->layout) << name;
    return m.ok() && m->layout ? *m->layout : BlockLayout{};
  }
  // Overwrites bytes of `name` at `offset`.
  void Patch(const std::string& name, uint64_t offset, const std::vector<uint8_t>& bytes) {
    std::fstream f(P(name), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(std::streamoff(offset));
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    ASSERT_TRUE(f.good());
  }
  // Expects reading and mapping `name` as `format` to fail with kCorrupt.
  void ExpectCorrupt(const std::string& name, const std::string& format,
                     bool map_reads_tables = true) {
    SCOPED_TRACE(name);
    Result<std::unique_ptr<ChainReader>> r = OpenAs(name, format);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kCorrupt) << r.status().ToString();
      return;
    }
    std::vector<uint8_t> buf((*r)->Size());
    Result<size_t> n = (*r)->Read(0, buf);
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.status().code(), Code::kCorrupt) << n.status().ToString();
    EXPECT_EQ(n.status().message().find('\n'), std::string::npos);
    if (!map_reads_tables) return;
    Result<std::vector<MapExtent>> map = (*r)->Map();
    ASSERT_FALSE(map.ok());
    EXPECT_EQ(map.status().code(), Code::kCorrupt) << map.status().ToString();
  }

  ScopedTempDir dir_;
  ImageInspector inspector_;
};

std::vector<uint8_t> Le32(uint32_t v) {
  std::vector<uint8_t> b(4);
  StoreLe32(b.data(), v);
  return b;
}
std::vector<uint8_t> Le64(uint64_t v) {
  std::vector<uint8_t> b(8);
  StoreLe64(b.data(), v);
  return b;
}
std::vector<uint8_t> Be32(uint32_t v) {
  std::vector<uint8_t> b(4);
  StoreBe32(b.data(), v);
  return b;
}
std::vector<uint8_t> Be64(uint64_t v) {
  std::vector<uint8_t> b(8);
  StoreBe64(b.data(), v);
  return b;
}

// ---- qed ----

TEST_F(DataFormatsTest, QedConvertedAndWrittenMatchesQemu) {
  const uint64_t size = 20ull << 20;
  MakeSource("src.raw", size, 1);
  QemuImg({"convert", "-O", "qed", P("src.raw"), P("a.qed")});
  ExpectChainMatchesQemu("a.qed", "qed", MapCheck::kExact);
  // qemu-io writes qed itself: zero clusters and small clusters too.
  QemuImg({"create", "-q", "-f", "qed", "-o", "cluster_size=4096", P("b.qed"), "9M"});
  Io("b.qed", "qed", RandomWrites(2, 9 << 20, 60, 512, 200, true));
  Io("b.qed", "qed", {"write -z 1M 64k"});
  ExpectChainMatchesQemu("b.qed", "qed", MapCheck::kExact);
}

TEST_F(DataFormatsTest, QedOverlayFallsThroughToItsBacking) {
  const uint64_t size = 12ull << 20;
  QemuImg({"create", "-q", "-f", "qcow2", P("base.qcow2"), "12M"});
  Io("base.qcow2", "qcow2", RandomWrites(3, size, 40, 512, 400, false));
  QemuImg({"create", "-q", "-f", "qed", "-b", "base.qcow2", "-F", "qcow2", P("top.qed")});
  Io("top.qed", "qed", RandomWrites(4, size, 30, 4096, 40, false));
  ExpectChainMatchesQemu("top.qed", "qed", MapCheck::kExact);
  // A qed overlay longer than its backing: past the backing, zeros.
  QemuImg({"create", "-q", "-f", "qed", "-b", "base.qcow2", "-F", "qcow2", P("long.qed"), "20M"});
  Io("long.qed", "qed", {"write -P 0x77 13M 64k"});
  ExpectChainMatchesQemu("long.qed", "qed", MapCheck::kExact);
}

TEST_F(DataFormatsTest, QedTableEntryPastEofIsCorrupt) {
  QemuImg({"create", "-q", "-f", "qed", P("c.qed"), "4M"});
  Io("c.qed", "qed", {"write -P 0x11 0 64k"});
  BlockLayout l = LayoutOf("c.qed", "qed");
  // The L1 entry points to an L2 table far past the end of the file.
  Patch("c.qed", l.table_offset, Le64(l.block_bytes << 20));
  ExpectCorrupt("c.qed", "qed");
  // An L2 entry that points past the end.
  QemuImg({"create", "-q", "-f", "qed", P("d.qed"), "4M"});
  Io("d.qed", "qed", {"write -P 0x11 0 64k"});
  Result<File> f = File::OpenRead(P("d.qed"));
  ASSERT_TRUE(f.ok());
  uint8_t e[8];
  ASSERT_TRUE(ReadExact(*f, l.table_offset, e, "l1").ok());
  Patch("d.qed", LoadLe64(e), Le64(l.block_bytes << 20));
  ExpectCorrupt("d.qed", "qed");
}

// ---- vdi ----

TEST_F(DataFormatsTest, VdiDynamicAndStaticMatchQemu) {
  const uint64_t size = 10ull << 20;
  MakeSource("src.raw", size, 5);
  QemuImg({"convert", "-O", "vdi", P("src.raw"), P("dyn.vdi")});
  ExpectChainMatchesQemu("dyn.vdi", "vdi", MapCheck::kExact);
  QemuImg({"convert", "-O", "vdi", "-o", "static=on", P("src.raw"), P("static.vdi")});
  ExpectChainMatchesQemu("static.vdi", "vdi", MapCheck::kExact);
  // Written by qemu-io: blocks allocated in write order, not guest order.
  QemuImg({"create", "-q", "-f", "vdi", P("w.vdi"), "8M"});
  Io("w.vdi", "vdi", {"write -P 0x33 7M 4k", "write -P 0x44 1M 1M", "write -P 0x55 100k 3k"});
  ExpectChainMatchesQemu("w.vdi", "vdi", MapCheck::kExact);
}

TEST_F(DataFormatsTest, VdiBlockMapEntryPastEofIsCorrupt) {
  QemuImg({"create", "-q", "-f", "vdi", P("c.vdi"), "4M"});
  Io("c.vdi", "vdi", {"write -P 0x11 0 64k"});
  BlockLayout l = LayoutOf("c.vdi", "vdi");
  Patch("c.vdi", l.table_offset, Le32(3));  // block 3 of a file holding one
  ExpectCorrupt("c.vdi", "vdi");
  Patch("c.vdi", l.table_offset, Le32(0x7fffffff));  // beyond blocks_in_image
  ExpectCorrupt("c.vdi", "vdi");
}

// ---- vpc ----

TEST_F(DataFormatsTest, VpcDynamicAndFixedMatchQemu) {
  const uint64_t size = 10ull << 20;
  MakeSource("src.raw", size, 6);
  QemuImg({"convert", "-O", "vpc", "-o", "subformat=dynamic", P("src.raw"), P("dyn.vhd")});
  ExpectChainMatchesQemu("dyn.vhd", "vpc", MapCheck::kExact);
  QemuImg({"convert", "-O", "vpc", "-o", "subformat=fixed", P("src.raw"), P("fixed.vhd")});
  // A fixed VHD probes as raw (qemu too): it is opened as recorded vpc.
  ExpectImageMatchesQemu("fixed.vhd", "vpc", MapCheck::kExact);
  QemuImg({"create", "-q", "-f", "vpc", P("w.vhd"), "8M"});
  Io("w.vhd", "vpc", {"write -P 0x33 7M 4k", "write -P 0x44 1M 1M", "write -P 0x55 100k 3k"});
  ExpectChainMatchesQemu("w.vhd", "vpc", MapCheck::kExact);
}

TEST_F(DataFormatsTest, VpcBatEntryPastEofIsCorrupt) {
  QemuImg({"create", "-q", "-f", "vpc", P("c.vhd"), "4M"});
  Io("c.vhd", "vpc", {"write -P 0x11 0 64k"});
  BlockLayout l = LayoutOf("c.vhd", "vpc");
  Patch("c.vhd", l.table_offset, Be32(0x7ffffff0));
  ExpectCorrupt("c.vhd", "vpc");
}

// ---- vhdx ----

TEST_F(DataFormatsTest, VhdxDynamicAndFixedMatchQemu) {
  const uint64_t size = 10ull << 20;
  MakeSource("src.raw", size, 7);
  QemuImg({"convert", "-O", "vhdx", "-o", "subformat=dynamic", P("src.raw"), P("dyn.vhdx")});
  ExpectChainMatchesQemu("dyn.vhdx", "vhdx", MapCheck::kExact);
  QemuImg({"convert", "-O", "vhdx", "-o", "subformat=fixed", P("src.raw"), P("fixed.vhdx")});
  ExpectChainMatchesQemu("fixed.vhdx", "vhdx", MapCheck::kExact);
  // Written by qemu-io (through qemu's log, which it replays and clears).
  QemuImg({"create", "-q", "-f", "vhdx", P("w.vhdx"), "8M"});
  Io("w.vhdx", "vhdx", {"write -P 0x33 7M 4k", "write -P 0x44 1M 1M", "write -P 0x55 100k 3k"});
  ExpectChainMatchesQemu("w.vhdx", "vhdx", MapCheck::kExact);
}

TEST_F(DataFormatsTest, VhdxBatEntryPastEofIsCorrupt) {
  QemuImg({"create", "-q", "-f", "vhdx", P("c.vhdx"), "4M"});
  Io("c.vhdx", "vhdx", {"write -P 0x11 0 64k"});
  BlockLayout l = LayoutOf("c.vhdx", "vhdx");
  Patch("c.vhdx", l.table_offset, Le64((uint64_t{1} << 40) | 6));  // fully present, 1 TiB in
  ExpectCorrupt("c.vhdx", "vhdx", /*map_reads_tables=*/false);
  Patch("c.vhdx", l.table_offset, Le64(5));  // no such block state
  ExpectCorrupt("c.vhdx", "vhdx", /*map_reads_tables=*/false);
}

// Computes CRC-32C over `data` with bytes [4, 8) (the checksum) as zeros.
uint32_t VhdxCrc(const std::vector<uint8_t>& data) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < data.size(); ++i) {
    crc ^= (i >= 4 && i < 8) ? 0 : data[i];
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  return ~crc;
}

TEST_F(DataFormatsTest, VhdxWithALogToReplayIsRefusedAsByQemu) {
  QemuImg({"create", "-q", "-f", "vhdx", P("log.vhdx"), "4M"});
  Io("log.vhdx", "vhdx", {"write -P 0x11 0 64k"});
  // Both headers name a log GUID, as when a writer stopped before replaying.
  std::vector<uint8_t> guid(16);
  for (int i = 0; i < 16; ++i) guid[i] = uint8_t(0xa0 + i);
  uint64_t log_offset = 0;
  uint32_t log_length = 0;
  {
    Result<File> f = File::OpenRead(P("log.vhdx"));
    ASSERT_TRUE(f.ok());
    for (uint64_t at : {64u << 10, 128u << 10}) {
      std::vector<uint8_t> h(4096);
      ASSERT_TRUE(ReadExact(*f, at, h, "header").ok());
      std::copy(guid.begin(), guid.end(), h.begin() + 48);
      StoreLe32(h.data() + 4, VhdxCrc(h));
      Patch("log.vhdx", at, h);
      log_length = LoadLe32(h.data() + 68);
      log_offset = LoadLe64(h.data() + 72);
    }
  }
  ASSERT_GT(log_length, 0u);
  // A GUID with no entry of that GUID in the log: nothing to replay, and
  // qemu reads the image.
  ExpectImageMatchesQemu("log.vhdx", "vhdx", MapCheck::kExact);
  // One valid entry (no descriptors): qemu refuses to open it read-only.
  std::vector<uint8_t> entry(4096);
  std::memcpy(entry.data(), "loge", 4);
  StoreLe32(entry.data() + 8, 4096);  // entry length
  StoreLe64(entry.data() + 16, 1);    // sequence number
  std::copy(guid.begin(), guid.end(), entry.begin() + 32);
  Result<FileStat> st = StatPath(P("log.vhdx"));
  ASSERT_TRUE(st.ok());
  StoreLe64(entry.data() + 48, st->id.size);  // flushed file offset
  StoreLe64(entry.data() + 56, st->id.size);  // last file offset
  StoreLe32(entry.data() + 4, VhdxCrc(entry));
  Patch("log.vhdx", log_offset, entry);
  RunResult q = testutil::Run(
      {"qemu-img", "convert", "-f", "vhdx", "-O", "raw", P("log.vhdx"), P("log.raw")});
  EXPECT_NE(q.exit_code, 0);
  EXPECT_NE(q.err.find("log that needs to be replayed"), std::string::npos) << q.err;
  Result<std::unique_ptr<ChainReader>> r = OpenAs("log.vhdx", "vhdx");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  EXPECT_NE(r.status().message().find("log must be replayed"), std::string::npos)
      << r.status().ToString();
}

// ---- qcow (version 1) ----

TEST_F(DataFormatsTest, QcowPlainAndCompressedMatchQemu) {
  const uint64_t size = 10ull << 20;
  MakeSource("src.raw", size, 8);
  QemuImg({"convert", "-O", "qcow", P("src.raw"), P("a.qcow")});
  ExpectChainMatchesQemu("a.qcow", "qcow", MapCheck::kExact);
  // qemu-img 7.2 cannot convert -c to qcow; qemu-io writes compressed
  // clusters one at a time, between plain ones, each cluster once (qemu's
  // qcow driver corrupts a compressed cluster written over).
  QemuImg({"create", "-q", "-f", "qcow", P("c.qcow"), "4M"});
  std::vector<uint64_t> clusters(1024);
  for (size_t i = 0; i < clusters.size(); ++i) clusters[i] = i;
  std::mt19937 rng(11);
  std::shuffle(clusters.begin(), clusters.end(), rng);
  std::vector<std::string> cmds;
  for (int i = 0; i < 200; ++i) {
    cmds.push_back(fmt::format("write {} -P {:#x} {} 4k", i % 7 == 6 ? "" : "-c", 1 + rng() % 250,
                               clusters[i] * 4096));
  }
  Io("c.qcow", "qcow", cmds);
  ExpectChainMatchesQemu("c.qcow", "qcow", MapCheck::kExact);
}

TEST_F(DataFormatsTest, QcowOverlayFallsThroughToItsBacking) {
  const uint64_t size = 8ull << 20;
  MakeSource("base.raw", size, 9);
  QemuImg({"create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", P("top.qcow")});
  Io("top.qcow", "qcow", RandomWrites(10, size, 30, 512, 64, false));
  ExpectChainMatchesQemu("top.qcow", "qcow", MapCheck::kExact);
}

TEST_F(DataFormatsTest, QcowTableEntryPastEofIsCorrupt) {
  QemuImg({"create", "-q", "-f", "qcow", P("c.qcow"), "4M"});
  Io("c.qcow", "qcow", {"write -P 0x11 0 64k"});
  BlockLayout l = LayoutOf("c.qcow", "qcow");
  Patch("c.qcow", l.table_offset, Be64(uint64_t{1} << 40));
  ExpectCorrupt("c.qcow", "qcow");
}

// ---- vmdk ----

TEST_F(DataFormatsTest, VmdkMonolithicSparseAndStreamOptimizedMatchQemu) {
  const uint64_t size = 12ull << 20;
  MakeSource("src.raw", size, 12);
  QemuImg({"convert", "-O", "vmdk", P("src.raw"), P("sparse.vmdk")});
  ExpectChainMatchesQemu("sparse.vmdk", "vmdk", MapCheck::kExact);
  QemuImg(
      {"convert", "-O", "vmdk", "-o", "subformat=streamOptimized", P("src.raw"), P("stream.vmdk")});
  ExpectChainMatchesQemu("stream.vmdk", "vmdk", MapCheck::kExact);
  // Written by qemu-io, with zeroed grains.
  QemuImg({"create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", P("w.vmdk"), "9M"});
  Io("w.vmdk", "vmdk", RandomWrites(13, 9 << 20, 50, 512, 300, true));
  Io("w.vmdk", "vmdk", {"write -z 1M 128k"});
  ExpectChainMatchesQemu("w.vmdk", "vmdk", MapCheck::kExact);
}

TEST_F(DataFormatsTest, VmdkFlatAndSplitExtentsMatchQemu) {
  const uint64_t size = 12ull << 20;
  MakeSource("src.raw", size, 14);
  QemuImg(
      {"convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", P("src.raw"), P("flat.vmdk")});
  ExpectChainMatchesQemu("flat.vmdk", "vmdk", MapCheck::kExact);
  {
    ChainElement e;
    e.path = P("flat.vmdk");
    e.format = "vmdk";
    Result<std::unique_ptr<ImageReader>> img = OpenImageReader(e);
    ASSERT_TRUE(img.ok()) << img.status().ToString();
    EXPECT_EQ((*img)->OtherFiles(), std::vector<std::string>{P("flat-flat.vmdk")});
  }
  // Split at 2 GiB: a disk just over 2 GiB has two extents; data on both
  // sides of the boundary and in the last sector.
  const uint64_t big = (2ull << 30) + (3ull << 20);
  QemuImg({"create", "-q", "-f", "raw", P("big.raw"), std::to_string(big)});
  Io("big.raw", "raw",
     {"write -P 0x11 0 64k", fmt::format("write -P 0x22 {} 1M", (2ull << 30) - 512 * 1024),
      fmt::format("write -P 0x44 {} 512", big - 512)});
  QemuImg({"convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", P("big.raw"),
           P("split.vmdk")});
  ExpectChainMatchesQemu("split.vmdk", "vmdk", MapCheck::kExact);
  QemuImg({"convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", P("big.raw"),
           P("splitflat.vmdk")});
  ExpectChainMatchesQemu("splitflat.vmdk", "vmdk", MapCheck::kExact);
}

TEST_F(DataFormatsTest, VmdkOverlayFallsThroughToItsBacking) {
  const uint64_t size = 10ull << 20;
  MakeSource("src.raw", size, 15);
  QemuImg({"convert", "-O", "vmdk", P("src.raw"), P("base.vmdk")});
  QemuImg({"create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", P("top.vmdk")});
  Io("top.vmdk", "vmdk", RandomWrites(16, size, 30, 4096, 40, false));
  ExpectChainMatchesQemu("top.vmdk", "vmdk", MapCheck::kExact);
}

TEST_F(DataFormatsTest, VmdkGrainTablesPastEofAreCorrupt) {
  QemuImg({"create", "-q", "-f", "vmdk", P("c.vmdk"), "4M"});
  Io("c.vmdk", "vmdk", {"write -P 0x11 0 64k"});
  BlockLayout l = LayoutOf("c.vmdk", "vmdk");
  Result<File> f = File::OpenRead(P("c.vmdk"));
  ASSERT_TRUE(f.ok());
  uint8_t e[4];
  ASSERT_TRUE(ReadExact(*f, l.table_offset, e, "gd").ok());
  const uint64_t gt = uint64_t{LoadLe32(e)} * 512;
  Patch("c.vmdk", gt, Le32(0x7ffffff0));  // a grain far past the end
  ExpectCorrupt("c.vmdk", "vmdk");
  Patch("c.vmdk", l.table_offset, Le32(0x7ffffff0));  // a grain table far past the end
  ExpectCorrupt("c.vmdk", "vmdk");
}

TEST_F(DataFormatsTest, ProbedVmdkDescriptorNamesOnlyFilesBesideIt) {
  QemuImg({"create", "-q", "-f", "raw", P("secret.raw"), "1M"});
  std::ofstream(P("evil.vmdk")) << "# Disk DescriptorFile\nversion=1\nCID=fffffffe\n"
                                   "parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                                << "RW 2048 FLAT \"" << P("secret.raw") << "\" 0\n";
  Result<std::unique_ptr<ChainReader>> r = OpenChain("evil.vmdk");  // probed, as a pool volume
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied) << r.status().ToString();
  // Declared in metadata, the same descriptor is read.
  Result<std::unique_ptr<ChainReader>> declared = OpenAs("evil.vmdk", "vmdk");
  ASSERT_TRUE(declared.ok()) << declared.status().ToString();
  EXPECT_EQ((*declared)->Size(), 1u << 20);
}

// ---- concurrency ----

// Many threads read random ranges of one reader of each table format at
// once (the caches are shared); every range equals qemu's bytes.
TEST_F(DataFormatsTest, ConcurrentReadersSeeQemusBytes) {
  const uint64_t size = 8ull << 20;
  MakeSource("src.raw", size, 19);
  QemuImg({"convert", "-O", "qed", "-o", "cluster_size=4096", P("src.raw"), P("c.qed")});
  QemuImg({"convert", "-O", "vmdk", "-o", "subformat=streamOptimized", P("src.raw"), P("c.vmdk")});
  QemuImg({"convert", "-O", "vpc", P("src.raw"), P("c.vhd")});
  const std::string expected = ReadFileBytes(P("src.raw"));
  for (const auto& [name, format] : std::vector<std::pair<std::string, std::string>>{
           {"c.qed", "qed"}, {"c.vmdk", "vmdk"}, {"c.vhd", "vpc"}}) {
    SCOPED_TRACE(name);
    Result<std::unique_ptr<ChainReader>> r = OpenAs(name, format);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const ChainReader& reader = **r;
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(t);
        std::vector<uint8_t> buf;
        for (int i = 0; i < 200; ++i) {
          const uint64_t off = rng() % size;
          buf.resize(1 + rng() % std::min<uint64_t>(size - off, 300 << 10));
          Result<size_t> n = reader.Read(off, buf);
          if (!n.ok() || *n != buf.size() ||
              std::memcmp(buf.data(), expected.data() + off, buf.size()) != 0) {
            ++bad;
          }
        }
      });
    }
    for (std::thread& th : threads) th.join();
    EXPECT_EQ(bad.load(), 0);
  }
}

// ---- hostile tables, every format ----

// Overwrites random table entries and header bytes of qemu-made images and
// reads and maps each result: an error or the bytes, never a crash or hang
// (run under ASan and UBSan in CI).
TEST_F(DataFormatsTest, SurvivesRandomGarbageTables) {
  using Opener =
      Result<std::unique_ptr<ImageReader>> (*)(std::unique_ptr<Reader>, const std::string&);
  struct Case {
    std::string format, file;
    std::vector<std::string> create;  // options of qemu-img create (or convert)
    Opener open;
    bool convert = false;  // made by qemu-img convert of a raw source, not qemu-io
    bool ready = false;    // made before the loop
  };
  const auto vmdk = [](std::unique_ptr<Reader> r, const std::string& p) {
    return OpenVmdkReader(std::move(r), p);
  };
  const std::vector<Case> cases = {
      {"qed", "g.qed", {"-o", "cluster_size=4096"}, OpenQedReader},
      {"vdi", "g.vdi", {}, OpenVdiReader},
      {"vpc", "g.vhd", {}, OpenVpcReader},
      {"vhdx", "g.vhdx", {}, OpenVhdxReader},
      {"qcow", "g.qcow", {}, OpenQcowReader},
      {"qcow", "c.qcow", {}, OpenQcowReader, false, true},
      {"vmdk", "g.vmdk", {}, vmdk},
      {"vmdk", "s.vmdk", {"-o", "subformat=streamOptimized"}, vmdk, true},
      {"vdi", "s.vdi", {"-o", "static=on"}, OpenVdiReader, true},
  };
  MakeSource("garbage-src.raw", 3 << 20, 18);
  // Compressed qcow clusters: written one by one (see QcowPlainAndCompressed).
  QemuImg({"create", "-q", "-f", "qcow", P("c.qcow"), "3M"});
  Io("c.qcow", "qcow",
     {"write -c -P 0x21 0 4k", "write -c -P 0x22 8k 4k", "write -P 0x23 64k 4k",
      "write -c -P 0x24 1M 4k"});
  std::mt19937_64 rng(99);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.format);
    if (c.ready) {
    } else if (c.convert) {
      std::vector<std::string> args = {"convert", "-O", c.format};
      args.insert(args.end(), c.create.begin(), c.create.end());
      args.push_back(P("garbage-src.raw"));
      args.push_back(P(c.file));
      QemuImg(args);
    } else {
      std::vector<std::string> args = {"create", "-q", "-f", c.format};
      args.insert(args.end(), c.create.begin(), c.create.end());
      args.push_back(P(c.file));
      args.push_back("3M");
      QemuImg(args);
      Io(c.file, c.format, RandomWrites(17, 3 << 20, 20, 512, 100, false));
    }
    const std::string bytes_s = ReadFileBytes(P(c.file));
    const std::vector<uint8_t> image(bytes_s.begin(), bytes_s.end());
    const BlockLayout l = LayoutOf(c.file, c.format);
    int opened = 0;
    for (int round = 0; round < 100; ++round) {
      std::vector<uint8_t> bad = image;
      for (int k = 0; k < 8; ++k) {
        // Mostly table entries (first-level table or anywhere past the
        // header), sometimes any byte of the first 64 KiB.
        uint64_t at = round % 3 == 0   ? l.table_offset + rng() % 64
                      : round % 3 == 1 ? rng() % bad.size()
                                       : rng() % std::min<uint64_t>(bad.size(), 64 << 10);
        if (at < bad.size()) bad[at] = uint8_t(rng());
      }
      Result<std::unique_ptr<ImageReader>> img =
          c.open(std::make_unique<MemoryReader>(std::move(bad)), "garbage");
      if (!img.ok()) continue;
      ++opened;
      std::vector<std::unique_ptr<ImageReader>> v;
      v.push_back(std::move(*img));
      std::unique_ptr<ChainReader> r = ChainReader::FromImages(std::move(v)).value();
      if (r->Size() > (64u << 20)) continue;  // a garbage size: read only its start
      std::vector<uint8_t> buf(r->Size());
      (void)r->Read(0, buf);
      (void)r->Map();
    }
    EXPECT_GT(opened, 0);  // the tables, not only the headers, were exercised
  }
}

// ---- luks ----

TEST_F(DataFormatsTest, LuksIsRefusedForWantOfAKey) {
  ChainElement e;
  e.path = P("none.luks");
  e.format = "luks";
  Result<std::unique_ptr<ImageReader>> r = OpenImageReader(e);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  EXPECT_NE(r.status().message().find("LUKS data needs a key"), std::string::npos);
}

}  // namespace
}  // namespace chainfs::core
