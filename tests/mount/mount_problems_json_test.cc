// problems.json and `chainctl check --json` (issue 15): every kind of
// problem has its stable code, found with jq, and each fix, applied as
// written (a file operation through the mount, a command in a shell, XML
// put into the domain's <disk>), clears the problem.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "mount/mount_fixture.h"
#include "util/qcow2_craft.h"

namespace chainfs::mounttest {
namespace {

// Replaces every `from` in `s` with `to`.
std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

class ProblemsJsonTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    doms_ = tmp_.Sub("doms");
    ASSERT_EQ(::mkdir(doms_.c_str(), 0700), 0);
    run_ = tmp_.Sub("run");
    ASSERT_EQ(::mkdir(run_.c_str(), 0755), 0);
    // Healthy images the broken ones are made of, and the one a fix points to.
    QemuImgCreate({"-f", "raw", P("b0.raw"), "1M"});
    QemuImgCreate({"-f", "qcow2", "-b", "b0.raw", "-F", "raw", P("b1.qcow2")});
    QemuImgCreate({"-f", "qcow2", P("good.qcow2"), "1M"});
  }

  // The codes VOL/problems.json gives, one per line, as jq prints them.
  std::string Codes(const std::string& vol) {
    return MustRun({"jq", "-r", ".[].code", M(vol + "/problems.json")}).out;
  }

  // The text of the fixes of kind `kind` of the problems with `code`.
  std::vector<std::string> Fixes(const std::string& file, const std::string& code,
                                 const std::string& kind) {
    std::string out = MustRun({"jq", "-r",
                               ".[] | select(.code == \"" + code + "\") | .fixes[] | select(.kind == \"" +
                                   kind + "\") | .text",
                               file})
                          .out;
    std::vector<std::string> lines;
    for (size_t pos = 0; pos < out.size();) {
      size_t nl = out.find('\n', pos);
      lines.push_back(out.substr(pos, nl - pos));
      pos = nl + 1;
    }
    return lines;
  }

  // Waits (a change made outside the mount comes through inotify) until
  // `file` no longer lists `code`.
  void ExpectCleared(const std::string& file, const std::string& code) {
    std::string codes;
    for (int i = 0; i < 300; ++i) {
      codes = MustRun({"jq", "-r", ".[].code", file}).out;
      if (codes.find(code) == std::string::npos) return;
      ::usleep(10000);
    }
    ADD_FAILURE() << file << " still has " << code << ":\n" << ReadFile(file);
  }

  // Runs `text` in a shell in `dir`, with the placeholders filled: a new
  // backing the pool has (good.qcow2) and its format.
  void Apply(const std::string& text, const std::string& dir) {
    std::string line = ReplaceAll(ReplaceAll(text, "NEW-BACKING", "good.qcow2"), "FMT", "qcow2");
    testutil::RunResult r = testutil::Run({"bash", "-c", "cd " + dir + " && " + line});
    EXPECT_EQ(r.exit_code, 0) << line << "\n" << r.err << Log();
  }

  // Writes domain `name` to the domain folder, with a qcow2 file disk per
  // {target, file}.
  void PutDomain(const std::string& name,
                 const std::vector<std::pair<std::string, std::string>>& disks) {
    std::string xml = "<domain type='qemu'><name>" + name +
                      "</name><memory unit='KiB'>65536</memory><devices>";
    for (const auto& [target, file] : disks) {
      xml += "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" +
             file + "'/><target dev='" + target + "' bus='virtio'/></disk>";
    }
    std::ofstream(doms_ + "/" + name + ".xml") << xml << "</devices></domain>\n";
  }

  std::string doms_, run_;
};

// One broken volume per kind of problem a fix can clear, in two copies:
// one repaired by the file operation, the other by the command.
struct FixCase {
  std::string code;
  std::string name;  // POOL/name.{op,cmd}.qcow2
};

