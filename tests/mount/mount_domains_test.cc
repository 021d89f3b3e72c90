// MOUNT/.domains and VOL/users through a real FUSE mount (DESIGN section
// 8), with domain definitions and status files written the way libvirt
// writes them (a new file renamed into place). The same documents as
// chainctl's, byte for byte. The live-libvirt comparison is
// tests/interop/domain_libvirt_test.cc.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>

#include "mount/mount_fixture.h"
#include "util/dir_fingerprint.h"
#include "util/qcow2_craft.h"

namespace chainfs::mounttest {
namespace {

class MountDomainsTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    etc_ = tmp_.Sub("etc");
    run_ = tmp_.Sub("run");
    ASSERT_EQ(::mkdir(etc_.c_str(), 0700), 0);
    ASSERT_EQ(::mkdir(run_.c_str(), 0755), 0);
  }
  // Writes `text` to DIR/NAME as libvirt does: a temporary file renamed
  // into place.
  static void Put(const std::string& dir, const std::string& name, const std::string& text) {
    std::string tmp = dir + "/." + name + ".new";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << text;
      ASSERT_TRUE(out.good());
    }
    ASSERT_EQ(::chmod(tmp.c_str(), 0600), 0);
    ASSERT_EQ(::rename(tmp.c_str(), (dir + "/" + name).c_str()), 0);
  }
  std::string Domain(const std::string& name, const std::string& disks) {
    return "<domain type='qemu'>\n  <name>" + name +
           "</name>\n  <uuid>6f1e5b7a-0000-4000-8000-00000000000" + std::to_string(name.size()) +
           "</uuid>\n  <memory unit='KiB'>65536</memory>\n  <devices>\n" + disks +
           "  </devices>\n</domain>\n";
  }
  static std::string FileDisk(const std::string& target, const std::string& file,
                              const std::string& type, const std::string& backing = {}) {
    return "    <disk type='file' device='disk'>\n      <driver name='qemu' type='" + type +
           "'/>\n      <source file='" + file + "'/>\n" + backing + "      <target dev='" +
           target + "' bus='virtio'/>\n    </disk>\n";
  }
  // Expects `path` to read `expected` within a few seconds: a change made
  // outside the mount reaches the kernel through the inotify watcher, which
  // drops what the kernel kept (the daemon itself answers exactly at once).
  void ExpectSoon(const std::string& path, const std::string& expected) {
    std::string got;
    for (int i = 0; i < 500; ++i) {
      got = ReadFile(path, false);
      if (got == expected) return;
      ::usleep(10000);
    }
    EXPECT_EQ(got, expected) << path;
  }
  bool MountDomains() { return MountPool({"--domain-dir", etc_, "--run-dir", run_}); }
  std::string Ctl(const std::vector<std::string>& args, int* rc = nullptr) {
    std::vector<std::string> all = {"--domain-dir", etc_, "--run-dir", run_};
    all.insert(all.end(), args.begin(), args.end());
    return Chainctl(all, rc);
  }
  std::string etc_, run_;
};

TEST_F(MountDomainsTest, ShowsDomainsDisksAndChainsAsChainctlDoes) {
  MakeChain();
  QemuImgCreate({"-f", "raw", P("data.raw"), "1M"});
  Put(etc_, "vm1.xml",
      Domain("vm1", FileDisk("vda", P("top.qcow2"), "qcow2") + FileDisk("vdb", P("data.raw"), "raw")));
  ASSERT_TRUE(MountDomains());
  EXPECT_EQ(ReadFile(M(".domains/vm1/state")), "shut off\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/uuid")), "6f1e5b7a-0000-4000-8000-000000000003\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/domain.xml")), ReadFile(etc_ + "/vm1.xml"));
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/source")), P("top.qcow2") + "\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/type")), "file\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/format")), "qcow2\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/problems")), "");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/0/origin")), "xml\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/1/origin")), "metadata\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/2/path")), P("base.raw") + "\n");
  // Shut off: the top is 1 and each backing element the next, per disk.
  EXPECT_EQ(ReadFile(M(".domains/vm1/vdb/chain/0/index")), "1\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/0/index")), "1\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/2/index")), "3\n");
  EXPECT_NE(ReadFile(M(".domains/vm1/vda/disk.xml")).find("<backingStore type='file' index='3'>"),
            std::string::npos);
  char link[4096];
  ssize_t n = ::readlink(M(".domains/vm1/vda/chain/1/volume").c_str(), link, sizeof(link));
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(link, size_t(n)), "../../../../../p/mid.qcow2");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/1/volume/format")), "qcow2\n");
  // The same renderers as chainctl.
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/disk.xml")), Ctl({"domain", "vm1", "vda", "--xml"}));
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/info")), Ctl({"domain", "vm1", "vda"}));
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/info.json")), Ctl({"domain", "vm1", "vda", "--json"}));
  EXPECT_EQ(Ctl({"domains"}), "vm1\tshut off\tvda=" + P("top.qcow2") + " vdb=" + P("data.raw") + "\n");
  // users: the domain disk and the overlay volumes whose chain holds base.raw.
  EXPECT_EQ(ReadFile(M("p/base.raw/users")), "vm1/vda\np/mid.qcow2\np/top.qcow2\n");
  EXPECT_EQ(ReadFile(M("p/base.raw/users")), Ctl({"users", P("base.raw")}));
  EXPECT_EQ(ReadFile(M("p/data.raw/users")), "vm1/vdb\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/users")), "vm1/vda\n");
}

