// disk.xml of domain disks (DESIGN section 8), for chains made by real
// qemu-img and for network disks, validated with xmllint against libvirt's
// own RelaxNG schema (domain.rng, which includes domaincommon.rng).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/domain/disk_chain.h"
#include "core/domain/domain_def.h"
#include "core/render/domain_render.h"
#include "core/render/render.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::RunResult;
using testutil::ScopedTempDir;

::testing::AssertionResult ValidDomain(const std::string& xml) {
  RunResult r = testutil::RunWithInput(
      {"xmllint", "--noout", "--relaxng", "/usr/share/libvirt/schemas/domain.rng", "-"}, xml);
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.err << "\n" << xml;
}

std::string Wrap(const std::string& disks) {
  return "<domain type='qemu'><name>x</name><memory>131072</memory><os><type>hvm</type></os>"
         "<devices>" + disks + "</devices></domain>";
}

void QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST(DomainXmlSchemaTest, DiskXmlOfEveryKindOfDiskValidates) {
  ScopedTempDir dir;
  auto P = [&](const std::string& n) { return dir.Sub(n); };
  QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
  QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("nofmt.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("nofmt.qcow2")).ok());
  const std::string given = "<backingStore type='file'><format type='qcow2'/><source file='" +
                            P("mid.qcow2") + "'/></backingStore>";
  const std::vector<std::string> disks = {
      // complete chain, detected
      "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" +
          P("top.qcow2") + "'/><target dev='vda' bus='virtio'/><address type='pci' domain='0x0000' "
          "bus='0x00' slot='0x04' function='0x0'/></disk>",
      // missing backing format (stops at the probe) and the same with a partial explicit chain
      "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" +
          P("nofmt.qcow2") + "'/><target dev='vdb' bus='virtio'/></disk>",
      "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" +
          P("nofmt.qcow2") + "'/>" + given + "<target dev='vdc' bus='virtio'/></disk>",
      // no driver type, a terminator, a read-only cdrom without media
      "<disk type='file' device='disk'><driver name='qemu'/><source file='" + P("base.raw") +
          "'/><backingStore/><target dev='vdd' bus='virtio'/></disk>",
      "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sda' "
          "bus='sata'/><readonly/></disk>",
      // network disks: nbd with a backing chain given, rbd with auth and monitors
      "<disk type='network' device='disk'><driver name='qemu' type='qcow2'/><source "
          "protocol='nbd' name='bar'><host transport='unix' socket='/var/run/nbdsock'/></source>"
          "<backingStore type='file'><format type='raw'/><source file='" + P("base.raw") +
          "'/><backingStore/></backingStore><target dev='vde' bus='virtio'/></disk>",
      "<disk type='network' device='disk'><driver name='qemu' type='raw'/><auth "
          "username='myname'><secret type='ceph' usage='mycluster_myname'/></auth><source "
          "protocol='rbd' name='pool/image'><host name='mon1.example.org' port='6321'/><host "
          "name='mon2.example.org' port='6322'/></source><target dev='vdf' bus='virtio'/></disk>",
  };
  ImageInspector inspector;
  DiskContext ctx;
  ctx.domain = "x";
  std::string all;
  for (const std::string& disk_xml : disks) {
    Result<DomainDef> def = ParseDomainXml(Wrap(disk_xml), "t");
    ASSERT_TRUE(def.ok()) << def.status().message();
    ASSERT_EQ(def->disks.size(), 1u) << disk_xml;
    Chain chain = ResolveDiskChain(inspector, def->disks[0], ctx);
    std::string rendered = RenderDomainDiskXml(def->disks[0], chain);
    ASSERT_FALSE(rendered.empty()) << disk_xml;
    EXPECT_TRUE(ValidDomain(Wrap(rendered)));
    all += rendered;
  }
  // All together, as one domain's devices.
  EXPECT_TRUE(ValidDomain(Wrap(all)));
}

}  // namespace
}  // namespace chainfs::core
