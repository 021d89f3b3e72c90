// Domain definitions and the chains of domain disks (DESIGN section 8),
// against images made by qemu-img at test time. The live-libvirt
// comparison is tests/interop/domain_libvirt_test.cc.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/domain/disk_chain.h"
#include "core/domain/domain_catalog.h"
#include "core/domain/domain_def.h"
#include "core/render/domain_render.h"
#include "core/render/render.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::ScopedTempDir;

void QemuImg(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"qemu-img"};
  argv.insert(argv.end(), args.begin(), args.end());
  testutil::RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// A domain with the features of libvirt's QEMUGuest1 test domain: network
// disks over gluster (unix socket), nbd and rbd (three monitors, auth with a
// ceph secret), explicit indexes, a block device as a backing element, an
// element whose <source> comes before its <format>, and a <backingStore/>
// before the <source>.
constexpr const char* kNetworkDomain = R"(<domain type='qemu'>
  <name>netguest</name>
  <uuid>0b6a1c58-52d6-4d3c-9c7f-3f0a3b2d7e11</uuid>
  <memory unit='KiB'>65536</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source protocol='gluster' name='Volume2/Image'>
        <host transport='unix' socket='/path/to/sock'/>
      </source>
      <backingStore type='file' index='1'>
        <format type='qcow2'/>
        <source file='/nonexistent/missing-backing-store.qcow'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source protocol='nbd' name='bar'>
        <host transport='unix' socket='/var/run/nbdsock'/>
      </source>
      <backingStore type='block' index='1'>
        <format type='qcow2'/>
        <source dev='/dev/nonexistent-vg/lv1'/>
        <backingStore type='file' index='2'>
          <source file='/nonexistent/image2.qcow'/>
          <format type='qcow2'/>
          <backingStore type='file' index='3'>
            <format type='raw'/>
            <source file='/nonexistent/base.iso'/>
            <backingStore/>
          </backingStore>
        </backingStore>
      </backingStore>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <backingStore/>
      <source protocol='gluster' name='Volume1/Image'>
        <host name='example.org' port='6000'/>
      </source>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <auth username='myname'>
        <secret type='ceph' usage='mycluster_myname'/>
      </auth>
      <source protocol='rbd' name='pool/image'>
        <host name='mon1.example.org' port='6321'/>
        <host name='mon2.example.org' port='6322'/>
        <host name='mon3.example.org' port='6322'/>
      </source>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source dev='/dev/nonexistent-vg/lv2'/>
      <target dev='vde' bus='virtio'/>
    </disk>
  </devices>
</domain>
)";

class DomainTest : public ::testing::Test {
 protected:
  std::string P(const std::string& name) const { return dir_.Sub(name); }