TEST_F(MountDomainsTest, ProblemsCarryLibvirtsMessageAndCheckExitsOne) {
  MakeChain();
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  Put(etc_, "vm1.xml", Domain("vm1", FileDisk("vda", P("top.qcow2"), "qcow2")));
  ASSERT_TRUE(MountDomains());
  std::string problems = ReadFile(M(".domains/vm1/vda/problems"));
  EXPECT_EQ(problems.rfind("1: format of backing image 'mid.qcow2' of image '" + P("top.qcow2") +
                               "' was not specified in the image metadata (See "
                               "https://libvirt.org/kbase/backing_chains.html for "
                               "troubleshooting) -- fix: echo qcow2 > "
                               "p/top.qcow2/backing_format, or qemu-img rebase -u",
                           0),
            0u)
      << problems;
  EXPECT_NE(problems.find("virsh edit vm1"), std::string::npos) << problems;
  int rc = 0;
  EXPECT_EQ(Ctl({"domain", "vm1", "vda", "--check"}, &rc), problems);
  EXPECT_EQ(rc, 1);
  // The image fix through the mount heals the disk.
  ASSERT_EQ(WriteValue(M("p/top.qcow2/backing_format"), "qcow2\n"), 0);
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/problems")), "");
}

TEST_F(MountDomainsTest, DefineStartDestroyUndefineShowOnTheNextAccess) {
  MakeChain();
  ASSERT_TRUE(MountDomains());
  EXPECT_EQ(ReadFile(M(".domains/vm1/state"), false), "");
  Put(etc_, "vm1.xml", Domain("vm1", FileDisk("vda", P("top.qcow2"), "qcow2")));
  EXPECT_EQ(ReadFile(M(".domains/vm1/state")), "shut off\n");
  // start: a status file with the live chain (libvirt numbers it from 1).
  std::string live =
      "<domstatus state='running' reason='booted' pid='1'>\n<domain type='qemu' id='1'>"
      "<name>vm1</name><devices><disk type='file' device='disk'>"
      "<driver name='qemu' type='qcow2'/><source file='" + P("top.qcow2") + "' index='1'/>"
      "<backingStore type='file' index='2'><format type='qcow2'/><source file='" + P("mid.qcow2") +
      "'/><backingStore type='file' index='3'><format type='raw'/><source file='" + P("base.raw") +
      "'/><backingStore/></backingStore></backingStore><target dev='vda' bus='virtio'/></disk>"
      "</devices></domain></domstatus>\n";
  Put(run_, "vm1.xml", live);
  ExpectSoon(M(".domains/vm1/state"), "running\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/problems")), "");
  std::string xml = ReadFile(M(".domains/vm1/vda/disk.xml"));
  EXPECT_NE(xml.find("index='3'"), std::string::npos) << xml;
  // destroy, then undefine.
  ASSERT_EQ(::unlink((run_ + "/vm1.xml").c_str()), 0);
  ExpectSoon(M(".domains/vm1/state"), "shut off\n");
  ASSERT_EQ(::unlink((etc_ + "/vm1.xml").c_str()), 0);
  struct stat st;
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = ::stat(M(".domains/vm1").c_str(), &st) != 0 && errno == ENOENT;
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone);
}

