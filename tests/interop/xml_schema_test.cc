// The XML documents (volume.xml, disk.xml, .pool.xml) of chains made by real
// qemu-img, validated with xmllint against libvirt's own RelaxNG schemas;
// and the `info` text compared with qemu-img info --backing-chain.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/pool/pool_def.h"
#include "core/render/render.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::Run;
using testutil::RunResult;
using testutil::RunWithInput;
using testutil::ScopedTempDir;

constexpr const char* kSchemas = "/usr/share/libvirt/schemas/";

void QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = Run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// Validates `xml` against a libvirt schema; returns xmllint's complaint.
::testing::AssertionResult Validates(const std::string& xml, const std::string& schema) {
  RunResult r = RunWithInput(
      {"xmllint", "--noout", "--relaxng", std::string(kSchemas) + schema, "-"}, xml);
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << schema << ": " << r.err << "\n" << xml;
}

std::string WrapDisk(const std::string& disk) {
  return "<domain type='kvm'><name>x</name><memory>131072</memory><os><type>hvm</type></os>"
         "<devices>" + disk + "</devices></domain>";
}

class XmlSchemaTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }
  Chain Resolve(const std::string& name) { return ResolveChain(inspector_, P(name)); }
  // Builds base.raw <- mid.qcow2 (relative backing) <- top.qcow2 (absolute,
  // lazy refcounts, bigger than its backing).
  void MakeThreeImageChain() {
    QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "16M"});
    QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
    QemuImg({"create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "-b", P("mid.qcow2"),
             "-F", "qcow2", P("top.qcow2"), "24M"});
  }
  ScopedTempDir dir_;
  ImageInspector inspector_;
};

TEST_F(XmlSchemaTest, VolumeXmlOfEveryChainElementValidates) {
  MakeThreeImageChain();
  for (const char* name : {"top.qcow2", "mid.qcow2", "base.raw"}) {
    Chain c = Resolve(name);
    ASSERT_TRUE(c.healthy()) << RenderProblems(c);
    std::string xml = RenderVolumeXml(c);
    EXPECT_TRUE(Validates(xml, "storagevol.rng"));
    EXPECT_NE(xml.find("<key>" + P(name) + "</key>"), std::string::npos) << xml;
  }
  std::string top = RenderVolumeXml(Resolve("top.qcow2"));
  EXPECT_NE(top.find("<capacity unit='bytes'>25165824</capacity>"), std::string::npos) << top;
  EXPECT_NE(top.find("<lazy_refcounts/>"), std::string::npos) << top;
  EXPECT_NE(top.find("<backingStore>\n    <path>" + P("mid.qcow2") +
                     "</path>\n    <format type='qcow2'/>"),
            std::string::npos)
      << top;
}

TEST_F(XmlSchemaTest, DiskXmlOfCompleteChainValidatesInsideADomain) {
  MakeThreeImageChain();
  Chain c = Resolve("top.qcow2");
  ASSERT_TRUE(c.complete);
  std::string disk = RenderDiskXml(c);
  EXPECT_TRUE(Validates(WrapDisk(disk), "domain.rng"));
  EXPECT_NE(disk.find("index='2'"), std::string::npos) << disk;
  EXPECT_NE(disk.find("<backingStore/>"), std::string::npos) << disk;
}

TEST_F(XmlSchemaTest, DiskXmlOfBrokenAndUnspecifiedChainsValidates) {
  // A backing that does not exist.
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", P("gone.qcow2"), "-F", "qcow2",
           P("orphan.qcow2"), "8M"});
  Chain orphan = Resolve("orphan.qcow2");
  EXPECT_FALSE(orphan.complete);
  std::string disk = RenderDiskXml(orphan);
  EXPECT_TRUE(Validates(WrapDisk(disk), "domain.rng"));
  EXPECT_EQ(disk.find("<backingStore/>"), std::string::npos) << disk;
  EXPECT_TRUE(Validates(RenderVolumeXml(orphan), "storagevol.rng"));

  // A backing whose format is not recorded and which has a backing of its own.
  MakeThreeImageChain();
  QemuImg({"create", "-q", "-f", "qcow2", "-b", P("top.qcow2"), "-F", "qcow2", P("over.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("over.qcow2")).ok());
  Chain unspecified = Resolve("over.qcow2");
  EXPECT_FALSE(unspecified.healthy());
  disk = RenderDiskXml(unspecified);
  EXPECT_TRUE(Validates(WrapDisk(disk), "domain.rng"));
  EXPECT_EQ(disk.find("backingStore"), std::string::npos) << disk;
  EXPECT_TRUE(Validates(RenderVolumeXml(unspecified), "storagevol.rng"));
}

TEST_F(XmlSchemaTest, DiskXmlWithNbdBackingValidates) {
  QemuImg({"create", "-q", "-f", "qcow2", "-u", "-b", "nbd://localhost:10809/export", "-F",
           "raw", P("net.qcow2"), "8M"});
  Chain c = Resolve("net.qcow2");
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_TRUE(c.elements[1].network);
  std::string disk = RenderDiskXml(c);
  EXPECT_TRUE(Validates(WrapDisk(disk), "domain.rng"));
  EXPECT_NE(disk.find("<backingStore type='network' index='1'>"), std::string::npos) << disk;
  EXPECT_NE(disk.find("protocol='nbd'"), std::string::npos) << disk;
  std::string volume = RenderVolumeXml(c);
  EXPECT_TRUE(Validates(volume, "storagevol.rng"));
  EXPECT_EQ(volume.find("backingStore"), std::string::npos) << volume;
}

TEST_F(XmlSchemaTest, PoolXmlValidatesForAdHocAndDefinedPools) {
  Result<PoolDef> adhoc = PoolFromSpec("scratch=" + dir_.path());
  ASSERT_TRUE(adhoc.ok());
  std::string xml = RenderPoolXml(*adhoc, StatPoolSpace(*adhoc));
  EXPECT_TRUE(Validates(xml, "storagepool.rng"));

  Result<PoolDef> netfs = ParsePoolXml(
      "<pool type='netfs'><name>nfs</name><uuid>2b0b3e3c-6b7a-4c1e-9a34-5b8f7f8d1e20</uuid>"
      "<source><host name='filer.example.com'/><dir path='/export'/><format type='nfs'/>"
      "</source><target><path>" + dir_.path() + "</path></target></pool>",
      "netfs.xml");
  ASSERT_TRUE(netfs.ok()) << netfs.status().ToString();
  xml = RenderPoolXml(*netfs, StatPoolSpace(*netfs));
  EXPECT_TRUE(Validates(xml, "storagepool.rng"));
  EXPECT_NE(xml.find("<uuid>2b0b3e3c-6b7a-4c1e-9a34-5b8f7f8d1e20</uuid>"), std::string::npos);
}

// `info` is meant to read exactly like qemu-img info --backing-chain.
TEST_F(XmlSchemaTest, InfoTextMatchesQemuImgBackingChain) {
  MakeThreeImageChain();
  Chain c = Resolve("top.qcow2");
  ASSERT_TRUE(c.healthy()) << RenderProblems(c);
  RunResult qemu = testutil::Run({"qemu-img", "info", "--backing-chain", P("top.qcow2")});
  ASSERT_EQ(qemu.exit_code, 0) << qemu.err;
  EXPECT_EQ(RenderInfoText(c), qemu.out);
}

}  // namespace
}  // namespace chainfs::core
