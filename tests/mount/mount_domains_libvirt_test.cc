// MOUNT/.domains over a real libvirtd 9.0 (DESIGN section 8, issue 10):
// virsh define, start, destroy and undefine while mounted, each seen on the
// next access; the running domain's disk.xml holds the chain of virsh
// dumpxml; VOL/users and the rmdir/mv refusals with a defined and a running
// domain. Needs root, libvirt-daemon-system and qemu-system-x86 (skipped
// otherwise; failed with CHAINFS_REQUIRE_LIBVIRT=1).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <pugixml.hpp>

#include "mount/mount_fixture.h"
#include "util/dir_fingerprint.h"
#include "util/libvirt_daemon.h"

namespace chainfs::mounttest {
namespace {

using testutil::LibvirtDaemon;

constexpr const char* kName = "chainfs-mdl-vm";

// "type format source index" per element of the <disk> of `target` in a
// document holding disks, then "end" when the chain is closed.
std::vector<std::string> Flatten(const std::string& xml, const std::string& target) {
  pugi::xml_document doc;
  std::vector<std::string> out;
  if (!doc.load_string(xml.c_str())) return {"unparsable"};
  for (pugi::xpath_node n : doc.select_nodes("//disk")) {
    pugi::xml_node disk = n.node();
    if (target != disk.child("target").attribute("dev").value()) continue;
    pugi::xml_node source = disk.child("source");
    out.push_back(std::string(disk.attribute("type").value()) + " " +
                  disk.child("driver").attribute("type").value() + " " +
                  source.attribute("file").value() + " " + source.attribute("index").value());
    for (pugi::xml_node b = disk.child("backingStore"); b; b = b.child("backingStore")) {
      if (!b.attribute("type")) {
        out.push_back("end");
        break;
      }
      out.push_back(std::string(b.attribute("type").value()) + " " +
                    b.child("format").attribute("type").value() + " " +
                    b.child("source").attribute("file").value() + " " +
                    b.attribute("index").value());
    }
  }
  return out;
}

class MountDomainsLibvirtTest : public MountTest {
 protected:
  // Expects `path` to read `expected` within a few seconds (the inotify
  // watcher drops what the kernel kept; the daemon answers exactly at once).
  void ExpectSoon(const std::string& path, const std::string& expected) {
    std::string got;
    for (int i = 0; i < 500; ++i) {
      got = ReadFile(path, false);
      if (got == expected) return;
      ::usleep(10000);
    }
    EXPECT_EQ(got, expected) << path;
  }
  static void SetUpTestSuite() { daemon_ = LibvirtDaemon::Start(); }
  static void TearDownTestSuite() { daemon_.reset(); }
  void SetUp() override {
    CHAINFS_REQUIRE_LIBVIRT(daemon_);
    MountTest::SetUp();
  }
  static std::string DomainXml(const std::string& top) {
    return std::string("<domain type='qemu'><name>") + kName +
           "</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
           "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
           "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" +
           top + "'/><target dev='vda' bus='virtio'/></disk></devices></domain>\n";
  }
  static inline std::unique_ptr<LibvirtDaemon> daemon_;
};

TEST_F(MountDomainsLibvirtTest, DefineStartDestroyUndefineAreSeenOnTheNextAccess) {
  MakeChain();
  ASSERT_TRUE(MountPool({"--domain-dir", "/etc/libvirt/qemu",
                         "--run-dir", "/run/libvirt/qemu"}));
  const std::string dom = M(std::string(".domains/") + kName);
  struct stat st;
  EXPECT_NE(::stat(dom.c_str(), &st), 0);

  testutil::RunResult def = daemon_->Define(DomainXml(P("top.qcow2")));
  ASSERT_EQ(def.exit_code, 0) << def.err;
  EXPECT_EQ(ReadFile(dom + "/state"), "shut off\n");
  EXPECT_EQ(ReadFile(dom + "/vda/problems"), "");
  EXPECT_EQ(ReadFile(M("p/base.raw/users")),
            std::string(kName) + "/vda\np/mid.qcow2\np/top.qcow2\n");
  std::map<std::string, std::string> before = testutil::DirectoryFingerprint(pool_);
  EXPECT_NE(::rmdir(M("p/base.raw").c_str()), 0);
  EXPECT_EQ(errno, EBUSY);

  testutil::RunResult start = daemon_->StartDomain(kName);
  ASSERT_EQ(start.exit_code, 0) << start.err << daemon_->LibvirtdLogTail();
  ExpectSoon(dom + "/state", "running\n");
  testutil::RunResult dump = daemon_->DumpXml(kName);
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::vector<std::string> live = Flatten(dump.out, "vda");
  ASSERT_EQ(live.size(), 4u) << dump.out;  // top, mid, base, end
  EXPECT_EQ(Flatten(ReadFile(dom + "/vda/disk.xml"), "vda"), live) << dump.out;
  EXPECT_EQ(ReadFile(dom + "/vda/problems"), "");
  // A running domain: mv is refused as well; nothing changed on disk.
  EXPECT_NE(::rename(M("p/mid.qcow2").c_str(), M("p/mid2.qcow2").c_str()), 0);
  EXPECT_EQ(errno, EBUSY);

  testutil::RunResult destroy = daemon_->Destroy(kName);
  ASSERT_EQ(destroy.exit_code, 0) << destroy.err;
  ExpectSoon(dom + "/state", "shut off\n");
  testutil::RunResult undef = daemon_->Undefine(kName);
  ASSERT_EQ(undef.exit_code, 0) << undef.err;
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = ::stat(dom.c_str(), &st) != 0 && errno == ENOENT;
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone);
  // libvirt chowned the images while the domain ran (DAC); their bytes are
  // what they were.
  std::map<std::string, std::string> after = testutil::DirectoryFingerprint(pool_);
  EXPECT_EQ(after, before);
}

}  // namespace
}  // namespace chainfs::mounttest