  // A one-disk domain over `disk_xml` (a <disk> element).
  static std::string OneDisk(const std::string& name, const std::string& disk_xml) {
    return "<domain type='qemu'><name>" + name +
           "</name><memory unit='KiB'>65536</memory><devices>" + disk_xml +
           "</devices></domain>";
  }
  DiskDef Disk(const std::string& disk_xml) {
    Result<DomainDef> def = ParseDomainXml(OneDisk("d", disk_xml), "test");
    EXPECT_TRUE(def.ok()) << def.status().message();
    if (!def.ok() || def->disks.empty()) return DiskDef{};
    return def->disks[0];
  }
  Chain Resolve(const DiskDef& disk) {
    DiskContext ctx;
    ctx.domain = "d";
    ctx.access_as = "uid:107, gid:107";
    return ResolveDiskChain(inspector_, disk, ctx);
  }
  std::string FileDisk(const std::string& file, const std::string& driver_type,
                       const std::string& backing = {}) {
    std::string driver = driver_type.empty() ? "<driver name='qemu'/>"
                                             : "<driver name='qemu' type='" + driver_type + "'/>";
    return "<disk type='file' device='disk'>" + driver + "<source file='" + file + "'/>" + backing +
           "<target dev='vda' bus='virtio'/></disk>";
  }
  void MakeChain() {
    QemuImg({"create", "-q", "-f", "raw", P("base.raw"), "1M"});
    QemuImg({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
    QemuImg({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
  }

  ScopedTempDir dir_;
  ImageInspector inspector_;
};

TEST_F(DomainTest, ParsesNetworkDisksAuthIndexesAndTerminators) {
  Result<DomainDef> def = ParseDomainXml(kNetworkDomain, "netguest.xml");
  ASSERT_TRUE(def.ok()) << def.status().message();
  EXPECT_EQ(def->name, "netguest");
  EXPECT_EQ(def->uuid, "0b6a1c58-52d6-4d3c-9c7f-3f0a3b2d7e11");
  ASSERT_EQ(def->disks.size(), 5u);
  const DiskDef& vda = def->disks[0];
  EXPECT_EQ(vda.target, "vda");
  EXPECT_EQ(vda.top.type, "network");
  ASSERT_TRUE(vda.top.network);
  EXPECT_EQ(vda.top.network->protocol, "gluster");
  EXPECT_EQ(vda.top.network->name, "Volume2/Image");
  EXPECT_EQ(vda.top.network->transport, "unix");
  EXPECT_EQ(vda.top.network->socket, "/path/to/sock");
  ASSERT_EQ(vda.backing.size(), 1u);
  EXPECT_EQ(vda.backing[0].path, "/nonexistent/missing-backing-store.qcow");
  EXPECT_EQ(vda.backing[0].index, 1);
  EXPECT_FALSE(vda.terminated);

  const DiskDef& vdb = def->disks[1];
  ASSERT_EQ(vdb.backing.size(), 3u);
  EXPECT_EQ(vdb.backing[0].type, "block");
  EXPECT_EQ(vdb.backing[0].path, "/dev/nonexistent-vg/lv1");
  EXPECT_EQ(vdb.backing[1].format, "qcow2");  // <source> before <format>
  EXPECT_EQ(vdb.backing[2].format, "raw");
  EXPECT_EQ(vdb.backing[2].index, 3);
  EXPECT_TRUE(vdb.terminated);
  EXPECT_TRUE(vdb.errors.empty());

  const DiskDef& vdc = def->disks[2];
  EXPECT_TRUE(vdc.terminated);  // <backingStore/> before <source>
  EXPECT_TRUE(vdc.backing.empty());
  EXPECT_EQ(vdc.top.Describe(), "gluster://example.org:6000/Volume1/Image");

  const DiskDef& vdd = def->disks[3];
  ASSERT_TRUE(vdd.top.network);
  EXPECT_EQ(vdd.top.network->protocol, "rbd");
  EXPECT_EQ(vdd.top.hosts.size(), 3u);
  EXPECT_EQ(vdd.top.hosts[1], "mon2.example.org:6322");
  EXPECT_EQ(vdd.top.auth_username, "myname");
  EXPECT_EQ(vdd.top.secret, "ceph:mycluster_myname");
  EXPECT_EQ(vdd.top.Describe(), "rbd:pool/image");

  EXPECT_EQ(def->disks[4].top.type, "block");
  EXPECT_EQ(def->disks[4].top.path, "/dev/nonexistent-vg/lv2");
}

TEST_F(DomainTest, NetworkDisksSayWhyTheirChainIsOrIsNotFollowed) {
  Result<DomainDef> def = ParseDomainXml(kNetworkDomain, "netguest.xml");
  ASSERT_TRUE(def.ok());
  // vda: a gluster top, then an explicit file element that is missing.
  Chain vda = Resolve(def->disks[0]);
  ASSERT_EQ(vda.elements.size(), 2u);
  EXPECT_TRUE(vda.elements[0].network);
  ASSERT_FALSE(vda.problems.empty());
  EXPECT_EQ(vda.problems[0].kind, ProblemKind::kMissingBackingFile);
  EXPECT_NE(vda.problems[0].message.find(
                "Cannot access backing file '/nonexistent/missing-backing-store.qcow'"),
            std::string::npos)
      << vda.problems[0].message;
  EXPECT_NE(vda.problems[0].message.find("(as uid:107, gid:107): No such file or directory"),
            std::string::npos);
  // vdc: raw over gluster, terminated: nothing to follow, nothing wrong.
  Chain vdc = Resolve(def->disks[2]);
  EXPECT_TRUE(vdc.healthy()) << RenderProblems(vdc);
  EXPECT_TRUE(vdc.complete);
  // vdd: a qcow2 over rbd with no chain given: libvirt cannot read it.
  Chain vdd = Resolve(def->disks[3]);
  ASSERT_EQ(vdd.problems.size(), 1u) << RenderProblems(vdd);
  EXPECT_EQ(vdd.problems[0].kind, ProblemKind::kUnsupportedProtocol);
  EXPECT_NE(vdd.problems[0].message.find("libvirt does not read the metadata of images over rbd"),
            std::string::npos)
      << vdd.problems[0].message;
  // vde: a block device that does not exist.
  Chain vde = Resolve(def->disks[4]);
  ASSERT_FALSE(vde.problems.empty());
  EXPECT_EQ(vde.problems[0].message,
            "Cannot access storage file '/dev/nonexistent-vg/lv2' (as uid:107, gid:107): No such "
            "file or directory");
}

TEST_F(DomainTest, ParsesTheSeedDomainWhenTheProjectDocumentsArePresent) {
  // ../shared/seeds holds the documents the project was created from; the
  // QEMUGuest1 domain at the end of 003 is a diff ("+" lines).
  std::ifstream in(std::string(CHAINFS_SOURCE_DIR) + "/../shared/seeds/003_6bd6654bdab87097.txt");
  if (!in) GTEST_SKIP() << "../shared/seeds is not next to the repository";
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  size_t start = text.rfind("+<domain type='qemu'>");
  ASSERT_NE(start, std::string::npos);
  std::string xml;
  std::istringstream lines(text.substr(start));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '+') break;
    xml += line.substr(1) + "\n";
    if (line.find("</domain>") != std::string::npos) break;
  }
  Result<DomainDef> def = ParseDomainXml(xml, "seed");
  ASSERT_TRUE(def.ok()) << def.status().message();
  EXPECT_EQ(def->name, "QEMUGuest1");
  ASSERT_EQ(def->disks.size(), 5u);
  EXPECT_EQ(def->disks[1].backing.size(), 6u);
  EXPECT_TRUE(def->disks[1].terminated);
  EXPECT_TRUE(def->disks[2].terminated);
  EXPECT_EQ(def->disks[3].top.hosts.size(), 3u);
  for (const DiskDef& d : def->disks) {
    Chain c = Resolve(d);
    EXPECT_FALSE(c.elements.empty()) << d.target;
  }
}

TEST_F(DomainTest, CompleteChainFollowsMetadataBelowTheTop) {
  MakeChain();
  DiskDef disk = Disk(FileDisk(P("top.qcow2"), "qcow2"));
  Chain c = Resolve(disk);
  EXPECT_TRUE(c.healthy()) << RenderProblems(c);
  EXPECT_TRUE(c.complete);
  ASSERT_EQ(c.elements.size(), 3u);
  EXPECT_EQ(c.elements[0].origin, ElementOrigin::kXml);
  EXPECT_EQ(c.elements[1].origin, ElementOrigin::kMetadata);
  EXPECT_EQ(c.elements[1].path, P("mid.qcow2"));
  EXPECT_EQ(c.elements[2].format, "raw");
  std::string xml = RenderDomainDiskXml(disk, c);
  EXPECT_NE(xml.find("<source file='" + P("top.qcow2") + "' index='1'/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<backingStore type='file' index='2'>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<backingStore type='file' index='3'>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<backingStore/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<target dev='vda' bus='virtio'/>"), std::string::npos) << xml;
}

TEST_F(DomainTest, MissingBackingFormatHasLibvirtsMessageAndBothFixes) {
  MakeChain();
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  Chain c = Resolve(Disk(FileDisk(P("top.qcow2"), "qcow2")));
  ASSERT_EQ(c.problems.size(), 1u) << RenderProblems(c);
  const Problem& p = c.problems[0];
  EXPECT_EQ(p.kind, ProblemKind::kMissingBackingFormat);
  EXPECT_EQ(p.message, "format of backing image 'mid.qcow2' of image '" + P("top.qcow2") +
                           "' was not specified in the image metadata (See "
                           "https://libvirt.org/kbase/backing_chains.html for troubleshooting)");
  EXPECT_NE(p.fix.find("qemu-img rebase -u -f qcow2 -F qcow2 -b mid.qcow2"), std::string::npos)
      << p.fix;
  EXPECT_NE(p.fix.find("virsh edit d"), std::string::npos) << p.fix;
  EXPECT_NE(p.fix.find("<backingStore type='file'><format type='qcow2'/><source file='" +
                       P("mid.qcow2") + "'/></backingStore>"),
            std::string::npos)
      << p.fix;
}

TEST_F(DomainTest, PartialExplicitChainFixesTheMissingFormatAndIsContinued) {
  MakeChain();
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  std::string given = "<backingStore type='file'><format type='qcow2'/><source file='" +
                      P("mid.qcow2") + "'/></backingStore>";
  DiskDef disk = Disk(FileDisk(P("top.qcow2"), "qcow2", given));
  Chain c = Resolve(disk);
  EXPECT_TRUE(c.healthy()) << RenderProblems(c);
  EXPECT_TRUE(c.complete);
  ASSERT_EQ(c.elements.size(), 3u);
  EXPECT_EQ(c.elements[1].origin, ElementOrigin::kXml);
  EXPECT_EQ(c.elements[2].origin, ElementOrigin::kMetadata);
  EXPECT_EQ(c.elements[2].path, P("base.raw"));
  EXPECT_EQ(RenderElementOrigin(c.elements[1]), "xml\n");
  EXPECT_EQ(RenderElementIndex(c, 2), "3\n");
}

TEST_F(DomainTest, TerminatorEndsTheChainEvenWhereTheImageHasABacking) {
  MakeChain();
  std::string given = "<backingStore/>";
  Chain c = Resolve(Disk(FileDisk(P("top.qcow2"), "qcow2", given)));
  EXPECT_TRUE(c.healthy()) << RenderProblems(c);
  EXPECT_TRUE(c.complete);
  ASSERT_EQ(c.elements.size(), 1u);
}

TEST_F(DomainTest, ExplicitChainIsTakenAsGivenNotAsTheMetadataSays) {
  MakeChain();
  QemuImg({"create", "-q", "-f", "raw", P("other.raw"), "1M"});
  std::string given = "<backingStore type='file'><format type='raw'/><source file='" +
                      P("other.raw") + "'/><backingStore/></backingStore>";
  Chain c = Resolve(Disk(FileDisk(P("top.qcow2"), "qcow2", given)));
  EXPECT_TRUE(c.healthy()) << RenderProblems(c);
  ASSERT_EQ(c.elements.size(), 2u);
  EXPECT_EQ(c.elements[1].path, P("other.raw"));
}

TEST_F(DomainTest, RawDriverOnAQcow2HasNoBackingAndWarnsOfTheMismatch) {
  MakeChain();
  for (const std::string& type : {std::string("raw"), std::string()}) {
    Chain c = Resolve(Disk(FileDisk(P("top.qcow2"), type)));
    ASSERT_EQ(c.elements.size(), 1u) << type;
    EXPECT_EQ(c.elements[0].format, "raw");
    EXPECT_TRUE(c.complete);
    ASSERT_EQ(c.problems.size(), 1u) << RenderProblems(c);
    EXPECT_EQ(c.problems[0].kind, ProblemKind::kFormatMismatch);
    EXPECT_NE(c.problems[0].message.find("format-mismatch"), std::string::npos);
  }
}

TEST_F(DomainTest, MissingBackingFileNamesTheDetectionStartAsLibvirtDoes) {
  MakeChain();
  ASSERT_EQ(::unlink(P("base.raw").c_str()), 0);
  Chain c = Resolve(Disk(FileDisk(P("top.qcow2"), "qcow2")));
  ASSERT_EQ(c.problems.size(), 1u) << RenderProblems(c);
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kMissingBackingFile);
  EXPECT_EQ(c.problems[0].message,
            "Cannot access backing file '" + P("base.raw") + "' of storage file '" +
                P("top.qcow2") + "' (as uid:107, gid:107): No such file or directory");
}

TEST_F(DomainTest, MissingTopHasLibvirtsMessage) {
  Chain c = Resolve(Disk(FileDisk(P("gone.qcow2"), "qcow2")));
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0].message, "Cannot access storage file '" + P("gone.qcow2") +
                                       "' (as uid:107, gid:107): No such file or directory");
  EXPECT_FALSE(c.complete);
}

