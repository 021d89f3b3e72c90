// volume.xml as libvirt 9.0's vol-dumpxml prints it (issue 10): no <compat>
// for a qcow2 v2 image, <btime> at the end of <timestamps>, and a pool's
// subdirectory as a volume of type 'dir'; plus the pool scan that lists it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>

#include "core/pool/pool_def.h"
#include "core/pool/pool_scan.h"
#include "core/render/render.h"
#include "util/run.h"

namespace chainfs::core {
namespace {

using testutil::ScopedTempDir;

FileStat StatOf(uint32_t mode, uint64_t size, uint64_t allocation) {
  FileStat st;
  st.id.dev = 42;
  st.id.ino = 7;
  st.id.size = size;
  st.mode = mode;
  st.uid = 107;
  st.gid = 108;
  st.allocation = allocation;
  st.atime = {1700000000, 123456789};
  st.mtime = {1700000001, 0};
  st.ctime = {1700000002, 5};
  return st;
}

// A lone qcow2 image with compat `compat` and `features`.
Chain Qcow2Chain(const std::string& compat, std::vector<std::string> features = {}) {
  auto meta = std::make_shared<ImageMeta>();
  meta->format = "qcow2";
  meta->virtual_size = 1048576;
  meta->cluster_size = 65536;
  meta->compat = compat;
  meta->features = std::move(features);
  ChainElement top;
  top.path = "/pool/v.qcow2";
  top.format = "qcow2";
  top.stat = StatOf(S_IFREG | 0644, 196624, 200704);
  top.meta = meta;
  Chain chain;
  chain.elements.push_back(top);
  chain.complete = true;
  return chain;
}

TEST(VolumeFidelity, Qcow2V2HasNoCompatNorFeatures) {
  std::string xml = RenderVolumeXml(Qcow2Chain("0.10"));
  EXPECT_EQ(xml.find("<compat>"), std::string::npos) << xml;
  EXPECT_EQ(xml.find("<features"), std::string::npos) << xml;
  EXPECT_NE(xml.find("    <clusterSize unit='B'>65536</clusterSize>\n"), std::string::npos) << xml;
}

TEST(VolumeFidelity, Qcow2V3KeepsCompatAndFeatures) {
  std::string xml = RenderVolumeXml(Qcow2Chain("1.1", {"lazy_refcounts"}));
  EXPECT_NE(xml.find("    <compat>1.1</compat>\n"
                     "    <clusterSize unit='B'>65536</clusterSize>\n"
                     "    <features>\n"
                     "      <lazy_refcounts/>\n"
                     "    </features>\n"),
            std::string::npos)
      << xml;
  EXPECT_NE(RenderVolumeXml(Qcow2Chain("1.1")).find("<compat>1.1</compat>\n    <clusterSize"),
            std::string::npos);
}

TEST(VolumeFidelity, TimestampsEndWithBtimeZeroAsLibvirtPrintsOnLinux) {
  Chain chain = Qcow2Chain("1.1");
  chain.elements[0].meta = [&] {
    auto m = std::make_shared<ImageMeta>(*chain.elements[0].meta);
    m->backing = "base.raw";
    m->backing_format = "raw";
    return m;
  }();
  auto raw = std::make_shared<ImageMeta>();
  raw->format = "raw";
  raw->virtual_size = 1048576;
  ChainElement base;
  base.index = 1;
  base.path = "/pool/base.raw";
  base.backing_string = "base.raw";
  base.format = "raw";
  base.format_source = FormatSource::kMetadata;
  base.stat = StatOf(S_IFREG | 0600, 1048576, 4096);
  base.stat->mtime = {1600000000, 999};
  base.meta = raw;
  chain.elements.push_back(base);
  std::string xml = RenderVolumeXml(chain);
  const std::string target_times =
      "    <timestamps>\n"
      "      <mtime>1700000001</mtime>\n"
      "      <ctime>1700000002.000000005</ctime>\n"
      "      <btime>0</btime>\n"
      "    </timestamps>\n";
  const std::string backing_times =
      "    <timestamps>\n"
      "      <mtime>1600000000.000000999</mtime>\n"
      "      <ctime>1700000002.000000005</ctime>\n"
      "      <btime>0</btime>\n"
      "    </timestamps>\n"
      "  </backingStore>\n";
  EXPECT_NE(xml.find(target_times), std::string::npos) << xml;
  EXPECT_NE(xml.find(backing_times), std::string::npos) << xml;
  EXPECT_EQ(xml.find("<atime>"), std::string::npos) << xml;  // left out on purpose
}

VolumeEntry MakeDirEntry() {
  VolumeEntry entry;
  entry.name = "isos";
  entry.path = "/pool/isos";
  entry.stat = StatOf(S_IFDIR | 0755, 4096, 4096);
  return entry;
}

TEST(VolumeFidelity, DirectoryVolumeXmlIsLibvirtsTypeDir) {
  const std::string expected =
      "<volume type='dir'>\n"
      "  <name>isos</name>\n"
      "  <key>/pool/isos</key>\n"
      "  <capacity unit='bytes'>0</capacity>\n"
      "  <allocation unit='bytes'>0</allocation>\n"
      "  <target>\n"
      "    <path>/pool/isos</path>\n"
      "    <format type='dir'/>\n"
      "    <permissions>\n"
      "      <mode>0755</mode>\n"
      "      <owner>107</owner>\n"
      "      <group>108</group>\n"
      "    </permissions>\n"
      "    <timestamps>\n"
      "      <mtime>1700000001</mtime>\n"
      "      <ctime>1700000002.000000005</ctime>\n"
      "      <btime>0</btime>\n"
      "    </timestamps>\n"
      "  </target>\n"
      "</volume>\n";
  EXPECT_EQ(RenderVolumeXml(DirVolumeChain(MakeDirEntry())), expected);
}

TEST(VolumeFidelity, DirectoryVolumeFilesSayDirZeroAndNoBacking) {
  Chain chain = DirVolumeChain(MakeDirEntry());
  ASSERT_EQ(chain.elements.size(), 1u);
  EXPECT_TRUE(chain.complete);
  EXPECT_TRUE(chain.healthy());
  const ChainElement& e = chain.elements[0];
  EXPECT_EQ(RenderElementField(e, "format"), "dir\n");
  EXPECT_EQ(RenderElementField(e, "capacity"), "0\n");
  EXPECT_EQ(RenderElementField(e, "allocation"), "0\n");
  EXPECT_EQ(RenderElementField(e, "backing"), "");
  EXPECT_EQ(RenderElementField(e, "backing_format"), "");
  EXPECT_EQ(RenderProblems(chain), "");
  EXPECT_EQ(RenderInfoText(chain),
            "image: /pool/isos\n"
            "file format: dir\n"
            "virtual size: 0 B (0 bytes)\n"
            "disk size: 0 B\n");
  Json info = InfoJson(chain);
  ASSERT_TRUE(info.is_array());
  ASSERT_EQ(info.as_array().size(), 1u);
  const Json& top = info.as_array()[0];
  ASSERT_NE(top.Find("format"), nullptr);
  EXPECT_EQ(top.Find("format")->as_string(), "dir");
  EXPECT_EQ(top.Find("virtual-size")->Dump(), "0");
  EXPECT_EQ(top.Find("filename")->as_string(), "/pool/isos");
  EXPECT_EQ(top.Find("backing-filename"), nullptr);
}

void Touch(const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  out << "x";
  ASSERT_TRUE(out.good()) << path;
}

PoolDef PoolOfType(const std::string& type, const std::string& path) {
  PoolDef pool;
  pool.name = "p";
  pool.type = type;
  pool.target_path = path;
  return pool;
}

TEST(ScanPoolDirectories, SubdirectoriesOfDirFsNetfsPoolsAreDirVolumes) {
  ScopedTempDir dir;
  Touch(dir.Sub("a.img"));
  ASSERT_EQ(::mkdir(dir.Sub("sub").c_str(), 0750), 0);
  Touch(dir.Sub("sub/inner.img"));  // volumes are not recursive
  ASSERT_EQ(::mkdir(dir.Sub(".hidden").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("sub", dir.Sub("link").c_str()), 0);
  for (const char* type : {"dir", "fs", "netfs"}) {
    SCOPED_TRACE(type);
    PoolScan scan = ScanPool(PoolOfType(type, dir.path()));
    ASSERT_TRUE(scan.status.ok()) << scan.status.ToString();
    std::vector<std::string> names;
    std::vector<bool> dirs;
    for (const VolumeEntry& v : scan.volumes) {
      names.push_back(v.name);
      dirs.push_back(v.IsDir());
    }
    EXPECT_EQ(names, (std::vector<std::string>{".hidden", "a.img", "link", "sub"}));
    EXPECT_EQ(dirs, (std::vector<bool>{true, false, true, true}));
    EXPECT_TRUE(scan.skipped.empty());
    EXPECT_EQ(scan.volumes[3].path, dir.Sub("sub"));
    EXPECT_EQ(scan.volumes[3].stat.mode & 07777, 0750u);
  }
}

TEST(ScanPoolDirectories, OtherPoolTypesStillSkipDirectoriesWithAReason) {
  ScopedTempDir dir;
  Touch(dir.Sub("a.img"));
  ASSERT_EQ(::mkdir(dir.Sub("sub").c_str(), 0755), 0);
  PoolScan scan = ScanPool(PoolOfType("logical", dir.path()));
  ASSERT_EQ(scan.volumes.size(), 1u);
  EXPECT_EQ(scan.volumes[0].name, "a.img");
  ASSERT_EQ(scan.skipped.size(), 1u);
  EXPECT_EQ(scan.skipped[0], dir.Sub("sub") + ": a directory (not a volume in this pool type)");
  EXPECT_FALSE(PoolListsDirectories("logical"));
  EXPECT_FALSE(PoolListsDirectories("iscsi"));
  EXPECT_TRUE(PoolListsDirectories("netfs"));
}

}  // namespace
}  // namespace chainfs::core
