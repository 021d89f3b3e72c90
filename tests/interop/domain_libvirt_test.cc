// Domain disks as a real libvirtd 9.0 resolves them (DESIGN section 8, issue 10): a corpus of
// domains over images made by qemu-img is defined once with virsh, then each domain is
// started (qemu TCG). Where libvirt starts it, `chainctl domain D T --xml` must show the same
// chain as `virsh dumpxml` of the running domain: per element its type, format, source,
// index, and the closing <backingStore/>; and again once the domain is shut off. Where
// libvirt refuses, `chainctl domain D T --check` must carry libvirt's message with the same
// paths.
//
// Needs root, libvirt-daemon-system and qemu-system-x86; skipped otherwise (failed with
// CHAINFS_REQUIRE_LIBVIRT=1). Slow: libvirtd probes QEMU at its start and at the first define.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <pugixml.hpp>
#include <string>
#include <vector>

#include "util/libvirt_daemon.h"
#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs {
namespace {

using testutil::LibvirtDaemon;
using testutil::RunResult;

constexpr const char* kDomainDir = "/etc/libvirt/qemu";
constexpr const char* kRunDir = "/run/libvirt/qemu";
constexpr const char* kPrefix = "chainfs-dlt-";

// One element of a disk's chain as libvirt's XML shows it.
struct Element {
  std::string type, format, source, index;
  bool operator==(const Element&) const = default;
};

// A disk's chain: its elements top down and whether it ends with <backingStore/>.
struct Chain {
  std::vector<Element> elements;
  bool terminated = false;
  bool operator==(const Chain&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Chain& c) {
  for (const Element& e : c.elements) {
    os << "[" << e.type << " " << e.format << " " << e.source << " index=" << e.index << "] ";
  }
  return os << (c.terminated ? "<backingStore/>" : "(open)");
}

std::string SourcePath(const pugi::xml_node& source) {
  for (const char* attr : {"file", "dev", "dir", "name"}) {
    if (pugi::xml_attribute a = source.attribute(attr)) return a.value();
  }
  return "";
}

// Flattens one <disk> element into its chain.
Chain ChainOf(const pugi::xml_node& disk) {
  Chain c;
  pugi::xml_node source = disk.child("source");
  c.elements.push_back({disk.attribute("type").value(),
                        disk.child("driver").attribute("type").value(), SourcePath(source),
                        source.attribute("index").value()});
  for (pugi::xml_node b = disk.child("backingStore"); b; b = b.child("backingStore")) {
    if (!b.attribute("type") && !b.child("source")) {
      c.terminated = true;
      break;
    }
    c.elements.push_back({b.attribute("type").value(), b.child("format").attribute("type").value(),
                          SourcePath(b.child("source")), b.attribute("index").value()});
  }
  return c;
}

// Returns the chain of disk `target` in a <domain> document, or nullopt.
std::optional<Chain> DiskChain(const std::string& xml, const std::string& target,
                               std::string* why) {
  pugi::xml_document doc;
  pugi::xml_parse_result parsed = doc.load_string(xml.c_str());
  if (!parsed) {
    *why = std::string("not XML: ") + parsed.description() + "\n" + xml;
    return std::nullopt;
  }
  pugi::xml_node root = doc.document_element();
  if (std::string(root.name()) == "disk") return ChainOf(root);
  if (std::string(root.name()) == "domstatus") root = root.child("domain");
  for (pugi::xml_node disk : root.child("devices").children("disk")) {
    if (target == disk.child("target").attribute("dev").value()) return ChainOf(disk);
  }
  *why = "no disk " + target + " in\n" + xml;
  return std::nullopt;
}

// libvirt's message from virsh's stderr ("error: Failed to start domain 'D'\nerror: MSG\n").
std::string LibvirtMessage(const std::string& err) {
  std::string last;
  size_t pos = 0;
  while (pos < err.size()) {
    size_t end = err.find('\n', pos);
    if (end == std::string::npos) end = err.size();
    std::string line = err.substr(pos, end - pos);
    if (line.rfind("error: ", 0) == 0 && line.find("Failed to start domain") == std::string::npos) {
      last = line.substr(7);
    }
    pos = end + 1;
  }
  // The error class virsh prints first, and what follows the message proper: the uid QEMU
  // runs as (chainfs does not know it) and the kbase link.
  const std::string kClass = "Requested operation is not valid: ";
  if (last.rfind(kClass, 0) == 0) last = last.substr(kClass.size());
  for (const char* tail : {" (as uid:", " (See https://"}) {
    size_t at = last.find(tail);
    if (at != std::string::npos) last = last.substr(0, at);
  }
  return last;
}

// Returns `c` numbered as chainctl numbers a shut-off domain's disk: the top 1, then 2, 3, ...
// (libvirt 9.0's live numbers count across the domain's disks).
Chain NumberedFromOne(Chain c) {
  for (size_t i = 0; i < c.elements.size(); ++i) c.elements[i].index = std::to_string(i + 1);
  return c;
}

// One domain of the corpus.
struct Case {
  Case() = default;
  Case(std::string d, std::vector<std::string> t, bool s = true, std::string m = "")
      : disks(std::move(d)), targets(std::move(t)), starts(s), message(std::move(m)) {}
  std::string disks;                 // the <disk> elements
  std::vector<std::string> targets;  // its disk targets
  bool starts = true;                // what libvirt 9.0 does with it
  std::string message;               // for those refused: libvirt's message, without its error
                                     // class, "(as uid:N, gid:N)" and kbase link
};

class DomainLibvirtTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    daemon_ = LibvirtDaemon::Start();
    if (!daemon_->ready()) return;
    dir_ = LibvirtDaemon::MakeWorldReadableDir();
    MakeImages();
    std::vector<std::string> xmls;
    for (const auto& [name, c] : Corpus()) xmls.push_back(DomainXml(name, c));
    const auto t0 = std::chrono::steady_clock::now();
    define_result_ = daemon_->DefineMany(xmls);
    define_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "libvirtd answered after %.1f s; %zu domains defined in %.2f s\n",
                 daemon_->startup_seconds(), xmls.size(), define_seconds_);
  }

  static void TearDownTestSuite() {
    daemon_.reset();  // destroys and undefines the corpus, stops libvirtd
    for (const std::string& loop : loops_) testutil::Run({"losetup", "-d", loop});
    loops_.clear();
    if (!dir_.empty()) testutil::RemoveTree(dir_);
    dir_.clear();
  }

  void SetUp() override {
    CHAINFS_REQUIRE_LIBVIRT(daemon_);
    ASSERT_FALSE(images_failed_) << images_error_;
    ASSERT_EQ(define_result_.exit_code, 0) << define_result_.err << "\n"
                                           << daemon_->LibvirtdLogTail();
  }

  static std::string P(const std::string& name) { return dir_ + "/" + name; }

  static void Img(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"qemu-img"};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = testutil::Run(argv);
    if (r.exit_code != 0) {
      images_failed_ = true;
      images_error_ += "qemu-img " + args[0] + ": " + r.err;
    }
  }

  static std::string Loop(const std::string& file) {
    RunResult r = testutil::Run({"losetup", "-f", "--show", file});
    std::string dev = r.out.substr(0, r.out.find('\n'));
    if (r.exit_code != 0 || dev.empty()) {
      images_failed_ = true;
      images_error_ += "losetup " + file + ": " + r.err;
      return "/dev/null";
    }
    loops_.push_back(dev);
    return dev;
  }

  static void Strip(const std::string& image) {
    core::Status s = testutil::StripBackingFormat(image);
    if (!s.ok()) {
      images_failed_ = true;
      images_error_ += "StripBackingFormat " + image + ": " + s.ToString();
    }
  }

  static void MakeImages() {
    Img({"create", "-q", "-f", "raw", P("base.raw"), "64M"});
    Img({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("mid.qcow2")});
    Img({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("top.qcow2")});
    Img({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", P("nofmt.qcow2")});
    Strip(P("nofmt.qcow2"));
    Img({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P("nofmt-raw.qcow2")});
    Strip(P("nofmt-raw.qcow2"));
    Img({"create", "-q", "-f", "raw", P("alt-base.raw"), "64M"});
    Img({"create", "-q", "-f", "qcow2", "-b", "alt-base.raw", "-F", "raw", P("alt.qcow2")});
    Img({"create", "-q", "-f", "raw", P("gone.raw"), "64M"});
    Img({"create", "-q", "-f", "qcow2", "-b", P("gone.raw"), "-F", "raw", P("moved.qcow2")});
    testutil::RemoveTree(P("gone.raw"));
    Img({"create", "-q", "-f", "raw", P("gone-deep.raw"), "64M"});
    Img({"create", "-q", "-f", "qcow2", "-b", "gone-deep.raw", "-F", "raw", P("deep-mid.qcow2")});
    Img({"create", "-q", "-f", "qcow2", "-b", "deep-mid.qcow2", "-F", "qcow2",
         P("deep-top.qcow2")});
    testutil::RemoveTree(P("gone-deep.raw"));
    Img({"create", "-q", "-f", "raw", P("base2.raw"), "32M"});
    Img({"create", "-q", "-f", "qcow2", "-b", "base2.raw", "-F", "raw", P("second.qcow2")});
    // 6 deep, relative backing strings across folders.
    testutil::Run({"mkdir", "-p", P("deep/s2/s4")});
    Img({"create", "-q", "-f", "raw", P("deep/l1.raw"), "64M"});
    Img({"create", "-q", "-f", "qcow2", "-b", "../l1.raw", "-F", "raw", P("deep/s2/l2.qcow2")});
    Img({"create", "-q", "-f", "qcow2", "-b", "l2.qcow2", "-F", "qcow2", P("deep/s2/l3.qcow2")});
    Img({"create", "-q", "-f", "qcow2", "-b", "../l3.qcow2", "-F", "qcow2",
         P("deep/s2/s4/l4.qcow2")});
    Img({"create", "-q", "-f", "qcow2", "-b", "s2/s4/l4.qcow2", "-F", "qcow2", P("deep/l5.qcow2")});
    Img({"create", "-q", "-f", "qcow2", "-b", "l5.qcow2", "-F", "qcow2", P("deep/l6.qcow2")});
    // Loop devices: a qcow2 under a file overlay, a raw and a qcow2 as block tops.
    Img({"create", "-q", "-f", "qcow2", "-b", P("base.raw"), "-F", "raw", P("loopq.qcow2")});
    loop_qcow2_ = Loop(P("loopq.qcow2"));
    Img({"create", "-q", "-f", "qcow2", "-b", loop_qcow2_, "-F", "qcow2", P("ov-loop.qcow2")});
    Img({"create", "-q", "-f", "raw", P("blk.raw"), "64M"});
    loop_raw_ = Loop(P("blk.raw"));
    Img({"create", "-q", "-f", "qcow2", "-b", P("base.raw"), "-F", "raw", P("blkq.qcow2")});
    loop_top_ = Loop(P("blkq.qcow2"));
    testutil::Run({"chmod", "-R", "a+rX", dir_});
  }

  static std::string FileDisk(const std::string& target, const std::string& file,
                              const std::string& driver, const std::string& inner = "") {
    return "<disk type='file' device='disk'>" + driver + "<source file='" + file + "'/>" + inner +
           "<target dev='" + target + "' bus='virtio'/></disk>\n";
  }
  static std::string Driver(const std::string& type) {
    return "<driver name='qemu' type='" + type + "'/>";
  }
  static std::string Backing(const std::string& type, const std::string& format,
                             const std::string& file, const std::string& inner = "") {
    const char* attr = type == "block" ? "dev" : "file";
    return "<backingStore type='" + type + "'><format type='" + format + "'/><source " + attr +
           "='" + file + "'/>" + inner + "</backingStore>";
  }

  // The corpus, by domain name (without kPrefix).
  static const std::map<std::string, Case>& Corpus() {
    static const std::map<std::string, Case> corpus = [] {
      std::map<std::string, Case> m;
      const std::string q = Driver("qcow2");
      m["complete"] = {FileDisk("vda", P("top.qcow2"), q), {"vda"}};
      m["nofmt"] = {FileDisk("vda", P("nofmt.qcow2"), q),
                    {"vda"},
                    false,
                    "format of backing image 'mid.qcow2' of image '" + P("nofmt.qcow2") +
                        "' was not specified in the image metadata"};
      m["nofmt-raw"] = {FileDisk("vda", P("nofmt-raw.qcow2"), q), {"vda"}};
      m["partial"] = {
          FileDisk("vda", P("nofmt.qcow2"), q, Backing("file", "qcow2", P("mid.qcow2"))), {"vda"}};
      m["explicit"] = {FileDisk("vda", P("top.qcow2"), q,
                                Backing("file", "qcow2", P("mid.qcow2"),
                                        Backing("file", "raw", P("base.raw"), "<backingStore/>"))),
                       {"vda"}};
      m["terminator"] = {FileDisk("vda", P("top.qcow2"), q, "<backingStore/>"), {"vda"}};
      m["differs"] = {FileDisk("vda", P("top.qcow2"), q, Backing("file", "qcow2", P("alt.qcow2"))),
                      {"vda"}};
      m["rawdriver"] = {FileDisk("vda", P("top.qcow2"), Driver("raw")), {"vda"}};
      m["notype"] = {FileDisk("vda", P("top.qcow2"), "<driver name='qemu'/>"), {"vda"}};
      m["nodriver"] = {FileDisk("vda", P("top.qcow2"), ""), {"vda"}};
      m["missing-backing"] = {FileDisk("vda", P("moved.qcow2"), q),
                              {"vda"},
                              false,
                              "Cannot access backing file '" + P("gone.raw") +
                                  "' of storage file '" + P("moved.qcow2") + "'"};
      m["missing-deep"] = {FileDisk("vda", P("deep-top.qcow2"), q),
                           {"vda"},
                           false,
                           // libvirt names the disk's top, not the missing file's parent.
                           "Cannot access backing file '" + P("gone-deep.raw") +
                               "' of storage file '" + P("deep-top.qcow2") + "'"};
      m["missing-top"] = {FileDisk("vda", P("absent.qcow2"), q),
                          {"vda"},
                          false,
                          "Cannot access storage file '" + P("absent.qcow2") + "'"};
      m["two-disks"] = {FileDisk("vda", P("top.qcow2"), q) + FileDisk("vdb", P("second.qcow2"), q),
                        {"vda", "vdb"}};
      m["deep6"] = {FileDisk("vda", P("deep/l6.qcow2"), q), {"vda"}};
      m["loop-backing"] = {FileDisk("vda", P("ov-loop.qcow2"), q), {"vda"}};
      m["block-raw"] = {"<disk type='block' device='disk'>" + Driver("raw") + "<source dev='" +
                            loop_raw_ + "'/><target dev='vda' bus='virtio'/></disk>",
                        {"vda"}};
      m["block-qcow2"] = {"<disk type='block' device='disk'>" + q + "<source dev='" + loop_top_ +
                              "'/><target dev='vda' bus='virtio'/></disk>",
                          {"vda"}};
      return m;
    }();
    return corpus;
  }

  static std::string DomainXml(const std::string& name, const Case& c) {
    return "<domain type='qemu'><name>" + std::string(kPrefix) + name +
           "</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
           "<emulator>/usr/bin/qemu-system-x86_64</emulator>" +
           c.disks + "</devices></domain>\n";
  }

  static RunResult Chainctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"--domain-dir", kDomainDir, "--run-dir", kRunDir};
    argv.insert(argv.end(), args.begin(), args.end());
    return testutil::RunChainctl(argv);
  }

  // Expects chainctl's disk.xml for `domain`/`target` to hold the chain `expected`.
  static void ExpectChainctlChain(const std::string& domain, const std::string& target,
                                  const Chain& expected, const std::string& when) {
    RunResult r = Chainctl({"domain", domain, target, "--xml"});
    ASSERT_EQ(r.exit_code, 0) << when << ": chainctl domain " << domain << " " << target
                              << " --xml: " << r.err;
    std::string why;
    std::optional<Chain> got = DiskChain(r.out, target, &why);
    ASSERT_TRUE(got.has_value()) << when << ": " << why;
    EXPECT_EQ(*got, expected) << when << ", " << domain << "/" << target << ": chainctl\n" << r.out;
  }

  static inline std::unique_ptr<LibvirtDaemon> daemon_;
  static inline std::string dir_;
  static inline std::vector<std::string> loops_;
  static inline std::string loop_qcow2_, loop_raw_, loop_top_;
  static inline bool images_failed_ = false;
  static inline std::string images_error_;
  static inline RunResult define_result_;
  static inline double define_seconds_ = 0;
};

