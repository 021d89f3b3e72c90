// bench_data: issue 11's data-view benchmark. Builds a 3-image qcow2 chain of random
// data (1 GiB by default; bench_util's MakeRandomChain, as bench_rebase) and serves its
// guest bytes three ways at once, read-only:
//   chainfs   MOUNT/p/top.qcow2/data (a fresh `chainfs --pool p=DIR` mount)
//   qsd       qemu-storage-daemon's FUSE export of the same chain (read-only blockdevs)
//   nbdfuse   nbdfuse (libnbd-bin) over `qemu-nbd -r` on a Unix socket
// then, in one run, for each (the order rotates between rounds):
//   cold      dd if=FILE of=/dev/null bs=1M after sync + drop_caches
//   warm      the same dd again
//   fio       random 4 KiB reads, 4 jobs, psync, after drop_caches (fio --invalidate=1),
//             then the same with O_DIRECT (no read served from the page cache)
// Checks every server's bytes against `qemu-img convert -O raw` (cmp) first, and prints
// times, throughput, IOPS, ratios and each server's peak RSS, plus chainfs's FUSE requests.
// Needs root (FUSE, drop_caches) and the packages fio and libnbd-bin.
// Usage: bench_data [--size-mib N] [--fio-seconds N] [--rounds N] [--dir DIR] [--keep]
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/bench_util.h"
#include "core/util/json.h"

