// bench_domains: issue 10's domains benchmark. Builds 1,000 chains of 4 images (a raw or
// qcow2 base under 3 qcow2 overlays, made with chainfs's own writers) in a pool folder, and
// 500 domains with 2 disks each (vda, vdb) on the tops of those chains, some of them broken
// (10% of the tops with their backing format stripped, a few chains with a missing backing
// file), defines the 500 domains in a real libvirtd (tests/util/libvirt_daemon), then, side
// by side in one run, each with a cold page cache first (sync + drop_caches) and then again:
//   (a) chainfs: a fresh mount with --pool and --domain-dir (the definitions the bench wrote
//       and defined), then `cat MOUNT/.domains/*/*/problems > /dev/null` run through bash
//   (b) what an admin scripts today: `virsh domblklist --details D` for each domain, then
//       `qemu-img info --backing-chain -U` for each disk source (run without a shell)
//   (c) `chainctl domain D --check` for each domain
// and prints times, ratios, the FUSE requests of each pass (.chainfs/stats) and the daemon's
// peak RSS. Cleans up everything: undefines its domains, stops the daemons it started (by
// PID), unmounts, removes its folders. Run as root (libvirtd, FUSE, drop_caches).
// Usage: bench_domains [--domains N]   (N domains over 2N chains; default 500)
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/bench_util.h"
#include "core/format/qcow2/writer.h"
#include "util/libvirt_daemon.h"
#include "util/qcow2_craft.h"

namespace chainfs::bench {
namespace {

using testutil::LibvirtDaemon;

constexpr int kDepth = 4;
constexpr const char* kPrefix = "chainfs-bench-d";

// What was broken on purpose, per chain.
enum class Damage { kNone, kNoBackingFormat, kMissingBacking };

// Chain c: every 10th (c % 10 == 3) top loses its backing format; every 100th (c % 100 == 7)
// loses its level-1 image. The two sets do not overlap.
Damage DamageOf(int chain) {
  if (chain % 10 == 3) return Damage::kNoBackingFormat;
  if (chain % 100 == 7) return Damage::kMissingBacking;
  return Damage::kNone;
}

// Even chains have a raw base, odd ones a qcow2 base.
std::string BaseFormat(int chain) { return chain % 2 == 0 ? "raw" : "qcow2"; }

std::string ImageName(int chain, int level) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "c%04d-%d.%s", chain, level,
                level == 0 ? BaseFormat(chain).c_str() : "qcow2");
  return buf;
}

std::string DomainName(int d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%04d", kPrefix, d);
  return buf;
}

bool MakeChains(const std::string& dir, int chains) {
  for (int c = 0; c < chains; ++c) {
    for (int l = 0; l < kDepth; ++l) {
      std::string path = dir + "/" + ImageName(c, l);
      core::Status s;
      if (l == 0 && BaseFormat(c) == "raw") {
        s = core::CreateRaw(path, 64ull << 20);
      } else {
        core::Qcow2CreateOptions o;
        o.size = 64ull << 20;
        if (l > 0) {
          o.backing = ImageName(c, l - 1);  // relative, as qemu-img create -b NAME writes it
          o.backing_format = l == 1 ? BaseFormat(c) : "qcow2";
        }
        s = core::CreateQcow2(path, o);
      }
      if (!s.ok()) {
        std::fprintf(stderr, "create %s failed: %s\n", path.c_str(), s.ToString().c_str());
        return false;
      }
    }
    switch (DamageOf(c)) {
      case Damage::kNone:
        break;
      case Damage::kNoBackingFormat: {
        core::Status s = testutil::StripBackingFormat(dir + "/" + ImageName(c, kDepth - 1));
        if (!s.ok()) {
          std::fprintf(stderr, "strip failed: %s\n", s.ToString().c_str());
          return false;
        }
        break;
      }
      case Damage::kMissingBacking:
        ::unlink((dir + "/" + ImageName(c, 1)).c_str());
        break;
    }
  }
  return true;
}

