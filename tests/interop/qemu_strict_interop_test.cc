// Where qemu is stricter, chainctl agrees with the real qemu-img (issue 9):
// unknown qcow2 versions, sizes in whole sectors in every output and in
// `cat`, the zero flag of a version 2 image, the empty map, and the
// allocation qemu-img counts for a monolithicFlat vmdk.
#include <gtest/gtest.h>

#include <fstream>

#include "core/chain/inspector.h"
#include "core/format/qcow2/header.h"
#include "core/util/endian.h"
#include "core/util/json.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs {
namespace {

using core::Json;
using testutil::RunChainctl;
using testutil::RunResult;
using testutil::ScopedTempDir;


RunResult QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  return testutil::Run(argv);
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Overwrites bytes of a file in place.
void Patch(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  ASSERT_TRUE(f.good()) << path;
  f.seekp(std::streamoff(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::vector<uint8_t> Be32(uint32_t v) {
  std::vector<uint8_t> b(4);
  core::StoreBe32(b.data(), v);
  return b;
}

std::vector<uint8_t> Be64(uint64_t v) {
  std::vector<uint8_t> b(8);
  core::StoreBe64(b.data(), v);
  return b;
}

Json ParseJson(const std::string& text) {
  core::Result<Json> j = Json::Parse(text);
  EXPECT_TRUE(j.ok()) << j.status().ToString() << "\n" << text;
  return j.ok() ? *j : Json();
}

uint64_t Num(const Json& obj, std::string_view key) {
  const Json* v = obj.Find(key);
  EXPECT_TRUE(v && v->is_number()) << key;
  return v && v->is_number() ? v->as_uint() : ~uint64_t{0};
}

// Returns the line of `text` that starts with `prefix`, or "".
std::string LineStartingWith(const std::string& text, const std::string& prefix) {
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    if (line.rfind(prefix, 0) == 0) return line;
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  return "";
}

class QemuStrictInteropTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }
  void MustQemuImg(const std::vector<std::string>& args) {
    RunResult r = QemuImg(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  void Io(const std::string& name, const std::string& format,
          const std::vector<std::string>& commands) {
    std::vector<std::string> argv = {"qemu-io", "-f", format};
    for (const std::string& c : commands) {
      argv.push_back("-c");
      argv.push_back(c);
    }
    argv.push_back(P(name));
    RunResult r = testutil::Run(argv);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // Expects chainctl map (both formats) and cat to give exactly what
  // qemu-img map and qemu-img convert -O raw give for `name`.
  void ExpectDataAsQemu(const std::string& name) {
    RunResult qj = QemuImg({"map", "--output=json", P(name)});
    ASSERT_EQ(qj.exit_code, 0) << qj.err;
    RunResult cj = RunChainctl({"map", "--json", P(name)});
    ASSERT_EQ(cj.exit_code, 0) << cj.err;
    EXPECT_EQ(cj.out, qj.out) << name;
    RunResult qh = QemuImg({"map", P(name)});
    ASSERT_EQ(qh.exit_code, 0) << qh.err;
    RunResult ch = RunChainctl({"map", P(name)});
    ASSERT_EQ(ch.exit_code, 0) << ch.err;
    EXPECT_EQ(ch.out, qh.out) << name;
    MustQemuImg({"convert", "-O", "raw", P(name), P(name + ".converted")});
    RunResult cat = testutil::Run(
        {"sh", "-c", "\"$1\" cat \"$2\" > \"$3\"", "sh", CHAINCTL_BINARY, P(name), P(name + ".cat")});
    ASSERT_EQ(cat.exit_code, 0) << cat.err;
    const std::string theirs = Slurp(P(name + ".converted"));
    const std::string ours = Slurp(P(name + ".cat"));
    EXPECT_EQ(ours.size(), theirs.size()) << name;
    EXPECT_TRUE(ours == theirs) << name << ": chainctl cat differs from qemu-img convert";
  }
  // Expects the virtual size chainctl shows in info --json, info and
  // volume.xml to be qemu-img's, and returns it.
  uint64_t ExpectVirtualSizeAsQemu(const std::string& name) {
    RunResult qj = QemuImg({"info", "--output=json", P(name)});
    EXPECT_EQ(qj.exit_code, 0) << qj.err;
    const uint64_t expected = Num(ParseJson(qj.out), "virtual-size");
    RunResult cj = RunChainctl({"info", "--json", P(name)});
    EXPECT_EQ(cj.exit_code, 0) << cj.err;
    Json ours = ParseJson(cj.out);
    EXPECT_TRUE(ours.is_array() && !ours.as_array().empty());
    if (ours.is_array() && !ours.as_array().empty()) {
      EXPECT_EQ(Num(ours.as_array()[0], "virtual-size"), expected) << name;
    }
    RunResult qt = QemuImg({"info", P(name)});
    RunResult ct = RunChainctl({"info", P(name)});
    EXPECT_EQ(LineStartingWith(ct.out, "virtual size:"), LineStartingWith(qt.out, "virtual size:"))
        << name;
    EXPECT_NE(LineStartingWith(ct.out, "virtual size:"), "");
    RunResult xml = RunChainctl({"xml", "volume", P(name)});
    EXPECT_EQ(xml.exit_code, 0) << xml.err;
    EXPECT_NE(xml.out.find(fmt::format("<capacity unit='bytes'>{}</capacity>", expected)),
              std::string::npos)
        << xml.out;
    return expected;
  }
  ScopedTempDir dir_;
};

// --- Unknown qcow2 versions -------------------------------------------------

TEST_F(QemuStrictInteropTest, UnknownQcow2VersionIsAQcow2ImageQemuCannotOpen) {
  for (uint32_t version : {4u, 0xffffffffu}) {
    const std::string name = fmt::format("v{}.qcow2", version);
    MustQemuImg({"create", "-q", "-f", "qcow2", P(name), "1M"});
    Patch(P(name), core::kQcow2OffVersion, Be32(version));
    const std::string reason = fmt::format("Unsupported qcow2 version {}", version);
    RunResult q = QemuImg({"info", P(name)});
    EXPECT_NE(q.exit_code, 0);
    EXPECT_NE(q.err.find(reason), std::string::npos) << q.err;

    RunResult check = RunChainctl({"check", P(name)});
    EXPECT_EQ(check.exit_code, 1) << check.out << check.err;
    EXPECT_NE(check.out.find(reason), std::string::npos) << check.out;
    RunResult chain = RunChainctl({"chain", P(name)});
    EXPECT_EQ(chain.out, "0 qcow2 " + P(name) + "\n");
    // Its bytes are not served as raw either.
    EXPECT_NE(QemuImg({"map", P(name)}).exit_code, 0);
    RunResult map = RunChainctl({"map", "--json", P(name)});
    EXPECT_EQ(map.exit_code, 2);
    EXPECT_EQ(map.out, "");
    EXPECT_NE(map.err.find(reason), std::string::npos) << map.err;
  }
}

TEST_F(QemuStrictInteropTest, Qcow2VersionsZeroAndOneProbeAsQemuProbesThem) {
  MustQemuImg({"create", "-q", "-f", "qcow2", P("v0.qcow2"), "1M"});
  Patch(P("v0.qcow2"), core::kQcow2OffVersion, Be32(0));
  RunResult q = QemuImg({"info", "--output=json", P("v0.qcow2")});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const Json qj = ParseJson(q.out);
  const Json* qf = qj.Find("format");
  ASSERT_TRUE(qf && qf->is_string());
  EXPECT_EQ(qf->as_string(), "raw");
  RunResult c = RunChainctl({"info", "--json", P("v0.qcow2")});
  Json cj = ParseJson(c.out);
  ASSERT_TRUE(cj.is_array() && !cj.as_array().empty());
  EXPECT_EQ(cj.as_array()[0].Find("format")->as_string(), "raw");
  ExpectVirtualSizeAsQemu("v0.qcow2");  // not a multiple of 512: rounded up

  // Version 1 is qcow's: qemu's qcow driver refuses the qcow2 fields.
  MustQemuImg({"create", "-q", "-f", "qcow2", P("v1.qcow2"), "1M"});
  Patch(P("v1.qcow2"), core::kQcow2OffVersion, Be32(1));
  RunResult q1 = QemuImg({"info", P("v1.qcow2")});
  EXPECT_NE(q1.exit_code, 0);
  EXPECT_NE(q1.err.find("Cluster size must be between 512 and 64k"), std::string::npos) << q1.err;
  RunResult c1 = RunChainctl({"check", P("v1.qcow2")});
  EXPECT_EQ(c1.exit_code, 1);
  EXPECT_NE(c1.out.find("cannot be read as qcow:"), std::string::npos) << c1.out;
}

// --- Sizes in whole sectors -------------------------------------------------

TEST_F(QemuStrictInteropTest, RawSizeIsRoundedUpEverywhereAndCatWritesThatMuch) {
  for (size_t size : {size_t{1}, size_t{1000}, size_t{4097}, size_t{65536 + 511}}) {
    const std::string name = fmt::format("odd{}.raw", size);
    std::string bytes(size, '\0');
    for (size_t i = 0; i < size; ++i) bytes[i] = char(0x20 + i % 91);
    { std::ofstream(P(name), std::ios::binary) << bytes; }
    EXPECT_EQ(ExpectVirtualSizeAsQemu(name), (size + 511) / 512 * 512);
    ExpectDataAsQemu(name);
    EXPECT_EQ(Slurp(P(name + ".cat")).substr(0, size), bytes);
  }
  // As a backing, the rounded size is what an overlay sees too.
  MustQemuImg({"create", "-q", "-f", "qcow2", "-b", "odd1000.raw", "-F", "raw", P("over.qcow2")});
  EXPECT_EQ(ExpectVirtualSizeAsQemu("over.qcow2"), 1024u);
  ExpectDataAsQemu("over.qcow2");
}

TEST_F(QemuStrictInteropTest, Qcow2SizeFieldIsRoundedDownAsQemuDoes) {
  MustQemuImg({"create", "-q", "-f", "qcow2", P("s.qcow2"), "1M"});
  Io("s.qcow2", "qcow2", {"write -P 0x61 0 64k", "write -P 0x62 512k 4k"});
  for (uint64_t field : {uint64_t{1000}, uint64_t{511}, uint64_t{(512 << 10) + 1000}}) {
    Patch(P("s.qcow2"), core::kQcow2OffSize, Be64(field));
    EXPECT_EQ(ExpectVirtualSizeAsQemu("s.qcow2"), field / 512 * 512) << field;
    ExpectDataAsQemu("s.qcow2");
  }
}

// --- The zero flag of version 2 ---------------------------------------------

TEST_F(QemuStrictInteropTest, ZeroFlagInVersion2ImageIsAnErrorAsInQemu) {
  for (const std::string compat : {"0.10", "1.1"}) {
    const std::string name = "zf" + compat + ".qcow2";
    MustQemuImg({"create", "-q", "-f", "qcow2", "-o", "compat=" + compat, P(name), "1M"});
    Io(name, "qcow2", {"write -P 0x11 0 64k", "write -P 0x22 128k 64k"});
    core::Result<uint64_t> e0 = testutil::ReadL2Entry(P(name), 0);
    ASSERT_TRUE(e0.ok()) << e0.status().ToString();
    ASSERT_TRUE(testutil::WriteL2Entry(P(name), 0, *e0 | 1).ok());  // zero, allocated
    ASSERT_TRUE(testutil::WriteL2Entry(P(name), 1, 1).ok());        // zero, plain
    if (compat == "1.1") {
      // Version 3 has the flag: the clusters read as zeros, as qemu reads them.
      ExpectDataAsQemu(name);
      continue;
    }
    RunResult qm = QemuImg({"map", "--output=json", P(name)});
    EXPECT_NE(qm.exit_code, 0);
    EXPECT_NE(qm.err.find("Zero cluster entry found in pre-v3 image"), std::string::npos) << qm.err;
    EXPECT_NE(QemuImg({"convert", "-O", "raw", P(name), P("zf.raw")}).exit_code, 0);
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"map", "--json", P(name)}, {"map", P(name)}}) {
      RunResult c = RunChainctl(args);
      EXPECT_EQ(c.exit_code, 2) << args[1];
      EXPECT_NE(c.err.find("zero cluster entry"), std::string::npos) << c.err;
      EXPECT_NE(c.err.find("version 2"), std::string::npos) << c.err;
      EXPECT_EQ(std::count(c.err.begin(), c.err.end(), '\n'), 1) << c.err;
    }
    RunResult cat = testutil::Run(
        {"sh", "-c", "\"$1\" cat \"$2\" > /dev/null", "sh", CHAINCTL_BINARY, P(name)});
    EXPECT_EQ(cat.exit_code, 2);
    EXPECT_NE(cat.err.find("zero cluster entry"), std::string::npos) << cat.err;
  }
}

// --- The empty map ----------------------------------------------------------

TEST_F(QemuStrictInteropTest, EmptyImagesMapAsQemuImgMapsThem) {
  { std::ofstream(P("empty.raw"), std::ios::binary); }
  EXPECT_EQ(ExpectVirtualSizeAsQemu("empty.raw"), 0u);
  ExpectDataAsQemu("empty.raw");
  EXPECT_EQ(RunChainctl({"map", "--json", P("empty.raw")}).out,
            "[{ \"start\": 0, \"length\": 0, \"depth\": 0, \"present\": false, \"zero\": false, "
            "\"data\": false}]\n");
  MustQemuImg({"create", "-q", "-f", "qcow2", P("empty.qcow2"), "0"});
  ExpectDataAsQemu("empty.qcow2");
  MustQemuImg({"create", "-q", "-f", "qcow2", "-b", "empty.raw", "-F", "raw", P("eo.qcow2")});
  ExpectDataAsQemu("eo.qcow2");
}

// --- monolithicFlat vmdk ----------------------------------------------------

// qemu-img's actual-size of a vmdk is the descriptor's allocation plus its
// extent files'; the engine measures the extents' share, which the info
// renderers add (core::QemuActualSize).
TEST_F(QemuStrictInteropTest, VmdkExtentAllocationMakesQemuImgActualSize) {
  MustQemuImg({"create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", P("flat.vmdk"),
               "10M"});
  Io("flat.vmdk", "vmdk", {"write -P 0x5a 1M 256k"});
  MustQemuImg({"create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
               P("split.vmdk"), "5G"});
  MustQemuImg({"create", "-q", "-f", "vmdk", P("sparse.vmdk"), "10M"});
  core::ImageInspector inspector;
  for (const std::string name : {"flat.vmdk", "split.vmdk", "sparse.vmdk"}) {
    RunResult q = QemuImg({"info", "--output=json", P(name)});
    ASSERT_EQ(q.exit_code, 0) << q.err;
    const uint64_t qemu_actual = Num(ParseJson(q.out), "actual-size");
    core::Result<std::shared_ptr<const core::Inspection>> in = inspector.Inspect(P(name));
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    ASSERT_TRUE((*in)->meta) << (*in)->parse_status.ToString();
    EXPECT_EQ(core::QemuActualSize((*in)->stat.allocation, (*in)->meta.get()), qemu_actual)
        << name;
    if (name == std::string("flat.vmdk")) {
      EXPECT_GT((*in)->meta->external_allocation, 0u);
    }
    if (name == std::string("sparse.vmdk")) {
      EXPECT_EQ((*in)->meta->external_allocation, 0u);  // its one extent is itself
    }
  }
}

}  // namespace
}  // namespace chainfs