TEST_P(DomainLibvirtTest, ChainctlShowsWhatLibvirtResolves) {
  const std::string domain = kPrefix + GetParam();
  const Case& c = Corpus().at(GetParam());
  RunResult start = daemon_->StartDomain(domain);
  if (!c.starts) {
    ASSERT_NE(start.exit_code, 0) << "libvirt started " << domain << ", expected a refusal";
    const std::string message = LibvirtMessage(start.err);
    EXPECT_EQ(message, c.message) << "libvirt's message changed: " << start.err;
    RunResult check = Chainctl({"domain", domain, c.targets[0], "--check"});
    EXPECT_EQ(check.exit_code, 1) << check.out << check.err;
    EXPECT_NE(check.out.find(message), std::string::npos)
        << "chainctl --check lacks libvirt's message\n  " << message << "\nit says:\n"
        << check.out;
    return;
  }
  ASSERT_EQ(start.exit_code, 0) << start.err;
  RunResult live = daemon_->DumpXml(domain);
  std::vector<Chain> live_chains;
  for (const std::string& target : c.targets) {
    std::string why;
    std::optional<Chain> chain = DiskChain(live.out, target, &why);
    ASSERT_TRUE(chain.has_value()) << why;
    live_chains.push_back(*chain);
    // The status file holds the same live chain.
    std::string status = testutil::Run({"cat", LibvirtDaemon::StatusFile(domain)}).out;
    std::optional<Chain> from_status = DiskChain(status, target, &why);
    ASSERT_TRUE(from_status.has_value()) << why;
    EXPECT_EQ(*from_status, *chain);
    ExpectChainctlChain(domain, target, *chain, "running");
  }
  RunResult list = Chainctl({"domains"});
  EXPECT_NE(list.out.find(domain + "\trunning\t"), std::string::npos) << list.out << list.err;
  ASSERT_EQ(daemon_->Destroy(domain).exit_code, 0);
  // Shut off: the definition resolved by chainfs alone gives the chain libvirt opened.
  for (size_t i = 0; i < c.targets.size(); ++i) {
    ExpectChainctlChain(domain, c.targets[i], NumberedFromOne(live_chains[i]), "shut off");
  }
  list = Chainctl({"domains"});
  EXPECT_NE(list.out.find(domain + "\tshut off\t"), std::string::npos) << list.out << list.err;
}

INSTANTIATE_TEST_SUITE_P(Corpus, DomainLibvirtTest,
                         ::testing::Values("complete", "nofmt", "nofmt-raw", "partial", "explicit",
                                           "terminator", "differs", "rawdriver", "notype",
                                           "nodriver", "missing-backing", "missing-deep",
                                           "missing-top", "two-disks", "deep6", "loop-backing",
                                           "block-raw", "block-qcow2"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (ch == '-') ch = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace chainfs