std::string DomainXml(int d, const std::string& pool) {
  char uuid[64];
  std::snprintf(uuid, sizeof uuid, "6f1e5b7a-0000-4000-8000-%012d", d);
  std::string xml = "<domain type='qemu'>\n  <name>" + DomainName(d) + "</name>\n  <uuid>" + uuid +
                    "</uuid>\n  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n"
                    "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n"
                    "  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n";
  const char* targets[] = {"vda", "vdb"};
  for (int k = 0; k < 2; ++k) {
    xml +=
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n"
        "      <source file='" +
        pool + "/" + ImageName(2 * d + k, kDepth - 1) + "'/>\n      <target dev='" + targets[k] +
        "' bus='virtio'/>\n    </disk>\n";
  }
  return xml + "  </devices>\n</domain>\n";
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  return bool(f.flush());
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// Returns the FUSE requests between two stats snapshots, "op=N ..." (nonzero ones), and
// their total in `total`.
std::string FuseDelta(const std::map<std::string, long>& before,
                      const std::map<std::string, long>& after, long* total) {
  std::string out;
  *total = 0;
  for (const auto& [name, value] : after) {
    if (name.rfind("fuse_", 0) != 0) continue;
    auto it = before.find(name);
    long d = value - (it == before.end() ? 0 : it->second);
    if (d == 0) continue;
    *total += d;
    out += name.substr(5) + "=" + std::to_string(d) + " ";
  }
  for (const char* n : {"chain_cache_misses", "inspector_cache_misses", "probes"}) {
    auto a = after.find(n);
    auto b = before.find(n);
    if (a == after.end()) continue;
    long d = a->second - (b == before.end() ? 0 : b->second);
    if (d != 0) out += std::string(n) + "=" + std::to_string(d) + " ";
  }
  return out;
}

// Returns the CPU seconds (user + system) process `pid` has used so far, or 0.
double CpuSeconds(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::atof(field.c_str());  // utime, stime
  }
  return ticks / double(::sysconf(_SC_CLK_TCK));
}

struct MountResult {
  double mount_seconds = 0;  // chainfs start until the mount answers
  double first_seconds = 0;  // the cat after mounting
  double again_seconds = 0;  // the same cat again
  std::string first_ops, again_ops;
  long first_requests = 0, again_requests = 0;
  double first_cpu = 0, again_cpu = 0;  // the daemon's CPU seconds in each pass
  long peak_rss_kib = 0;
  int first_rc = -1, again_rc = -1;
  int disks = 0;             // problems files found
  int disks_broken = 0;      // non-empty ones
  int no_format = 0;         // ... naming libvirt's missing-backing-format message
  int missing = 0;           // ... naming libvirt's missing-backing-file message
  double floor_seconds = 0;  // the same cat over a plain copy of the files (no FUSE)
  bool ok = false;
};

// Times the same shell command over a plain folder holding a copy of what the passes read
// (`.domains/D/{state,uuid,domain.xml,vda/problems,vdb/problems}`), warm: what the command
// costs when the kernel answers everything itself, the floor for (a).
double MeasureFloor(const std::string& dir,
                    const std::map<std::string, std::map<std::string, std::string>>& problems) {
  const std::string domains = dir + "/.domains";
  ::mkdir(dir.c_str(), 0755);
  ::mkdir(domains.c_str(), 0755);
  for (const auto& [domain, disks] : problems) {
    std::string d = domains + "/" + domain;
    ::mkdir(d.c_str(), 0755);
    for (const char* f : {"state", "uuid", "domain.xml"}) WriteFile(d + "/" + f, "");
    for (const auto& [target, text] : disks) {
      ::mkdir((d + "/" + target).c_str(), 0755);
      WriteFile(d + "/" + target + "/problems", text);
    }
  }
  const std::string cmd = "cat " + domains + "/*/*/problems > /dev/null";
  RunQuiet({"bash", "-c", cmd});
  auto t0 = std::chrono::steady_clock::now();
  RunQuiet({"bash", "-c", cmd});
  double seconds = SecondsSince(t0);
  RemoveTree(dir);
  return seconds;
}

