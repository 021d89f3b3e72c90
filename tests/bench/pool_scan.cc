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
// Usage: bench_pool_scan [--chains N] [--depth D]
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--chains") chains = std::atoi(argv[i + 1]);
    else if (a == "--depth") depth = std::atoi(argv[i + 1]);
  }
  std::string dir = MakeBenchDir("chainfs-bench-pool");
  std::printf("bench_pool_scan: %d chains of %d qcow2 images (%d volumes) in %s\n", chains, depth,
              chains * depth, dir.c_str());
  auto t0 = std::chrono::steady_clock::now();
  if (!MakePool(dir, chains, depth)) return 1;
  PrintRow("pool created with chainfs's qcow2 writer", SecondsSince(t0));
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
  }
  RemoveTree(dir);
  return 0;
}

}  // namespace
}  // namespace chainfs::bench

int main(int argc, char** argv) { return chainfs::bench::Main(argc, argv); }
