// bench_pool_scan: issue 3's pool-scan benchmark. Builds a pool of 10,000
// qcow2 volumes (2,000 chains of 5) with chainfs's own qcow2 writer, then,
// side by side in one run, with a cold and a warm page cache:
//   (a) chainfs: mount, read every volume's `backing` and every chain/*/format
//   (b) qemu-img info --backing-chain over the 2,000 tops
//   (c) chainctl info --json over the 2,000 tops
// and prints times, ratios and the daemon's peak RSS. (a) reads everything
// twice on one mount with the default options: the first pass after
// mounting (every node is looked up and read from the daemon once) and the
// pass after it (warm: the kernel holds what the mount described, kept
// current by inotify invalidation). (a0) is a mount with -o cache_timeout=0,
// where every access is revalidated by the daemon. Run as root (for
// drop_caches and FUSE).
// Then (d) the commands an admin types, each as a shell command in its own
// process on a fresh mount: a glob with cat, grep -H over every problems
// file, find -name, ls -R; the first pass after mounting and the repeat
// pass, with the FUSE requests each made (from .chainfs/stats).
// Usage: bench_pool_scan [--chains N] [--depth D] [--patterns-only 1]
//                        [--pool-dir DIR (kept; made there if empty)]
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/bench_util.h"
#include "core/format/qcow2/writer.h"

namespace chainfs::bench {
namespace {

std::string VolumeName(int chain, int level) {
  return "c" + std::to_string(chain) + "-" + std::to_string(level) + ".qcow2";
}

bool MakePool(const std::string& dir, int chains, int depth) {
  for (int c = 0; c < chains; ++c) {
    for (int l = 0; l < depth; ++l) {
      core::Qcow2CreateOptions o;
      o.size = 64ull << 20;
      if (l > 0) {
        o.backing = VolumeName(c, l - 1);
        o.backing_format = "qcow2";
      }
      core::Status s = core::CreateQcow2(dir + "/" + VolumeName(c, l), o);
      if (!s.ok()) {
        std::fprintf(stderr, "create failed: %s\n", s.ToString().c_str());
        return false;
      }
    }
  }
  return true;
}

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (!n.empty() && n[0] != '.') names.push_back(n);  // not ., .., .pool.xml
  }
  closedir(d);
  return names;
}

// Reads a whole small file; returns its size or -1.
long ReadSmall(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[4096];
  long total = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) total += n;
  close(fd);
  return n < 0 ? -1 : total;
}

struct MountResult {
  double mount_seconds = 0;
  double read_seconds = 0;       // first pass after mounting
  double warm_read_seconds = 0;  // the next pass on the same mount
  long peak_rss_kib = 0;
  long files = 0;
  long errors = 0;
};