MountResult MeasureMount(const std::vector<std::string>& args, const std::string& floor_dir) {
  MountResult r;
  DropCaches();
  auto t0 = std::chrono::steady_clock::now();
  Mount m(args);
  if (!m.ok()) {
    std::fprintf(stderr, "mount failed\n");
    return r;
  }
  r.mount_seconds = SecondsSince(t0);
  const std::string cmd = "cat " + m.path() + "/.domains/*/*/problems > /dev/null";
  std::map<std::string, long> s0 = ReadStats(m.path());
  double cpu0 = CpuSeconds(m.pid());
  auto t1 = std::chrono::steady_clock::now();
  r.first_rc = RunQuiet({"bash", "-c", cmd});
  r.first_seconds = SecondsSince(t1);
  double cpu1 = CpuSeconds(m.pid());
  std::map<std::string, long> s1 = ReadStats(m.path());
  auto t2 = std::chrono::steady_clock::now();
  r.again_rc = RunQuiet({"bash", "-c", cmd});
  r.again_seconds = SecondsSince(t2);
  double cpu2 = CpuSeconds(m.pid());
  std::map<std::string, long> s2 = ReadStats(m.path());
  r.first_cpu = cpu1 - cpu0;
  r.again_cpu = cpu2 - cpu1;
  r.first_ops = FuseDelta(s0, s1, &r.first_requests);
  r.again_ops = FuseDelta(s1, s2, &r.again_requests);
  r.peak_rss_kib = PeakRssKiB(m.pid());
  // What the passes read, checked after the measurement.
  const std::string domains = m.path() + "/.domains";
  std::map<std::string, std::map<std::string, std::string>> texts;
  if (DIR* dir = ::opendir(domains.c_str())) {
    while (dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      for (const char* t : {"vda", "vdb"}) {
        std::string p = domains + "/" + e->d_name + "/" + t + "/problems";
        struct stat st;
        if (::stat(p.c_str(), &st) != 0) continue;
        ++r.disks;
        std::string text = ReadFile(p);
        texts[e->d_name][t] = text;
        if (text.empty()) continue;
        ++r.disks_broken;
        if (text.find("was not specified in the image metadata") != std::string::npos) {
          ++r.no_format;
        }
        if (text.find("Cannot access backing file") != std::string::npos) ++r.missing;
      }
    }
    ::closedir(dir);
  }
  m.Unmount();
  r.floor_seconds = MeasureFloor(floor_dir, texts);
  r.ok = true;
  return r;
}

// The admin's script: domblklist per domain, then qemu-img info per disk source.
struct ScriptResult {
  double seconds = 0;
  int sources = 0;
  int virsh_failures = 0;
  int qemu_img_failures = 0;
};

ScriptResult MeasureScript(const std::vector<std::string>& domains, bool cold) {
  ScriptResult r;
  if (cold) DropCaches();
  auto t0 = std::chrono::steady_clock::now();
  for (const std::string& d : domains) {
    std::string out;
    if (RunQuiet({"virsh", "-c", "qemu:///system", "domblklist", "--details", d}, &out) != 0) {
      ++r.virsh_failures;
      continue;
    }
    // " file   disk   vda   /path" under a header whose second column is "Device".
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream f(line);
      std::string type, device, target, source;
      if (!(f >> type >> device >> target >> source) || device != "disk" || source == "-") {
        continue;
      }
      ++r.sources;
      if (RunQuiet({"qemu-img", "info", "--backing-chain", "-U", source}) != 0) {
        ++r.qemu_img_failures;
      }
    }
  }
  r.seconds = SecondsSince(t0);
  return r;
}

struct ChainctlResult {
  double seconds = 0;
  int healthy = 0, broken = 0, errors = 0;
};

ChainctlResult MeasureChainctl(const std::vector<std::string>& domains,
                               const std::vector<std::string>& options, bool cold) {
  ChainctlResult r;
  if (cold) DropCaches();
  auto t0 = std::chrono::steady_clock::now();
  for (const std::string& d : domains) {
    std::vector<std::string> argv = {CHAINCTL_BINARY};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {"domain", d, "--check"});
    int rc = RunQuiet(argv);
    if (rc == 0)
      ++r.healthy;
    else if (rc == 1)
      ++r.broken;
    else
      ++r.errors;
  }
  r.seconds = SecondsSince(t0);
  return r;
}

// Starts the libvirtd fixture, waiting up to `patience` while another libvirtd (another
// suite's) is running: the fixture never touches one it did not start.
std::unique_ptr<LibvirtDaemon> StartLibvirt(std::chrono::minutes patience) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  bool said = false;
  for (;;) {
    std::unique_ptr<LibvirtDaemon> d = LibvirtDaemon::Start();
    if (d->ready() || d->state() == LibvirtDaemon::State::kFailed) return d;
    bool busy = d->reason().find("did not start") != std::string::npos;
    if (!busy || std::chrono::steady_clock::now() > deadline) return d;
    if (!said) std::printf("  waiting for it to end: %s\n", d->reason().c_str());
    said = true;
    d.reset();
    std::this_thread::sleep_for(std::chrono::seconds(5));
  }
}