TEST_F(DomainTest, BackingStoreWithoutFormatIsADefinitionError) {
  MakeChain();
  std::string given = "<backingStore type='file'><source file='" + P("mid.qcow2") +
                      "'/></backingStore>";
  Chain c = Resolve(Disk(FileDisk(P("top.qcow2"), "qcow2", given)));
  ASSERT_FALSE(c.problems.empty());
  EXPECT_EQ(c.problems[0].kind, ProblemKind::kDomainDefinition);
  EXPECT_NE(c.problems[0].message.find("missing disk backing store format"), std::string::npos);
}

TEST_F(DomainTest, StatusFileGivesTheLiveChainAndDrift) {
  MakeChain();
  QemuImg({"create", "-q", "-f", "raw", P("new.raw"), "1M"});
  const std::string top = P("top.qcow2"), mid = P("mid.qcow2"), base = P("base.raw");
  std::string status =
      "<domstatus state='running' reason='booted' pid='4242'>\n"
      "<domain type='qemu' id='1'><name>d</name><devices>"
      "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
      "<source file='" + top + "' index='1'/>"
      "<backingStore type='file' index='2'><format type='qcow2'/><source file='" + mid + "'/>"
      "<backingStore type='file' index='3'><format type='raw'/><source file='" + base + "'/>"
      "<backingStore/></backingStore></backingStore>"
      "<target dev='vda' bus='virtio'/></disk></devices></domain></domstatus>\n";
  Result<DomainStatus> st = ParseDomainStatus(status, "d.xml");
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->state, "running");
  ASSERT_EQ(st->live.disks.size(), 1u);
  DiskContext ctx;
  ctx.domain = "d";
  Chain live = ResolveDiskChain(inspector_, st->live.disks[0], ctx);
  AddDrift(inspector_, live, ctx);
  EXPECT_TRUE(live.healthy()) << RenderProblems(live);
  EXPECT_EQ(live.elements[0].xml_index, 1);
  // The mid image is rebased under the running domain: drift.
  QemuImg({"rebase", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", P("new.raw"), mid});
  ImageInspector fresh;
  Chain after = ResolveDiskChain(fresh, st->live.disks[0], ctx);
  AddDrift(fresh, after, ctx);
  ASSERT_EQ(after.problems.size(), 1u) << RenderProblems(after);
  EXPECT_EQ(after.problems[0].kind, ProblemKind::kDrift);
  EXPECT_EQ(after.problems[0].index, 1);
  EXPECT_NE(after.problems[0].message.find(P("new.raw")), std::string::npos);
}

TEST_F(DomainTest, CatalogReadsDefinitionsAndStatusAndSkipsBadFiles) {
  ASSERT_EQ(::mkdir(P("etc").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(P("run").c_str(), 0755), 0);
  WriteFile(P("etc/a.xml"), OneDisk("a", FileDisk("/x/a.qcow2", "qcow2")));
  WriteFile(P("etc/b.xml"), OneDisk("b", FileDisk("/x/b.qcow2", "qcow2")));
  WriteFile(P("etc/bad.xml"), "<domain><name>bad");
  WriteFile(P("run/a.xml"), "<domstatus state='running' pid='1'>" +
                                OneDisk("a", FileDisk("/x/a.qcow2", "qcow2")) + "</domstatus>");
  DomainCatalog catalog;
  catalog.SetSources({P("etc"), P("run")});
  std::shared_ptr<const DomainSet> set = catalog.Current();
  ASSERT_EQ(set->domains.size(), 2u);
  EXPECT_EQ(set->domains.at("a")->State(), "running");
  EXPECT_EQ(set->domains.at("b")->State(), "shut off");
  ASSERT_EQ(set->skipped.size(), 1u);
  EXPECT_NE(set->skipped[0].find("bad.xml"), std::string::npos);
  EXPECT_EQ(RenderDomainLine(*set->domains.at("a")), "a\trunning\tvda=/x/a.qcow2\n");
  // Unchanged folders: the same load. A destroy (the status file goes) and
  // an undefine show at the next use.
  EXPECT_EQ(catalog.Current().get(), set.get());
  ASSERT_EQ(::unlink(P("run/a.xml").c_str()), 0);
  ASSERT_EQ(::unlink(P("etc/b.xml").c_str()), 0);
  std::shared_ptr<const DomainSet> after = catalog.Current();
  ASSERT_EQ(after->domains.size(), 1u);
  EXPECT_EQ(after->domains.at("a")->State(), "shut off");
}

TEST_F(DomainTest, ChoosesTheDefaultFoldersOnlyWhenNothingIsNamed) {
  DomainSources none = ChooseDomainSources(false, std::nullopt, std::nullopt);
  EXPECT_EQ(none.domain_dir, "/etc/libvirt/qemu");
  EXPECT_EQ(none.run_dir, "/run/libvirt/qemu");
  DomainSources pools = ChooseDomainSources(true, std::nullopt, std::nullopt);
  EXPECT_TRUE(pools.domain_dir.empty());
  EXPECT_TRUE(pools.run_dir.empty());
  DomainSources named = ChooseDomainSources(true, std::string("/d"), std::nullopt);
  EXPECT_EQ(named.domain_dir, "/d");
  EXPECT_TRUE(named.run_dir.empty());
}

}  // namespace
}  // namespace chainfs::core