namespace chainfs::bench {
namespace {

using Clock = std::chrono::steady_clock;

// One way of serving the chain: the file to read and the processes behind it.
struct Server {
  std::string name;
  std::string file;
  std::vector<pid_t> pids;  // peak RSS summed over these
  double cold = 0, warm = 0, iops = 0, direct = 0;
  std::vector<double> colds, warms, iopss, directs;
};

// Waits up to 20 s for `path` to exist with `size` bytes.
bool WaitForFile(const std::string& path, uint64_t size) {
  for (int i = 0; i < 1000; ++i) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && uint64_t(st.st_size) == size) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fprintf(stderr, "bench_data: %s did not appear with %llu bytes\n", path.c_str(),
               (unsigned long long)size);
  return false;
}

// Ends a process this bench started: SIGTERM, then SIGKILL after 10 s.
void Stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// Times one `dd if=FILE of=/dev/null bs=1M`; negative on failure.
double TimeDd(const std::string& file) {
  auto start = Clock::now();
  int rc = RunQuiet({"dd", "if=" + file, "of=/dev/null", "bs=1M"});
  return rc == 0 ? SecondsSince(start) : -1;
}

// Runs fio's random 4 KiB reads on `file`; returns the read IOPS (0 on
// failure). `direct`: with O_DIRECT, so that no read is served from the
// page cache (every one reaches the server).
double FioIops(const std::string& file, int seconds, bool direct) {
  std::string out;
  int rc = RunQuiet({"fio", "--name=randread", "--filename=" + file, "--readonly", "--rw=randread",
                     "--bs=4k", "--numjobs=4", "--ioengine=psync", "--invalidate=1",
                     std::string("--direct=") + (direct ? "1" : "0"), "--time_based",
                     "--runtime=" + std::to_string(seconds), "--group_reporting",
                     "--output-format=json"},
                    &out);
  if (rc != 0) return 0;
  // fio may print notes before the JSON document.
  size_t at = out.find('{');
  if (at == std::string::npos) return 0;
  core::Result<core::Json> doc = core::Json::Parse(std::string_view(out).substr(at));
  if (!doc.ok()) return 0;
  const core::Json* jobs = doc->Find("jobs");
  if (!jobs || !jobs->is_array() || jobs->as_array().empty()) return 0;
  const core::Json* read = jobs->as_array()[0].Find("read");
  const core::Json* iops = read ? read->Find("iops") : nullptr;
  return iops && iops->is_number() ? iops->as_double() : 0;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  uint64_t size_mib = 1024;
  int fio_seconds = 10, rounds = 3;
  std::string parent;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--size-mib" && i + 1 < argc) {
      size_mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--fio-seconds" && i + 1 < argc) {
      fio_seconds = std::atoi(argv[++i]);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--dir" && i + 1 < argc) {
      parent = argv[++i];
    } else if (a == "--keep") {
      keep = true;
    } else {
      std::fprintf(stderr,
                   "usage: bench_data [--size-mib N] [--fio-seconds N] [--rounds N] [--dir DIR] "
                   "[--keep]\n");
      return 2;
    }
  }
  for (const char* tool : {"fio", "nbdfuse", "qemu-nbd", "qemu-storage-daemon"}) {
    if (RunQuiet({"sh", "-c", std::string("command -v ") + tool}) != 0) {
      std::fprintf(stderr, "bench_data: %s is missing (apt-get install fio libnbd-bin qemu-utils "
                   "qemu-system-common)\n", tool);
      return 2;
    }
  }
  const uint64_t size = size_mib << 20;
  if (!parent.empty()) setenv("TMPDIR", parent.c_str(), 1);
  const std::string dir = MakeBenchDir("chainfs-bench-data");
  std::printf("bench_data: %llu MiB 3-image chain in %s, %d rounds, fio %d s each\n",
              (unsigned long long)size_mib, dir.c_str(), rounds, fio_seconds);
  auto made = Clock::now();
  RandomChain chain;
  if (!MakeRandomChain(dir, size, &chain)) {
    RemoveTree(dir);
    return 1;
  }
  PrintRow("chain made (qemu-img, qemu-io)", SecondsSince(made));

  // The three servers. The pool folder holds only the chain and its raw export.
  int rc = 0;
  std::vector<pid_t> started;
  // The other servers' files live outside the pool folder chainfs scans.
  const std::string serve_dir = MakeBenchDir("chainfs-bench-serve");
  const std::string exp_file = serve_dir + "/qsd-export", sock = serve_dir + "/nbd.sock";
  const std::string nbd_dir = MakeBenchDir("chainfs-bench-nbdfuse");
  {
    Mount mount({"--pool", "p=" + dir});
    std::vector<Server> servers(3);
    servers[0].name = "chainfs";
    servers[0].file = mount.path() + "/p/top.qcow2/data";
    servers[0].pids = {mount.pid()};
    RunQuiet({"touch", exp_file});
    pid_t qsd = Spawn({"qemu-storage-daemon", "--blockdev",
                       "driver=file,node-name=f0,filename=" + chain.top + ",read-only=on",
                       "--blockdev", "driver=qcow2,node-name=q0,file=f0,read-only=on", "--export",
                       "type=fuse,id=e0,node-name=q0,mountpoint=" + exp_file});
    started.push_back(qsd);
    servers[1].name = "qsd";
    servers[1].file = exp_file;
    servers[1].pids = {qsd};
    pid_t nbd = Spawn({"qemu-nbd", "-r", "-t", "-f", "qcow2", "-k", sock, chain.top});
    started.push_back(nbd);
    pid_t fuse = -1;
    for (int i = 0; i < 500; ++i) {
      struct stat st;
      if (::stat(sock.c_str(), &st) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    fuse = Spawn({"nbdfuse", "-r", nbd_dir + "/nbd", "--unix", sock});
    started.push_back(fuse);
    servers[2].name = "nbdfuse";
    servers[2].file = nbd_dir + "/nbd";
    servers[2].pids = {nbd, fuse};

    bool ok = mount.ok();
    for (const Server& s : servers) ok = ok && WaitForFile(s.file, size);
    for (const Server& s : servers) {
      if (!ok) break;
      if (RunQuiet({"cmp", "-s", s.file, chain.top_raw}) != 0) {
        std::fprintf(stderr, "bench_data: %s serves other bytes than qemu-img convert\n",
                     s.name.c_str());
        ok = false;
      }
    }
    if (ok) std::printf("  every server's bytes = qemu-img convert -O raw (cmp)\n");
    const long reads_before = ok ? ReadStats(mount.path())["fuse_read"] : 0;
    for (int round = 0; round < rounds && ok; ++round) {
      for (size_t k = 0; k < servers.size() && ok; ++k) {
        Server& s = servers[(k + size_t(round)) % servers.size()];
        ok = DropCaches();
        if (!ok) std::fprintf(stderr, "bench_data: drop_caches needs root\n");
        double cold = ok ? TimeDd(s.file) : -1;
        double warm = ok ? TimeDd(s.file) : -1;
        ok = ok && cold > 0 && warm > 0;
        if (!ok) break;
        s.colds.push_back(cold);
        s.warms.push_back(warm);
      }
      for (size_t k = 0; k < servers.size() && ok; ++k) {
        Server& s = servers[(k + size_t(round)) % servers.size()];
        ok = DropCaches();
        double iops = ok ? FioIops(s.file, fio_seconds, false) : 0;
        ok = ok && DropCaches();
        double direct = ok ? FioIops(s.file, fio_seconds, true) : 0;
        ok = ok && iops > 0 && direct > 0;
        if (!ok) std::fprintf(stderr, "bench_data: fio on %s failed\n", s.name.c_str());
        s.iopss.push_back(iops);
        s.directs.push_back(direct);
      }
    }
    if (ok) {
      const double mib = double(size_mib);
      std::printf("\n  %-9s %-22s %-22s %-12s %-12s %s\n", "", "cold dd bs=1M (median)",
                  "warm dd (median)", "fio 4k IOPS", "O_DIRECT", "peak RSS");
      for (Server& s : servers) {
        s.cold = Median(s.colds);
        s.warm = Median(s.warms);
        s.iops = Median(s.iopss);
        s.direct = Median(s.directs);
        long rss = 0;
        for (pid_t p : s.pids) rss += PeakRssKiB(p);
        std::printf("  %-9s %7.3f s %7.0f MiB/s  %7.3f s %7.0f MiB/s  %9.0f   %9.0f    %.1f MiB\n",
                    s.name.c_str(), s.cold, mib / s.cold, s.warm, mib / s.warm, s.iops, s.direct,
                    double(rss) / 1024);
        std::string all;
        for (size_t r = 0; r < s.colds.size(); ++r) {
          all += " " + std::to_string(s.colds[r]).substr(0, 5) + "/" +
                 std::to_string(s.warms[r]).substr(0, 5) + "/" + std::to_string(int(s.iopss[r])) +
                 "/" + std::to_string(int(s.directs[r]));
        }
        std::printf("  %-9s every round (cold s / warm s / IOPS / O_DIRECT IOPS):%s\n", "", all.c_str());
      }
      auto worst = [](const std::vector<double>& v, bool high) {
        return high ? *std::max_element(v.begin(), v.end()) : *std::min_element(v.begin(), v.end());
      };
      std::printf("\n  cold: qsd/chainfs %.2fx, nbdfuse/chainfs %.2fx (least favourable round pair: "
                  "%.2fx, %.2fx)\n",
                  servers[1].cold / servers[0].cold, servers[2].cold / servers[0].cold,
                  worst(servers[1].colds, false) / worst(servers[0].colds, true),
                  worst(servers[2].colds, false) / worst(servers[0].colds, true));
      std::printf("  warm: qsd/chainfs %.2fx, nbdfuse/chainfs %.2fx\n",
                  servers[1].warm / servers[0].warm, servers[2].warm / servers[0].warm);
      std::printf("  fio:  chainfs/qsd %.2fx, chainfs/nbdfuse %.2fx (least favourable: %.2fx, %.2fx)\n",
                  servers[0].iops / servers[1].iops, servers[0].iops / servers[2].iops,
                  worst(servers[0].iopss, false) / worst(servers[1].iopss, true),
                  worst(servers[0].iopss, false) / worst(servers[2].iopss, true));
      std::printf("  fio O_DIRECT: chainfs/qsd %.2fx, chainfs/nbdfuse %.2fx (least favourable: %.2fx, %.2fx)\n",
                  servers[0].direct / servers[1].direct, servers[0].direct / servers[2].direct,
                  worst(servers[0].directs, false) / worst(servers[1].directs, true),
                  worst(servers[0].directs, false) / worst(servers[2].directs, true));
      std::printf("  chainfs FUSE READ requests during the measurements: %ld\n",
                  ReadStats(mount.path())["fuse_read"] - reads_before);
    } else {
      rc = 1;
    }
    RunQuiet({"fusermount3", "-u", nbd_dir + "/nbd"});
    RunQuiet({"fusermount3", "-u", nbd_dir});
    for (pid_t p : started) Stop(p);
    RunQuiet({"fusermount3", "-u", exp_file});
  }  // chainfs unmounts here
  RemoveTree(serve_dir);
  RemoveTree(nbd_dir);
  if (!keep) {
    RemoveTree(dir);
  } else {
    std::printf("kept %s\n", dir.c_str());
  }
  return rc;
}

}  // namespace
}  // namespace chainfs::bench

int main(int argc, char** argv) { return chainfs::bench::Main(argc, argv); }