// Undefines the bench's domains in one virsh session on every exit path after defining.
class DefinedDomains {
 public:
  DefinedDomains(LibvirtDaemon& daemon, std::vector<std::string> names)
      : daemon_(daemon), names_(std::move(names)) {}
  ~DefinedDomains() {
    std::string commands;
    for (const std::string& n : names_) commands += "undefine " + n + "\n";
    daemon_.VirshSession(commands, std::chrono::seconds(600));
    // Whatever is left of ours (none expected), one by one.
    testutil::RunResult list = daemon_.Virsh({"list", "--all", "--name"});
    std::istringstream in(list.out);
    for (std::string n; std::getline(in, n);) {
      if (n.rfind(kPrefix, 0) == 0) daemon_.Virsh({"undefine", n});
    }
  }
  DefinedDomains(const DefinedDomains&) = delete;
  DefinedDomains& operator=(const DefinedDomains&) = delete;

 private:
  LibvirtDaemon& daemon_;
  std::vector<std::string> names_;
};

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

std::string Mib(long kib) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(kib) / 1024.0);
  return buf;
}

int Main(int argc, char** argv) {
  int domains = 500;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--domains") domains = std::atoi(argv[i + 1]);
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench_domains: run as root (libvirtd, FUSE, drop_caches)\n");
    return 1;
  }
  const int chains = 2 * domains;
  const std::string root = MakeBenchDir("chainfs-bench-domains");
  ::chmod(root.c_str(), 0755);  // as LibvirtDaemon::MakeWorldReadableDir: qemu may traverse it
  const std::string pool = root + "/pool", etc = root + "/etc", run = root + "/run";
  for (const std::string& d : {pool, etc, run}) ::mkdir(d.c_str(), 0755);
  std::printf("bench_domains: %d domains x 2 disks over %d chains of %d images in %s\n", domains,
              chains, kDepth, root.c_str());

  int expect_no_format = 0, expect_missing = 0;
  for (int c = 0; c < chains; ++c) {
    if (DamageOf(c) == Damage::kNoBackingFormat) ++expect_no_format;
    if (DamageOf(c) == Damage::kMissingBacking) ++expect_missing;
  }
  auto t0 = std::chrono::steady_clock::now();
  if (!MakeChains(pool, chains)) {
    RemoveTree(root);
    return 1;
  }
  PrintRow("chains created with chainfs's writers", SecondsSince(t0),
           std::to_string(expect_no_format) + " tops without backing format, " +
               std::to_string(expect_missing) + " missing backings");
  std::vector<std::string> names, xmls;
  for (int d = 0; d < domains; ++d) {
    names.push_back(DomainName(d));
    xmls.push_back(DomainXml(d, pool));
    WriteFile(etc + "/" + names.back() + ".xml", xmls.back());
  }

  int status = 0;
  {
    t0 = std::chrono::steady_clock::now();
    std::unique_ptr<LibvirtDaemon> daemon = StartLibvirt(std::chrono::minutes(30));
    if (!daemon->ready()) {
      std::fprintf(stderr, "libvirtd: %s\n", daemon->reason().c_str());
      daemon.reset();
      RemoveTree(root);
      return 1;
    }
    PrintRow("libvirtd + virtlogd started (fixture)", SecondsSince(t0));
    // One virsh session defining the files of etc/: the same XML the mount reads.
    std::string commands;
    for (const std::string& n : names) commands += "define " + etc + "/" + n + ".xml\n";
    t0 = std::chrono::steady_clock::now();
    testutil::RunResult def = daemon->VirshSession(commands, std::chrono::seconds(3600));
    DefinedDomains guard(*daemon, names);
    double define_seconds = SecondsSince(t0);
    int defined = 0;
    for (size_t p = 0; (p = def.out.find(" defined from ", p)) != std::string::npos; ++p) ++defined;
    PrintRow("virsh define x " + std::to_string(domains) + " (one virsh session)", define_seconds,
             std::to_string(defined) + " defined");
    if (defined != domains) {
      std::fprintf(stderr, "define failed: %s\n", def.err.substr(0, 2000).c_str());
      status = 1;
    }

    if (status == 0) {
      MountResult a = MeasureMount({"--pool", "p=" + pool, "--domain-dir", etc, "--run-dir", run},
                                   root + "/floor");
      ScriptResult b1 = MeasureScript(names, true);
      ScriptResult b2 = MeasureScript(names, false);
      const std::vector<std::string> ctl = {"--domain-dir", etc, "--run-dir", run};
      ChainctlResult c1 = MeasureChainctl(names, ctl, true);
      ChainctlResult c2 = MeasureChainctl(names, ctl, false);
      if (!a.ok) status = 1;

      std::printf("\n");
      PrintRow("(a) chainfs start until mounted (cold cache)", a.mount_seconds);
      PrintRow("(a) cat .domains/*/*/problems, 1st pass (cold)", a.first_seconds,
               "rc " + std::to_string(a.first_rc) + ", " + std::to_string(a.first_requests) +
                   " FUSE requests, daemon CPU " + Seconds(a.first_cpu));
      PrintRow("(a) the same again on that mount", a.again_seconds,
               "rc " + std::to_string(a.again_rc) + ", " + std::to_string(a.again_requests) +
                   " FUSE requests, daemon CPU " + Seconds(a.again_cpu));
      PrintRow("(a floor) the same cat over a plain copy, warm", a.floor_seconds, "no FUSE");
      PrintRow("(b) domblklist + qemu-img info, 1st pass (cold)", b1.seconds,
               std::to_string(b1.sources) + " sources, " + std::to_string(b1.qemu_img_failures) +
                   " qemu-img failures, " + std::to_string(b1.virsh_failures) + " virsh failures");
      PrintRow("(b) the same again", b2.seconds,
               std::to_string(b2.sources) + " sources, " + std::to_string(b2.qemu_img_failures) +
                   " qemu-img failures, " + std::to_string(b2.virsh_failures) + " virsh failures");
      PrintRow("(c) chainctl domain D --check x domains (cold)", c1.seconds,
               std::to_string(c1.healthy) + " healthy, " + std::to_string(c1.broken) +
                   " with problems, " + std::to_string(c1.errors) + " errors");
      PrintRow("(c) the same again", c2.seconds);
      std::printf("  FUSE requests, 1st pass: %s\n", a.first_ops.c_str());
      std::printf("  FUSE requests, again:    %s\n", a.again_ops.c_str());
      std::printf(
          "  problems read: %d disks, %d with problems (%d missing backing format of %d, "
          "%d missing backing of %d)\n",
          a.disks, a.disks_broken, a.no_format, expect_no_format, a.missing, expect_missing);
      std::printf("  ratio (b 1st)/(a 1st): %.1fx   (b again)/(a again): %.1fx\n",
                  b1.seconds / a.first_seconds, b2.seconds / a.again_seconds);
      // Least favourable: the faster script pass over the slower chainfs pass, counting the
      // mount with the first one; best: the slower script pass over the faster chainfs pass.
      std::printf(
          "  least favourable: (faster b)/(a mount + 1st): %.1fx   best: (slower b)/(faster "
          "a): %.1fx\n",
          std::min(b1.seconds, b2.seconds) /
              std::max(a.mount_seconds + a.first_seconds, a.again_seconds),
          std::max(b1.seconds, b2.seconds) / std::min(a.first_seconds, a.again_seconds));
      std::printf("  ratio (c 1st)/(a 1st): %.1fx   (b again)/(c again): %.1fx\n",
                  c1.seconds / a.first_seconds, b2.seconds / c2.seconds);
      std::printf("  chainfs daemon peak RSS (VmHWM): %s\n", Mib(a.peak_rss_kib).c_str());
      if (a.disks != 2 * domains || a.no_format != expect_no_format ||
          a.missing != expect_missing) {
        std::printf("  UNEXPECTED: the problems files do not show the damage made\n");
        status = 1;
      }
    }
    t0 = std::chrono::steady_clock::now();
  }  // undefines the domains, then stops the daemons
  PrintRow("domains undefined, daemons stopped", SecondsSince(t0));
  RemoveTree(root);
  return status;
}

}  // namespace
}  // namespace chainfs::bench

int main(int argc, char** argv) { return chainfs::bench::Main(argc, argv); }