TEST_F(ProblemsJsonTest, EveryFixAppliedAsWrittenClearsItsProblem) {
  const std::vector<FixCase> cases = {{"missing-backing-format", "mbf"},
                                      {"missing-file", "mf"},
                                      {"loop", "loop"},
                                      {"bad-backing-string", "bad"},
                                      {"unknown-format", "unk"},
                                      {"format-mismatch", "mis"}};
  for (const std::string copy : {"op", "cmd"}) {
    auto name = [&](const std::string& base) { return base + "." + copy + ".qcow2"; };
    QemuImgCreate({"-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", P(name("mbf"))});
    ASSERT_TRUE(testutil::StripBackingFormat(P(name("mbf"))).ok());
    QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P(name("mf")), "1M"});
    // loop.X -> loop2.X -> loop.X
    QemuImgCreate({"-f", "qcow2", "-u", "-b", name("loop2"), "-F", "qcow2", P(name("loop")), "1M"});
    QemuImgCreate({"-f", "qcow2", "-u", "-b", name("loop"), "-F", "qcow2", P(name("loop2")), "1M"});
    QemuImgCreate({"-f", "qcow2", "-b", "good.qcow2", "-F", "qcow2", P(name("bad"))});
    ASSERT_TRUE(testutil::SetBackingString(P(name("bad")), "json:{\"file\":", "qcow2").ok());
    QemuImgCreate({"-f", "qcow2", "-b", "good.qcow2", "-F", "qcow2", P(name("unk"))});
    ASSERT_TRUE(testutil::SetBackingString(P(name("unk")), "good.qcow2", "bogus").ok());
    QemuImgCreate({"-f", "qcow2", "-u", "-b", "good.qcow2", "-F", "raw", P(name("mis")), "1M"});
  }
  ASSERT_TRUE(MountPool());
  for (const FixCase& c : cases) {
    SCOPED_TRACE(c.code);
    for (const std::string copy : {"op", "cmd"}) {
      const std::string vol = "p/" + c.name + "." + copy + ".qcow2";
      const std::string file = M(vol + "/problems.json");
      EXPECT_NE(Codes(vol).find(c.code + "\n"), std::string::npos) << ReadFile(file);
      // chainctl check --json says the same, byte for byte.
      int rc = 0;
      EXPECT_EQ(Chainctl({"check", "--json", P(c.name + "." + copy + ".qcow2")}, &rc),
                ReadFile(file));
      EXPECT_EQ(rc, c.code == "format-mismatch" ? 3 : 1);
      const bool op = copy == "op";
      std::vector<std::string> fixes = Fixes(file, c.code, op ? "file-op" : "command");
      ASSERT_EQ(fixes.size(), 1u) << ReadFile(file);
      Apply(fixes[0], op ? mnt_ : pool_);
      ExpectCleared(file, c.code);
    }
    // The repaired images are images qemu accepts.
    for (const std::string copy : {"op", "cmd"}) {
      testutil::RunResult info = testutil::Run(
          {"qemu-img", "info", "-U", "--backing-chain", P(c.name + "." + copy + ".qcow2")});
      EXPECT_EQ(info.exit_code, 0) << info.err;
    }
  }
}

TEST_F(ProblemsJsonTest, EveryKindHasItsCode) {
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("mf.qcow2"), "1M"});
  MustRun({"sh", "-c", "printf 'QFI\\373garbage' > " + P("garbage.qcow2")});
  // A chain deeper than 200 images.
  std::string below = "good.qcow2";
  for (int i = 0; i < 202; ++i) {
    std::string name = "d" + std::to_string(i) + ".qcow2";
    ASSERT_TRUE(testutil::WriteBytes(P(name), {}).ok());
    QemuImgCreate({"-f", "qcow2", "-u", "-b", below, "-F", "qcow2", P(name), "1M"});
    below = name;
  }
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(Codes("p/mf.qcow2"), "missing-file\n");
  EXPECT_EQ(Codes("p/garbage.qcow2"), "corrupt-header\n");
  EXPECT_EQ(Codes("p/" + below), "depth\n");
  EXPECT_EQ(Codes("p/good.qcow2"), "");
  EXPECT_EQ(ReadFile(M("p/good.qcow2/problems.json")), "[]\n");
  // The element past the end of a chain too deep has no path.
  EXPECT_EQ(MustRun({"jq", "-r", ".[0].path, .[0].index, .[0].severity",
                     M("p/" + below + "/problems.json")})
                .out,
            "null\n200\nerror\n");
  // Each problem of problems.json is a line of problems, in order.
  for (const std::string& vol : std::vector<std::string>{"mf.qcow2", "garbage.qcow2", below}) {
    std::string lines = ReadFile(M("p/" + vol + "/problems"));
    std::string from_json = MustRun({"jq", "-r",
                                     ".[] | \"\\(.index): \\(.message)\" + "
                                     "(if .fix == \"\" then \"\" else \" -- fix: \\(.fix)\" end)",
                                     M("p/" + vol + "/problems.json")})
                                .out;
    EXPECT_EQ(from_json, lines) << vol;
  }
}