// Listing .domains resolves every disk's chain on the prefetch threads, so
// the lookups a glob makes next (cat .domains/*/*/problems) find them
// resolved; the resolution is the same one a lookup would have made.
TEST_F(MountDomainsTest, ListingTheDomainsResolvesTheirDisksAheadOfTheLookups) {
  MakeChain();
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());  // a problem to show
  constexpr int kDomains = 6;
  for (int i = 0; i < kDomains; ++i) {
    std::string a = "a" + std::to_string(i) + ".qcow2", b = "b" + std::to_string(i) + ".qcow2";
    QemuImgCreate({"-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", P(a)});
    QemuImgCreate({"-f", "qcow2", P(b), "1M"});
    Put(etc_, "vm" + std::to_string(i) + ".xml",
        Domain("vm" + std::to_string(i), FileDisk("vda", P(a), "qcow2") + FileDisk("vdb", P(b), "qcow2")));
  }
  ASSERT_TRUE(MountDomains());
  uint64_t before = Stat("chain_cache_misses");
  DIR* d = ::opendir(M(".domains").c_str());
  ASSERT_NE(d, nullptr);
  int listed = 0;
  while (struct dirent* e = ::readdir(d)) listed += e->d_name[0] != '.';
  ::closedir(d);
  EXPECT_EQ(listed, kDomains);
  // No lookup below .domains yet: only the prefetch resolves the 12 disks.
  uint64_t resolved = before;
  for (int i = 0; i < 1000 && resolved < before + 2 * kDomains; ++i) {
    ::usleep(10000);
    resolved = Stat("chain_cache_misses");
  }
  EXPECT_EQ(resolved, before + 2 * kDomains);
  for (int i = 0; i < kDomains; ++i) {
    std::string vm = ".domains/vm" + std::to_string(i);
    EXPECT_NE(ReadFile(M(vm + "/vda/problems")).find("format of backing image 'mid.qcow2'"),
              std::string::npos);
    EXPECT_EQ(ReadFile(M(vm + "/vdb/problems")), "");
    int rc = 0;
    EXPECT_EQ(ReadFile(M(vm + "/vda/problems")),
              Ctl({"domain", "vm" + std::to_string(i), "vda", "--check"}, &rc));
    EXPECT_EQ(rc, 1);
  }
  EXPECT_EQ(Stat("chain_cache_misses"), before + 2 * kDomains) << "a listed disk was resolved again";
  // A second listing in the same generations prefetches nothing more.
  d = ::opendir(M(".domains").c_str());
  ASSERT_NE(d, nullptr);
  while (::readdir(d) != nullptr) {
  }
  ::closedir(d);
  ::usleep(100000);
  EXPECT_EQ(Stat("chain_cache_misses"), before + 2 * kDomains);
}

TEST_F(MountDomainsTest, RunningDomainShowsDriftWhenItsImagesChangeUnderIt) {
  MakeChain();
  QemuImgCreate({"-f", "raw", P("other.raw"), "64M"});
  Put(etc_, "vm1.xml", Domain("vm1", FileDisk("vda", P("top.qcow2"), "qcow2")));
  std::string live =
      "<domstatus state='running' pid='1'><domain type='qemu' id='1'><name>vm1</name><devices>"
      "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" +
      P("top.qcow2") + "' index='1'/><backingStore type='file' index='2'><format type='qcow2'/>"
      "<source file='" + P("mid.qcow2") + "'/><backingStore type='file' index='3'><format "
      "type='raw'/><source file='" + P("base.raw") + "'/><backingStore/></backingStore>"
      "</backingStore><target dev='vda' bus='virtio'/></disk></devices></domain></domstatus>";
  Put(run_, "vm1.xml", live);
  ASSERT_TRUE(MountDomains());
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/problems")), "");
  // Rebased (metadata only) under the running VM.
  MustRun({"qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", "other.raw",
           P("mid.qcow2")});
  std::string problems;
  for (int i = 0; i < 500 && problems.empty(); ++i) {
    problems = ReadFile(M(".domains/vm1/vda/problems"));
    if (problems.empty()) ::usleep(10000);
  }
  EXPECT_NE(problems.find("1: drift: image '" + P("mid.qcow2") + "' now records backing '" +
                          P("other.raw") + "' (raw), but running domain 'vm1' was started on '" +
                          P("base.raw") + "' (raw)"),
            std::string::npos)
      << problems;
}