MountResult MeasureMount(const std::string& pool_dir, bool cold,
                         const std::vector<std::string>& extra = {}) {
  MountResult r;
  if (cold) DropCaches();
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> args = {"--pool", "bench=" + pool_dir};
  args.insert(args.end(), extra.begin(), extra.end());
  Mount m(args);
  if (!m.ok()) {
    std::fprintf(stderr, "mount failed\n");
    r.errors = 1;
    return r;
  }
  r.mount_seconds = SecondsSince(t0);
  std::string pool = m.path() + "/bench";
  for (int pass = 0; pass < 2; ++pass) {
    auto t1 = std::chrono::steady_clock::now();
    std::vector<std::string> vols = ListDir(pool);
    std::atomic<size_t> next{0};
    std::atomic<long> files{0}, errors{0};
    unsigned threads = std::max(2u, std::thread::hardware_concurrency());
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (size_t i; (i = next.fetch_add(1)) < vols.size();) {
          std::string v = pool + "/" + vols[i];
          if (ReadSmall(v + "/backing") < 0) ++errors;
          ++files;
          for (const std::string& n : ListDir(v + "/chain")) {
            if (ReadSmall(v + "/chain/" + n + "/format") <= 0) ++errors;
            ++files;
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    (pass == 0 ? r.read_seconds : r.warm_read_seconds) = SecondsSince(t1);
    r.files = files;
    r.errors += errors;
  }
  r.peak_rss_kib = PeakRssKiB(m.pid());
  m.Unmount();
  return r;
}

// Sums the FUSE request counters of a stats snapshot.
long Requests(const std::map<std::string, long>& stats) {
  long n = 0;
  for (const auto& [name, value] : stats) {
    if (name.rfind("fuse_", 0) == 0) n += value;
  }
  return n;
}

struct PatternResult {
  double first = 0, repeat = 0;
  long first_requests = 0, repeat_requests = 0;
  long peak_rss_kib = 0;
  int exit_first = 0, exit_repeat = 0;
};

// Runs `command` (sh -c, cwd = the mount) twice on a fresh mount; counts
// the requests each pass made, less those of reading the counters.
PatternResult MeasurePattern(const std::string& pool_dir, const std::string& command, bool cold) {
  PatternResult r;
  if (cold) DropCaches();
  Mount m({"--pool", "bench=" + pool_dir});
  if (!m.ok()) {
    r.exit_first = r.exit_repeat = -1;
    return r;
  }
  // What one read of the counters costs, measured between two reads.
  long s0 = Requests(ReadStats(m.path()));
  long s1 = Requests(ReadStats(m.path()));
  long per_read = s1 - s0;
  std::vector<std::string> argv = {"sh", "-c", "cd '" + m.path() + "' && " + command + " >/dev/null 2>&1"};
  long before = s1;
  for (int pass = 0; pass < 2; ++pass) {
    auto t0 = std::chrono::steady_clock::now();
    int rc = RunQuiet(argv);
    double secs = SecondsSince(t0);
    long after = Requests(ReadStats(m.path()));
    long made = after - before - per_read;
    before = after;
    if (pass == 0) {
      r.first = secs, r.first_requests = made, r.exit_first = rc;
    } else {
      r.repeat = secs, r.repeat_requests = made, r.exit_repeat = rc;
    }
  }
  r.peak_rss_kib = PeakRssKiB(m.pid());
  m.Unmount();
  return r;
}

void MeasurePatterns(const std::string& dir, bool cold) {
  struct Pattern {
    const char* label;
    const char* command;
  };
  const Pattern patterns[] = {
      {"cat bench/*/backing bench/*/chain/*/format", "cat bench/*/backing bench/*/chain/*/format"},
      {"grep -H . */*/problems", "grep -H . */*/problems"},
      {"find . -name problems -size +0", "find . -name problems -size +0"},
      {"find . -name format", "find . -name format"},
      {"ls -R", "ls -R"},
  };
  std::printf("\n(d) shell commands on a fresh mount, %s page cache (first pass, repeat):\n",
              cold ? "cold" : "warm");
  for (const Pattern& p : patterns) {
    PatternResult r = MeasurePattern(dir, p.command, cold);
    std::printf("  %-44s %8.3f s %8ld req | %7.3f s %6ld req | %5.2fx | rss %.1f MiB%s\n",
                p.label, r.first, r.first_requests, r.repeat, r.repeat_requests,
                r.repeat > 0 ? r.first / r.repeat : 0.0, double(r.peak_rss_kib) / 1024.0,
                (r.exit_first != 0 && r.exit_first != 1) || r.exit_repeat != r.exit_first
                    ? "  (exit codes differ or failed)"
                    : "");
    std::fflush(stdout);
  }
}

double MeasureLoop(const std::vector<std::string>& prefix, const std::vector<std::string>& tops,
                   bool cold, long* failures) {
  if (cold) DropCaches();
  auto t0 = std::chrono::steady_clock::now();
  for (const std::string& top : tops) {
    std::vector<std::string> argv = prefix;
    argv.push_back(top);
    if (RunQuiet(argv) != 0) ++*failures;
  }
  return SecondsSince(t0);
}

int Main(int argc, char** argv) {
  int chains = 2000, depth = 5;
  bool patterns_only = false;
  std::string given_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--chains") chains = std::atoi(argv[i + 1]);
    else if (a == "--depth") depth = std::atoi(argv[i + 1]);
    else if (a == "--patterns-only") patterns_only = std::atoi(argv[i + 1]) != 0;
    else if (a == "--pool-dir") given_dir = argv[i + 1];
  }
  std::string dir = given_dir.empty() ? MakeBenchDir("chainfs-bench-pool") : given_dir;
  std::printf("bench_pool_scan: %d chains of %d qcow2 images (%d volumes) in %s\n", chains, depth,
              chains * depth, dir.c_str());
  auto t0 = std::chrono::steady_clock::now();
  // A given folder that holds no pool yet is made and kept.
  bool make = given_dir.empty() || ListDir(dir).empty();
  if (make && !MakePool(dir, chains, depth)) return 1;
  if (make) PrintRow("pool created with chainfs's qcow2 writer", SecondsSince(t0));
  if (patterns_only) {
    MeasurePatterns(dir, true);
    MeasurePatterns(dir, false);
    if (given_dir.empty()) RemoveTree(dir);
    return 0;
  }
  std::vector<std::string> tops;
  for (int c = 0; c < chains; ++c) tops.push_back(dir + "/" + VolumeName(c, depth - 1));
  bool can_drop = DropCaches();
  if (!can_drop) std::printf("  (cannot drop the page cache: not root? cold runs are warm)\n");

  for (bool cold : {true, false}) {
    std::printf("\n%s page cache:\n", cold ? "cold" : "warm");
    if (!cold) MeasureMount(dir, false);  // warm the page cache once
    MountResult m = MeasureMount(dir, cold);
    MountResult z = MeasureMount(dir, cold, {"-o", "cache_timeout=0"});
    long qf = 0, cf = 0;
    double q = MeasureLoop({"qemu-img", "info", "--backing-chain", "--output=json"}, tops, cold, &qf);
    double c = MeasureLoop({CHAINCTL_BINARY, "info", "--json"}, tops, cold, &cf);
    PrintRow("(a) chainfs mount (start until mounted)", m.mount_seconds);
    PrintRow("(a) chainfs: every backing + chain/*/format, 1st pass", m.read_seconds,
             std::to_string(m.files) + " files, " + std::to_string(m.errors) + " errors");
    PrintRow("(a) the same again on that mount (kernel caches)", m.warm_read_seconds);
    PrintRow("(a0) 1st pass, -o cache_timeout=0", z.read_seconds,
             std::to_string(z.files) + " files, " + std::to_string(z.errors) + " errors");
    PrintRow("(a0) again, -o cache_timeout=0", z.warm_read_seconds);
    PrintRow("(b) qemu-img info --backing-chain x tops", q, std::to_string(qf) + " failures");
    PrintRow("(c) chainctl info --json x tops", c, std::to_string(cf) + " failures");
    std::printf("  ratio (b)/(a again): %.1fx   (c)/(a again): %.1fx\n", q / m.warm_read_seconds,
                c / m.warm_read_seconds);
    std::printf("  ratio (b)/(a 1st): %.1fx   (b)/(a0): %.1fx   (b)/(c): %.1fx\n",
                q / m.read_seconds, q / z.warm_read_seconds, q / c);
    std::printf("  chainfs daemon peak RSS: %.1f MiB (a), %.1f MiB (a0)\n",
                double(m.peak_rss_kib) / 1024.0, double(z.peak_rss_kib) / 1024.0);
    MeasurePatterns(dir, cold);
  }
  if (given_dir.empty()) RemoveTree(dir);
  return 0;
}

}  // namespace
}  // namespace chainfs::bench

int main(int argc, char** argv) { return chainfs::bench::Main(argc, argv); }
