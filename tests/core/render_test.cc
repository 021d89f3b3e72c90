// Renderers on hand-built chains: exact text of every document.
#include "core/render/render.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "core/render/render_util.h"

namespace chainfs::core {
namespace {

FileStat MakeStat(uint64_t size, uint64_t allocation, uint32_t mode = S_IFREG | 0644) {
  FileStat st;
  st.id.size = size;
  st.allocation = allocation;
  st.mode = mode;
  st.uid = 107;
  st.gid = 108;
  st.atime = {1700000000, 123456789};
  st.mtime = {1700000001, 0};
  st.ctime = {1700000002, 5};
  return st;
}

Json Qcow2Specific(bool lazy) {
  Json data = Json::MakeObject();
  data.Set("compat", "1.1");
  data.Set("compression-type", "zlib");
  data.Set("lazy-refcounts", lazy);
  data.Set("refcount-bits", 16);
  data.Set("corrupt", false);
  data.Set("extended-l2", false);
  Json fs = Json::MakeObject();
  fs.Set("type", "qcow2");
  fs.Set("data", data);
  return fs;
}

std::shared_ptr<const ImageMeta> Qcow2Meta(uint64_t size, std::optional<std::string> backing,
                                           std::optional<std::string> backing_format,
                                           bool lazy = false) {
  auto m = std::make_shared<ImageMeta>();
  m->format = "qcow2";
  m->virtual_size = size;
  m->cluster_size = 65536;
  m->backing = std::move(backing);
  m->backing_format = std::move(backing_format);
  m->compat = "1.1";
  if (lazy) m->features.push_back("lazy_refcounts");
  m->format_specific = Qcow2Specific(lazy);
  return m;
}

std::shared_ptr<const ImageMeta> RawMeta(uint64_t size) {
  auto m = std::make_shared<ImageMeta>();
  m->format = "raw";
  m->virtual_size = size;
  return m;
}

BackingRef LocalRef(const std::string& raw, const std::string& resolved) {
  BackingRef ref;
  ref.kind = raw[0] == '/' ? BackingKind::kAbsolute : BackingKind::kRelative;
  ref.raw = raw;
  ref.resolved_path = resolved;
  return ref;
}

// top.qcow2 (1.5 GiB, lazy refcounts) -> mid.qcow2 (absolute) -> base.raw (relative).
Chain HealthyChain() {
  Chain c;
  ChainElement top;
  top.index = 0;
  top.path = "/pool/top.qcow2";
  top.format = "qcow2";
  top.stat = MakeStat(262144, 200704);
  top.meta = Qcow2Meta(1610612736, "/pool/mid.qcow2", "qcow2", true);
  ChainElement mid;
  mid.index = 1;
  mid.path = "/pool/mid.qcow2";
  mid.backing_string = "/pool/mid.qcow2";
  mid.ref = LocalRef("/pool/mid.qcow2", "/pool/mid.qcow2");
  mid.format = "qcow2";
  mid.format_source = FormatSource::kMetadata;
  mid.stat = MakeStat(196616, 200704);
  mid.meta = Qcow2Meta(1073741824, "base.raw", "raw");
  ChainElement base;
  base.index = 2;
  base.path = "/pool/base.raw";
  base.backing_string = "base.raw";
  base.ref = LocalRef("base.raw", "/pool/base.raw");
  base.format = "raw";
  base.format_source = FormatSource::kMetadata;
  base.stat = MakeStat(1073741824, 4096);
  base.meta = RawMeta(1073741824);
  c.elements = {top, mid, base};
  c.complete = true;
  return c;
}

// top.qcow2 records "base.img" with no format; base.img has a backing of
// its own, so the chain stops there with libvirt's message.
Chain ChainWithProblem() {
  Chain c;
  ChainElement top;
  top.path = "/pool/top.qcow2";
  top.format = "qcow2";
  top.stat = MakeStat(196616, 200704);
  top.meta = Qcow2Meta(1048576, "base.img", std::nullopt);
  ChainElement base;
  base.index = 1;
  base.path = "/pool/base.img";
  base.backing_string = "base.img";
  base.ref = LocalRef("base.img", "/pool/base.img");
  c.elements = {top, base};
  c.problems.push_back(
      {1, ProblemKind::kMissingBackingFormat,
       "format of backing image 'base.img' of image '/pool/top.qcow2' was not specified in the "
       "image metadata",
       "echo FMT > pool/top.qcow2/backing_format"});
  c.problems.push_back({1, ProblemKind::kHeader, "an extra note", ""});
  return c;
}

// top.qcow2 -> nbd://nbd.example.com:10809/export (raw), never opened.
Chain NetworkChain() {
  Chain c;
  ChainElement top;
  top.path = "/pool/net.qcow2";
  top.format = "qcow2";
  top.stat = MakeStat(196616, 200704);
  top.meta = Qcow2Meta(1048576, "nbd://nbd.example.com:10809/export", "raw");
  ChainElement net;
  net.index = 1;
  net.path = "nbd://nbd.example.com:10809/export";
  net.backing_string = net.path;
  net.network = true;
  net.format = "raw";
  net.format_source = FormatSource::kMetadata;
  BackingRef ref;
  ref.kind = BackingKind::kUri;
  ref.raw = net.path;
  NetworkSource ns;
  ns.protocol = "nbd";
  ns.host = "nbd.example.com";
  ns.port = "10809";
  ns.name = "export";
  ref.network = ns;
  net.ref = ref;
  c.elements = {top, net};
  c.complete = true;
  return c;
}

TEST(FormatSize, MatchesQemuImgHumanSizes) {
  using render_internal::FormatSize;
  EXPECT_EQ(FormatSize(0), "0 B");
  EXPECT_EQ(FormatSize(999), "999 B");
  EXPECT_EQ(FormatSize(1000), "0.977 KiB");
  EXPECT_EQ(FormatSize(1536), "1.5 KiB");
  EXPECT_EQ(FormatSize(4096), "4 KiB");
  EXPECT_EQ(FormatSize(200704), "196 KiB");
  EXPECT_EQ(FormatSize(1600000), "1.53 MiB");
  EXPECT_EQ(FormatSize(2297856), "2.19 MiB");
  EXPECT_EQ(FormatSize(1073741824), "1 GiB");
  EXPECT_EQ(FormatSize(1610612736), "1.5 GiB");
  EXPECT_EQ(FormatSize(123456789504ull), "115 GiB");
  EXPECT_EQ(FormatSize(UINT64_MAX), "16 EiB");
}

TEST(RenderInfoText, PrintsEveryElementLikeQemuImgBackingChain) {
  const std::string expected =
      "image: /pool/top.qcow2\n"
      "file format: qcow2\n"
      "virtual size: 1.5 GiB (1610612736 bytes)\n"
      "disk size: 196 KiB\n"
      "cluster_size: 65536\n"
      "backing file: /pool/mid.qcow2\n"
      "backing file format: qcow2\n"
      "Format specific information:\n"
      "    compat: 1.1\n"
      "    compression type: zlib\n"
      "    lazy refcounts: true\n"
      "    refcount bits: 16\n"
      "    corrupt: false\n"
      "    extended l2: false\n"
      "\n"
      "image: /pool/mid.qcow2\n"
      "file format: qcow2\n"
      "virtual size: 1 GiB (1073741824 bytes)\n"
      "disk size: 196 KiB\n"
      "cluster_size: 65536\n"
      "backing file: base.raw (actual path: /pool/base.raw)\n"
      "backing file format: raw\n"
      "Format specific information:\n"
      "    compat: 1.1\n"
      "    compression type: zlib\n"
      "    lazy refcounts: false\n"
      "    refcount bits: 16\n"
      "    corrupt: false\n"
      "    extended l2: false\n"
      "\n"
      "image: /pool/base.raw\n"
      "file format: raw\n"
      "virtual size: 1 GiB (1073741824 bytes)\n"
      "disk size: 4 KiB\n";
  EXPECT_EQ(RenderInfoText(HealthyChain()), expected);
}

TEST(RenderInfoText, DumpsNestedFormatSpecificListsWithIndices) {
  Chain c = HealthyChain();
  c.elements.resize(1);
  auto meta = std::make_shared<ImageMeta>(*c.elements[0].meta);
  meta->backing.reset();
  meta->backing_format.reset();
  meta->encrypted = true;
  meta->dirty = true;
  Json slot = Json::MakeObject();
  slot.Set("active", true);
  slot.Set("key-offset", 4096);
  Json data = Json::MakeObject();
  data.Set("format", "luks");
  data.Set("slots", Json::Array{slot, Json(7)});
  Json fs = Json::MakeObject();
  fs.Set("type", "qcow2");
  Json outer = Json::MakeObject();
  outer.Set("encrypt", data);
  fs.Set("data", outer);
  meta->format_specific = fs;
  c.elements[0].meta = meta;
  const std::string expected =
      "image: /pool/top.qcow2\n"
      "file format: qcow2\n"
      "virtual size: 1.5 GiB (1610612736 bytes)\n"
      "disk size: 196 KiB\n"
      "encrypted: yes\n"
      "cluster_size: 65536\n"
      "cleanly shut down: no\n"
      "Format specific information:\n"
      "    encrypt:\n"
      "        format: luks\n"
      "        slots:\n"
      "            [0]:\n"
      "                active: true\n"
      "                key offset: 4096\n"
      "            [1]: 7\n";
  EXPECT_EQ(RenderInfoText(c), expected);
}

TEST(RenderInfoText, ShowsWhatIsKnownOfUnopenedElementAndThenProblems) {
  Chain c = ChainWithProblem();
  std::string text = RenderInfoText(c);
  EXPECT_NE(text.find("backing file: base.img (actual path: /pool/base.img)\n"
                      "Format specific information:\n"),
            std::string::npos)
      << text;
  const std::string tail =
      "\n"
      "image: /pool/base.img\n"
      "\n"
      "Problems:\n"
      "1: format of backing image 'base.img' of image '/pool/top.qcow2' was not specified in "
      "the image metadata -- fix: echo FMT > pool/top.qcow2/backing_format\n"
      "1: an extra note\n";
  ASSERT_GE(text.size(), tail.size());
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
  EXPECT_EQ(text.find("backing file format"), std::string::npos);
}

TEST(RenderInfoText, NetworkElementShowsRawStringAndRecordedFormat) {
  std::string text = RenderInfoText(NetworkChain());
  EXPECT_NE(text.find("backing file: nbd://nbd.example.com:10809/export\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\n\nimage: nbd://nbd.example.com:10809/export\nfile format: raw\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("actual path"), std::string::npos);
}

TEST(RenderProblems, IsEmptyWhenHealthyAndOneLinePerProblem) {
  EXPECT_EQ(RenderProblems(HealthyChain()), "");
  EXPECT_EQ(RenderProblems(ChainWithProblem()),
            "1: format of backing image 'base.img' of image '/pool/top.qcow2' was not "
            "specified in the image metadata -- fix: echo FMT > pool/top.qcow2/backing_format\n"
            "1: an extra note\n");
}

TEST(InfoJson, UsesQemuImgKeysInQemuImgOrder) {
  Json j = InfoJson(HealthyChain());
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.as_array().size(), 3u);
  const Json& top = j.as_array()[0];
  std::vector<std::string> keys;
  for (const auto& [k, v] : top.as_object()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"backing-filename-format", "virtual-size", "filename",
                                            "cluster-size", "format", "actual-size",
                                            "format-specific", "full-backing-filename",
                                            "backing-filename", "dirty-flag"}));
  EXPECT_EQ(top.Find("virtual-size")->as_uint(), 1610612736u);
  EXPECT_EQ(top.Find("actual-size")->as_uint(), 200704u);
  EXPECT_EQ(top.Find("filename")->as_string(), "/pool/top.qcow2");
  EXPECT_EQ(top.Find("dirty-flag")->as_bool(), false);
  EXPECT_EQ(*top.Find("format-specific"), Qcow2Specific(true));
  const Json& mid = j.as_array()[1];
  EXPECT_EQ(mid.Find("backing-filename")->as_string(), "base.raw");
  EXPECT_EQ(mid.Find("full-backing-filename")->as_string(), "/pool/base.raw");
  const Json& base = j.as_array()[2];
  EXPECT_EQ(base.Find("backing-filename"), nullptr);
  EXPECT_EQ(base.Find("cluster-size"), nullptr);
  EXPECT_EQ(base.Find("format-specific"), nullptr);
  EXPECT_EQ(base.Find("encrypted"), nullptr);
  EXPECT_EQ(base.Find("format")->as_string(), "raw");
}

TEST(InfoJson, LeavesOutUnopenedElementsAndMarksEncryption) {
  Chain c = ChainWithProblem();
  auto meta = std::make_shared<ImageMeta>(*c.elements[0].meta);
  meta->encrypted = true;
  c.elements[0].meta = meta;
  Json j = InfoJson(c);
  ASSERT_EQ(j.as_array().size(), 1u);
  const Json& top = j.as_array()[0];
  EXPECT_EQ(top.Find("backing-filename-format"), nullptr);
  EXPECT_EQ(top.Find("full-backing-filename")->as_string(), "/pool/base.img");
  ASSERT_NE(top.Find("encrypted"), nullptr);
  EXPECT_TRUE(top.Find("encrypted")->as_bool());
  // "encrypted" sits between full-backing-filename and backing-filename, as in qemu-img.
  const auto& obj = top.as_object();
  size_t enc = 0, full = 0, back = 0;
  for (size_t i = 0; i < obj.size(); ++i) {
    if (obj[i].first == "encrypted") enc = i;
    if (obj[i].first == "full-backing-filename") full = i;
    if (obj[i].first == "backing-filename") back = i;
  }
  EXPECT_LT(full, enc);
  EXPECT_LT(enc, back);
}

TEST(InfoJson, ResolvesFullBackingFilenameWhenChainStoppedBeforeTheBacking) {
  Chain c = ChainWithProblem();
  c.elements.resize(1);
  Json j = InfoJson(c);
  EXPECT_EQ(j.as_array()[0].Find("full-backing-filename")->as_string(), "/pool/base.img");
}

TEST(RenderInfoJson, IndentsByFourAndEndsWithNewline) {
  std::string text = RenderInfoJson(HealthyChain());
  EXPECT_EQ(text.rfind("[\n    {\n        \"backing-filename-format\": \"qcow2\",\n", 0), 0u) << text;
  EXPECT_EQ(text.back(), '\n');
  Result<Json> parsed = Json::Parse(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, InfoJson(HealthyChain()));
  EXPECT_EQ(RenderInfoJson(Chain{}), "[]\n");
}

TEST(RenderChainList, OneLinePerElementWithQuestionMarkForUnknownFormat) {
  EXPECT_EQ(RenderChainList(HealthyChain()),
            "0 qcow2 /pool/top.qcow2\n1 qcow2 /pool/mid.qcow2\n2 raw /pool/base.raw\n");
  EXPECT_EQ(RenderChainList(ChainWithProblem()), "0 qcow2 /pool/top.qcow2\n1 ? /pool/base.img\n");
}

TEST(RenderElementField, GivesOneValueWithNewlineOrEmpty) {
  Chain c = HealthyChain();
  const ChainElement& mid = c.elements[1];
  EXPECT_EQ(RenderElementField(mid, "format"), "qcow2\n");
  EXPECT_EQ(RenderElementField(mid, "backing"), "base.raw\n");
  EXPECT_EQ(RenderElementField(mid, "backing_format"), "raw\n");
  EXPECT_EQ(RenderElementField(mid, "capacity"), "1073741824\n");
  EXPECT_EQ(RenderElementField(mid, "allocation"), "200704\n");
  EXPECT_EQ(RenderElementField(mid, "path"), "/pool/mid.qcow2\n");
  EXPECT_EQ(RenderElementField(mid, "nonsense"), "");
  const ChainElement& base = c.elements[2];
  EXPECT_EQ(RenderElementField(base, "backing"), "");
  EXPECT_EQ(RenderElementField(base, "backing_format"), "");
  Chain p = ChainWithProblem();
  EXPECT_EQ(RenderElementField(p.elements[0], "backing"), "base.img\n");
  EXPECT_EQ(RenderElementField(p.elements[0], "backing_format"), "");
  EXPECT_EQ(RenderElementField(p.elements[1], "format"), "");
  EXPECT_EQ(RenderElementField(p.elements[1], "capacity"), "");
  EXPECT_EQ(RenderElementField(p.elements[1], "allocation"), "");
  EXPECT_EQ(RenderElementField(p.elements[1], "path"), "/pool/base.img\n");
}

TEST(RenderVolumeXml, MatchesVirshVolDumpxmlLayout) {
  const std::string expected =
      "<volume type='file'>\n"
      "  <name>mid.qcow2</name>\n"
      "  <key>/pool/mid.qcow2</key>\n"
      "  <capacity unit='bytes'>1073741824</capacity>\n"
      "  <allocation unit='bytes'>200704</allocation>\n"
      "  <physical unit='bytes'>196616</physical>\n"
      "  <target>\n"
      "    <path>/pool/mid.qcow2</path>\n"
      "    <format type='qcow2'/>\n"
      "    <permissions>\n"
      "      <mode>0644</mode>\n"
      "      <owner>107</owner>\n"
      "      <group>108</group>\n"
      "    </permissions>\n"
      "    <timestamps>\n"
      "      <mtime>1700000001</mtime>\n"
      "      <ctime>1700000002.000000005</ctime>\n"
      "      <btime>0</btime>\n"
      "    </timestamps>\n"
      "    <compat>1.1</compat>\n"
      "    <clusterSize unit='B'>65536</clusterSize>\n"
      "    <features/>\n"
      "  </target>\n"
      "  <backingStore>\n"
      "    <path>/pool/base.raw</path>\n"
      "    <format type='raw'/>\n"
      "    <permissions>\n"
      "      <mode>0644</mode>\n"
      "      <owner>107</owner>\n"
      "      <group>108</group>\n"
      "    </permissions>\n"
      "    <timestamps>\n"
      "      <mtime>1700000001</mtime>\n"
      "      <ctime>1700000002.000000005</ctime>\n"
      "      <btime>0</btime>\n"
      "    </timestamps>\n"
      "  </backingStore>\n"
      "</volume>\n";
  Chain c = HealthyChain();
  c.elements.erase(c.elements.begin());
  EXPECT_EQ(RenderVolumeXml(c), expected);
}

TEST(RenderVolumeXml, ListsLazyRefcountsAndOmitsBackingStoreForBase) {
  std::string top = RenderVolumeXml(HealthyChain());
  EXPECT_NE(top.find("    <features>\n      <lazy_refcounts/>\n    </features>\n"),
            std::string::npos)
      << top;
  Chain c = HealthyChain();
  c.elements.erase(c.elements.begin(), c.elements.begin() + 2);
  std::string base = RenderVolumeXml(c);
  EXPECT_EQ(base.find("backingStore"), std::string::npos);
  EXPECT_EQ(base.find("compat"), std::string::npos);
  EXPECT_EQ(base.find("clusterSize"), std::string::npos);
  EXPECT_NE(base.find("<format type='raw'/>"), std::string::npos);
}

TEST(RenderVolumeXml, BackingWithoutRecordedFormatHasNoFormatElement) {
  std::string xml = RenderVolumeXml(ChainWithProblem());
  EXPECT_NE(xml.find("  <backingStore>\n    <path>/pool/base.img</path>\n  </backingStore>\n"),
            std::string::npos)
      << xml;
}

TEST(RenderVolumeXml, EscapesNamesAndMarksBlockDevices) {
  Chain c = HealthyChain();
  c.elements.resize(1);
  c.elements[0].path = "/pool/a&b<c>.qcow2";
  c.elements[0].stat->mode = S_IFBLK | 0660;
  std::string xml = RenderVolumeXml(c);
  EXPECT_EQ(xml.substr(0, 22), "<volume type='block'>\n");
  EXPECT_NE(xml.find("<name>a&amp;b&lt;c&gt;.qcow2</name>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<mode>0660</mode>"), std::string::npos);
}

TEST(RenderVolumeXml, LeavesNetworkBackingToDiskXml) {
  std::string xml = RenderVolumeXml(NetworkChain());
  EXPECT_EQ(xml.find("backingStore"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<key>/pool/net.qcow2</key>"), std::string::npos) << xml;
}

TEST(RenderInfoText, ElementWithUnparsableHeaderShowsFormatAndDiskSize) {
  Chain c;
  ChainElement e;
  e.path = "/pool/junk.qcow2";
  e.format = "qcow2";
  e.stat = MakeStat(512, 4096);
  c.elements.push_back(e);
  c.problems.push_back({0, ProblemKind::kCorruptHeader, "qcow2 header: cluster_bits 99 out of range", ""});
  EXPECT_EQ(RenderInfoText(c),
            "image: /pool/junk.qcow2\n"
            "file format: qcow2\n"
            "disk size: 4 KiB\n"
            "\n"
            "Problems:\n"
            "0: qcow2 header: cluster_bits 99 out of range\n");
  EXPECT_EQ(InfoJson(c).as_array().size(), 0u);
  EXPECT_EQ(RenderDiskXml(c).find("backingStore"), std::string::npos);
}

TEST(RenderDiskXml, NestsBackingStoresAndClosesCompleteChain) {
  const std::string expected =
      "<disk type='file' device='disk'>\n"
      "  <driver name='qemu' type='qcow2'/>\n"
      "  <source file='/pool/top.qcow2'/>\n"
      "  <backingStore type='file' index='1'>\n"
      "    <format type='qcow2'/>\n"
      "    <source file='/pool/mid.qcow2'/>\n"
      "    <backingStore type='file' index='2'>\n"
      "      <format type='raw'/>\n"
      "      <source file='/pool/base.raw'/>\n"
      "      <backingStore/>\n"
      "    </backingStore>\n"
      "  </backingStore>\n"
      "  <target dev='vda' bus='virtio'/>\n"
      "</disk>\n";
  EXPECT_EQ(RenderDiskXml(HealthyChain()), expected);
}

TEST(RenderDiskXml, IncompleteChainHasNoClosingBackingStore) {
  Chain c = HealthyChain();
  c.complete = false;
  std::string xml = RenderDiskXml(c);
  EXPECT_EQ(xml.find("<backingStore/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("index='2'"), std::string::npos);
}

TEST(RenderDiskXml, StopsAtElementWhoseFormatIsUnknown) {
  std::string xml = RenderDiskXml(ChainWithProblem());
  EXPECT_EQ(xml,
            "<disk type='file' device='disk'>\n"
            "  <driver name='qemu' type='qcow2'/>\n"
            "  <source file='/pool/top.qcow2'/>\n"
            "  <target dev='vda' bus='virtio'/>\n"
            "</disk>\n");
}

TEST(RenderDiskXml, SpellsOutNetworkSourcesWithHost) {
  std::string xml = RenderDiskXml(NetworkChain());
  EXPECT_NE(xml.find("  <backingStore type='network' index='1'>\n"
                     "    <format type='raw'/>\n"
                     "    <source protocol='nbd' name='export'>\n"
                     "      <host name='nbd.example.com' port='10809'/>\n"
                     "    </source>\n"
                     "    <backingStore/>\n"
                     "  </backingStore>\n"),
            std::string::npos)
      << xml;
  Chain unix_chain = NetworkChain();
  NetworkSource& ns = *unix_chain.elements[1].ref->network;
  ns.host.clear();
  ns.port.clear();
  ns.name.clear();
  ns.transport = "unix";
  ns.socket = "/run/nbd.sock";
  xml = RenderDiskXml(unix_chain);
  EXPECT_NE(xml.find("<source protocol='nbd'>\n"
                     "      <host transport='unix' socket='/run/nbd.sock'/>\n"),
            std::string::npos)
      << xml;
}

TEST(RenderDiskXml, UsesBlockTypeForBlockDevicesAndStopsAtUnknownProtocol) {
  Chain c = NetworkChain();
  c.elements[0].stat->mode = S_IFBLK | 0660;
  c.elements[1].ref->network->protocol = "ssh";
  std::string xml = RenderDiskXml(c);
  EXPECT_NE(xml.find("<disk type='block' device='disk'>\n"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<source dev='/pool/net.qcow2'/>"), std::string::npos) << xml;
  EXPECT_EQ(xml.find("backingStore"), std::string::npos) << xml;
}

TEST(SaveXml, KeepsAttributeTextThatLooksLikeATagEnd) {
  pugi::xml_document doc;
  pugi::xml_node n = doc.append_child("a");
  n.append_attribute("v") = "x />\ny";
  n.append_child("b");
  // Issue 9: a newline, which libvirt's schemas refuse in values, becomes U+FFFD.
  EXPECT_EQ(render_internal::SaveXml(doc), "<a v='x />\xEF\xBF\xBDy'>\n  <b/>\n</a>\n");
}

TEST(RenderPoolXml, MatchesVirshPoolDumpxmlForDirPool) {
  PoolDef pool;
  pool.name = "default";
  pool.type = "dir";
  pool.uuid = "7f8fb5c9-7b5b-4b3a-9d3d-7a0d5f0a1b2c";
  pool.target_path = "/";
  PoolSpace space{1000000, 250000};
  struct stat st;
  ASSERT_EQ(::stat("/", &st), 0);
  const std::string expected = fmt::format(
      "<pool type='dir'>\n"
      "  <name>default</name>\n"
      "  <uuid>7f8fb5c9-7b5b-4b3a-9d3d-7a0d5f0a1b2c</uuid>\n"
      "  <capacity unit='bytes'>1000000</capacity>\n"
      "  <allocation unit='bytes'>750000</allocation>\n"
      "  <available unit='bytes'>250000</available>\n"
      "  <source>\n"
      "  </source>\n"
      "  <target>\n"
      "    <path>/</path>\n"
      "    <permissions>\n"
      "      <mode>0{:o}</mode>\n"
      "      <owner>{}</owner>\n"
      "      <group>{}</group>\n"
      "    </permissions>\n"
      "  </target>\n"
      "</pool>\n",
      st.st_mode & 07777, st.st_uid, st.st_gid);
  EXPECT_EQ(RenderPoolXml(pool, space), expected);
}

TEST(RenderPoolXml, ReemitsSourceAndDerivesStableUuid) {
  PoolDef pool;
  pool.name = "nfs";
  pool.type = "netfs";
  pool.target_path = "/nonexistent/chainfs/pool";
  pool.source_xml = "<source><host name='filer'/><dir path='/export'/><format type='nfs'/></source>";
  std::string xml = RenderPoolXml(pool, {});
  EXPECT_NE(xml.find("  <source>\n"
                     "    <host name='filer'/>\n"
                     "    <dir path='/export'/>\n"
                     "    <format type='nfs'/>\n"
                     "  </source>\n"),
            std::string::npos)
      << xml;
  EXPECT_EQ(xml.find("permissions"), std::string::npos);
  size_t at = xml.find("<uuid>");
  ASSERT_NE(at, std::string::npos);
  std::string uuid = xml.substr(at + 6, 36);
  EXPECT_EQ(uuid[8], '-');
  EXPECT_EQ(uuid[14], '8');
  EXPECT_EQ(RenderPoolXml(pool, {}), xml);
  PoolDef other = pool;
  other.name = "nfs2";
  EXPECT_EQ(RenderPoolXml(other, {}).find(uuid), std::string::npos);
}

TEST(StatPoolSpace, ReadsFilesystemSizesAndZerosOnError) {
  PoolDef pool;
  pool.target_path = "/";
  PoolSpace space = StatPoolSpace(pool);
  EXPECT_GT(space.capacity, 0u);
  EXPECT_LE(space.available, space.capacity);
  pool.target_path = "/nonexistent/chainfs";
  space = StatPoolSpace(pool);
  EXPECT_EQ(space.capacity, 0u);
  EXPECT_EQ(space.available, 0u);
}

}  // namespace
}  // namespace chainfs::core