TEST_F(ProblemsJsonTest, TheDomainFixPutInTheDiskClearsTheProblem) {
  QemuImgCreate({"-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", P("top.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("top.qcow2")).ok());
  const std::string source = "<source file='" + P("top.qcow2") + "'/>";
  const std::string xml =
      "<domain type='qemu'>\n  <name>vm</name>\n  <memory unit='KiB'>65536</memory>\n"
      "  <devices>\n    <disk type='file' device='disk'>\n"
      "      <driver name='qemu' type='qcow2'/>\n      " + source +
      "\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n";
  auto put = [&](const std::string& text) {
    std::string tmp = doms_ + "/.vm.xml.new";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << text;
      ASSERT_TRUE(out.good());
    }
    ASSERT_EQ(::rename(tmp.c_str(), (doms_ + "/vm.xml").c_str()), 0);
  };
  put(xml);
  ASSERT_TRUE(MountPool({"--domain-dir", doms_, "--run-dir", run_}));
  const std::string file = M(".domains/vm/vda/problems.json");
  EXPECT_NE(MustRun({"jq", "-r", ".[].code", file}).out.find("missing-backing-format"),
            std::string::npos)
      << ReadFile(file);
  std::vector<std::string> fixes = Fixes(file, "missing-backing-format", "domain-xml");
  ASSERT_EQ(fixes.size(), 1u) << ReadFile(file);
  // As virsh edit would: the chain given after <source>.
  std::string edited = xml;
  edited.replace(edited.find(source) + source.size(), 0, "\n      " + fixes[0]);
  put(edited);
  ExpectCleared(file, "missing-backing-format");
  EXPECT_EQ(ReadFile(M(".domains/vm/vda/problems")), "");
}

// .chainfs/metrics, parsed by the Prometheus client library's own parser,
// against `grep -c` over the problems files and jq over problems.json.
TEST_F(ProblemsJsonTest, MetricsAgreeWithTheProblemsFiles) {
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("mf1.qcow2"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("mf2.qcow2"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "good.qcow2", "-F", "raw", P("mis.qcow2"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", P("mbf.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("mbf.qcow2")).ok());
  PutDomain("vm\"1", {{"vda", P("mbf.qcow2")}, {"vdb", P("gone.qcow2")}});
  ASSERT_TRUE(MountPool({"--domain-dir", doms_, "--run-dir", run_}));
  // name labels... value, one sample per line, as the parser reads them.
  const std::string parse =
      "import sys\n"
      "from prometheus_client.parser import text_string_to_metric_families\n"
      "for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n"
      "    for s in f.samples:\n"
      "        labels = ','.join(k + '=' + v for k, v in sorted(s.labels.items()))\n"
      "        print(f.type, s.name, labels, int(s.value))\n";
  testutil::RunResult parsed = testutil::Run({"/usr/bin/python3", "-c", parse, M(".chainfs/metrics")});
  ASSERT_EQ(parsed.exit_code, 0) << parsed.err << ReadFile(M(".chainfs/metrics"));
  EXPECT_EQ(parsed.err, "");
  auto sample = [&](const std::string& head) -> long {
    size_t at = parsed.out.find(head + " ");
    if (at == std::string::npos || (at > 0 && parsed.out[at - 1] != '\n')) return -1;
    return std::stol(parsed.out.substr(at + head.size() + 1));
  };
  auto count = [&](const std::string& shell) {
    return std::stol(MustRun({"bash", "-c", "cd " + mnt_ + " && " + shell}).out);
  };
  EXPECT_EQ(sample("gauge chainfs_pool_volumes pool=p"), count("ls p | wc -l"));
  EXPECT_EQ(sample("gauge chainfs_pool_volumes pool=p"), 7);
  long total = 0;
  for (const std::string code : {"missing-file", "format-mismatch", "missing-backing-format"}) {
    SCOPED_TRACE(code);
    long n = sample("gauge chainfs_pool_problems code=" + code + ",pool=p");
    EXPECT_EQ(n, count("cat p/*/problems.json | jq -r '.[].code' | grep -cx -- " + code)) << parsed.out;
    total += n;
  }
  EXPECT_EQ(sample("gauge chainfs_pool_problems code=missing-file,pool=p"), 2);
  EXPECT_EQ(total, count("cat p/*/problems | grep -c ''"));
  EXPECT_EQ(sample("gauge chainfs_pool_chains pool=p,state=broken"), 3);  // mf1, mf2, mbf
  EXPECT_EQ(sample("gauge chainfs_pool_chains pool=p,state=complete"), 4);
  // The domain's name holds a double quote: escaped in the file, whole again once parsed.
  EXPECT_EQ(sample("gauge chainfs_domain_disks domain=vm\"1"), 2) << parsed.out;
  EXPECT_EQ(sample("gauge chainfs_domain_problems code=missing-backing-format,domain=vm\"1") +
                sample("gauge chainfs_domain_problems code=missing-file,domain=vm\"1"),
            count("cat '.domains/vm\"1'/*/problems | grep -c ''"));
  // The cache figures of .chainfs/stats, as counters and gauges.
  EXPECT_GT(sample("counter chainfs_fuse_lookup_total"), 0) << parsed.out;
  EXPECT_GE(sample("gauge chainfs_chain_cache_entries"), 7);
}

// chainctl check --all: every pool volume and domain disk, each problem line
// as the mount's problems file shows it, prefixed with the file's folder;
// one summary line; the exit status of the worst problem.
TEST_F(ProblemsJsonTest, CheckAllCoversEveryVolumeAndDiskAndExitsAsTheWorst) {
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", P("mf.qcow2"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-u", "-b", "good.qcow2", "-F", "raw", P("mis.qcow2"), "1M"});
  QemuImgCreate({"-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", P("mbf.qcow2")});
  ASSERT_TRUE(testutil::StripBackingFormat(P("mbf.qcow2")).ok());
  PutDomain("vm", {{"vda", P("good.qcow2")}});
  ASSERT_TRUE(MountPool({"--domain-dir", doms_, "--run-dir", run_}));
  const std::vector<std::string> where = {"--domain-dir", doms_, "--run-dir", run_};
  auto ctl = [&](std::vector<std::string> args, int* rc) {
    args.insert(args.begin(), where.begin(), where.end());
    return Chainctl(args, rc);
  };
  int rc = 0;
  std::string out = ctl({"check", "--all"}, &rc);
  EXPECT_EQ(rc, 1) << out;
  std::string expected;
  for (const std::string vol : {"mbf.qcow2", "mf.qcow2", "mis.qcow2"}) {
    std::string lines = ReadFile(M("p/" + vol + "/problems"));
    ASSERT_FALSE(lines.empty()) << vol;
    for (size_t pos = 0; pos < lines.size();) {
      size_t nl = lines.find('\n', pos);
      expected += "p/" + vol + " " + lines.substr(pos, nl + 1 - pos);
      pos = nl + 1;
    }
  }
  expected +=
      "checked 6 volumes in 1 pool and 1 disk of 1 domain: 3 problems in 3 chains "
      "(format-mismatch 1, missing-backing-format 1, missing-file 1)\n";
  EXPECT_EQ(out, expected);
  std::string json = ctl({"check", "--all", "--json"}, &rc);
  EXPECT_EQ(rc, 1);
  std::ofstream(tmp_.Sub("all.json")) << json;
  EXPECT_EQ(MustRun({"jq", "-c", ".checked, .counts, .exit, [.problems[].owner]", tmp_.Sub("all.json")}).out,
            "{\"pools\":1,\"volumes\":6,\"domains\":1,\"disks\":1}\n"
            "{\"format-mismatch\":1,\"missing-backing-format\":1,\"missing-file\":1}\n1\n"
            "[\"p/mbf.qcow2\",\"p/mf.qcow2\",\"p/mis.qcow2\"]\n");
  // Only a warning left: exit 3. Nothing left: exit 0.
  ASSERT_EQ(::unlink(P("mf.qcow2").c_str()), 0);
  ASSERT_EQ(::unlink(P("mbf.qcow2").c_str()), 0);
  out = ctl({"check", "--all"}, &rc);
  EXPECT_EQ(rc, 3) << out;
  ASSERT_EQ(::unlink(P("mis.qcow2").c_str()), 0);
  out = ctl({"check", "--all"}, &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "checked 3 volumes in 1 pool and 1 disk of 1 domain: no problems\n");
}

}  // namespace
}  // namespace chainfs::mounttest