TEST_F(MountDomainsTest, RmdirAndMvOfAnImageADomainUsesAreRefused) {
  MakeChain();
  Put(etc_, "vm1.xml", Domain("vm1", FileDisk("vda", P("top.qcow2"), "qcow2")));
  ASSERT_TRUE(MountDomains());
  std::map<std::string, std::string> before = testutil::DirectoryFingerprint(pool_);
  // rmdir of the base, two levels below the disk: EBUSY, nothing changes.
  EXPECT_NE(::rmdir(M("p/base.raw").c_str()), 0);
  EXPECT_EQ(errno, EBUSY);
  EXPECT_NE(::rmdir(M("p/top.qcow2").c_str()), 0);
  EXPECT_EQ(errno, EBUSY);
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
  ExpectLogged("rmdir", "/p/base.raw", "EBUSY", "used by domain vm1/vda (shut off)");
  // A running domain: mv is refused too.
  Put(run_, "vm1.xml", "<domstatus state='running' pid='1'>" +
                           Domain("vm1", FileDisk("vda", P("top.qcow2"), "qcow2")) +
                           "</domstatus>");
  EXPECT_NE(::rename(M("p/mid.qcow2").c_str(), M("p/mid2.qcow2").c_str()), 0);
  EXPECT_EQ(errno, EBUSY);
  EXPECT_EQ(testutil::DirectoryFingerprint(pool_), before);
  ExpectLogged("rename", "/p/mid.qcow2", "EBUSY", "used by running domain vm1/vda (running)");
  // Shut off: mv goes through, and the log names the definition to edit.
  ASSERT_EQ(::unlink((run_ + "/vm1.xml").c_str()), 0);
  ASSERT_EQ(::rename(M("p/mid.qcow2").c_str(), M("p/mid2.qcow2").c_str()), 0);
  ExpectLogged("rename", "/p/mid.qcow2", "ok", etc_ + "/vm1.xml");
  // An image no domain uses can still be removed.
  QemuImgCreate({"-f", "raw", P("spare.raw"), "1M"});
  EXPECT_EQ(::rmdir(M("p/spare.raw").c_str()), 0);
}

TEST_F(MountDomainsTest, VolumeDisksResolveThroughThePoolsAndFilesAreReadDirectly) {
  MakeChain();
  std::string disk =
      "    <disk type='volume' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n"
      "      <source pool='p' volume='top.qcow2'/>\n      <target dev='vda' bus='virtio'/>\n"
      "    </disk>\n"
      "    <disk type='volume' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n"
      "      <source pool='nopool' volume='x.qcow2'/>\n      <target dev='vdb' bus='virtio'/>\n"
      "    </disk>\n";
  Put(etc_, "vm1.xml", Domain("vm1", disk));
  ASSERT_TRUE(MountDomains());
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/type")), "volume\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/source")), "p/top.qcow2\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/problems")), "");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/0/path")), P("top.qcow2") + "\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vda/chain/2/path")), P("base.raw") + "\n");
  EXPECT_EQ(ReadFile(M(".domains/vm1/vdb/problems")),
            "0: Storage pool not found: no storage pool with matching name 'nopool' -- fix: "
            "define the pool and volume, or point the disk at a file\n");
  // chainctl reads a definition file directly, as shut off.
  EXPECT_EQ(Ctl({"domain", etc_ + "/vm1.xml", "vda", "--xml"}),
            ReadFile(M(".domains/vm1/vda/disk.xml")));
  EXPECT_EQ(ReadFile(M("p/mid.qcow2/users")), "vm1/vda\np/top.qcow2\n");
}

TEST_F(MountDomainsTest, BadDefinitionsAreSkippedAndLogged) {
  MakeChain();
  Put(etc_, "good.xml", Domain("good", FileDisk("vda", P("top.qcow2"), "qcow2")));
  Put(etc_, "bad.xml", "<domain type='qemu'><name>bad</name><devices><disk");
  Put(etc_, "noname.xml", "<domain type='qemu'/>");
  Put(etc_, "slash.xml", "<domain type='qemu'><name>a/b</name></domain>");
  ASSERT_TRUE(MountDomains());
  std::string listing = MustRun({"ls", "-1", M(".domains")}).out;
  EXPECT_EQ(listing, "good\n");
  std::string log = Log();
  EXPECT_NE(log.find("bad.xml: not well-formed XML"), std::string::npos) << log;
  EXPECT_NE(log.find("noname.xml: missing domain <name> element"), std::string::npos) << log;
  EXPECT_EQ(ReadFile(M(".domains/good/vda/problems")), "");
}

}  // namespace
}  // namespace chainfs::mounttest
