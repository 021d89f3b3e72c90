// bench_create: issue 4's overlay-creation benchmark. Side by side in one
// run, interleaved round by round so that noise hits every method alike,
// each method makes N (default 200) qcow2 overlays of one 1 GiB qcow2 base:
//   (a) symlink(2) into a chainfs mount, timed in this process
//   (b) `ln -s base.qcow2 MOUNT/pool/NEW`, a spawned ln
//   (c) `chainctl create -b base.qcow2 -F qcow2 NEW`
//   (d) `qemu-img create -q -f qcow2 -F qcow2 -b base.qcow2 NEW`
// and prints the median, mean and p90 of each with the ratio of qemu-img's
// median to it. Every overlay is checked afterwards (backing string and
// format read back with the engine). Run as root (FUSE).
// Usage: bench_create [--count N]
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "core/chain/inspector.h"
#include "core/format/qcow2/writer.h"

namespace chainfs::bench {
namespace {

struct Series {
  std::string name;
  std::vector<double> seconds;
  int failures = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  size_t i = size_t(p * double(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0.0 : sum / double(v.size());
}

template <typename F>
void Time(Series& s, F&& f) {
  auto start = std::chrono::steady_clock::now();
  bool ok = f();
  double t = SecondsSince(start);
  if (ok) {
    s.seconds.push_back(t);
  } else {
    ++s.failures;
  }
}

// Checks that `path` is a qcow2 overlay recording base.qcow2 / qcow2.
bool CheckOverlay(core::ImageInspector& inspector, const std::string& path,
                  const std::string& backing) {
  auto in = inspector.Inspect(path);
  return in.ok() && (*in)->meta && (*in)->format == "qcow2" && (*in)->meta->backing == backing &&
         (*in)->meta->backing_format == std::string("qcow2");
}

int Main(int argc, char** argv) {
  int count = 200;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--count" && i + 1 < argc) {
      count = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_create [--count N]\n");
      return 2;
    }
  }
  std::string root = MakeBenchDir("chainfs-bench-create");
  std::string pool = root + "/pool";    // the mounted pool: base + ln -s overlays
  std::string plain = root + "/plain";  // chainctl and qemu-img outputs
  if (::mkdir(pool.c_str(), 0755) != 0 || ::mkdir(plain.c_str(), 0755) != 0) {
    std::fprintf(stderr, "cannot make folders under %s\n", root.c_str());
    return 1;
  }
  core::Qcow2CreateOptions base;
  base.size = 1ull << 30;
  for (const std::string& dir : {pool, plain}) {
    core::Status s = core::CreateQcow2(dir + "/base.qcow2", base);
    if (!s.ok()) {
      std::fprintf(stderr, "cannot create the base: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  Mount mount({"--pool", "bench=" + pool});
  if (!mount.ok()) {
    std::fprintf(stderr, "cannot mount chainfs (run as root, with /dev/fuse)\n");
    RemoveTree(root);
    return 1;
  }
  const std::string mpool = mount.path() + "/bench";

  Series syscall{"ln -s in the mount (symlink(2) in-process)", {}, 0};
  Series ln{"ln -s in the mount (spawned ln)", {}, 0};
  Series ctl{"chainctl create -b base.qcow2 -F qcow2 NEW", {}, 0};
  Series qemu{"qemu-img create -f qcow2 -F qcow2 -b base.qcow2 NEW", {}, 0};
  for (int i = 0; i < count; ++i) {
    std::string n = std::to_string(i);
    Time(syscall, [&] { return ::symlink("base.qcow2", (mpool + "/sys-" + n).c_str()) == 0; });
    Time(ln, [&] { return RunQuiet({"ln", "-s", "base.qcow2", mpool + "/ln-" + n}) == 0; });
#ifdef CHAINCTL_BINARY
    Time(ctl, [&] {
      return RunQuiet({CHAINCTL_BINARY, "create", "-b", "base.qcow2", "-F", "qcow2",
                       plain + "/ctl-" + n}) == 0;
    });
#endif
    Time(qemu, [&] {
      return RunQuiet({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2",
                       plain + "/qemu-" + n}) == 0;
    });
  }
  mount.Unmount();

  // Every overlay must be what was asked for.
  core::ImageInspector inspector;
  int bad = 0;
  for (int i = 0; i < count; ++i) {
    std::string n = std::to_string(i);
    for (const std::string& p : {pool + "/sys-" + n, pool + "/ln-" + n, plain + "/qemu-" + n}) {
      if (!CheckOverlay(inspector, p, "base.qcow2")) ++bad;
    }
#ifdef CHAINCTL_BINARY
    if (!CheckOverlay(inspector, plain + "/ctl-" + n, "base.qcow2")) ++bad;
#endif
  }

  std::printf(
      "bench_create: %d qcow2 overlays of a 1 GiB qcow2 base per method, "
      "interleaved; times per overlay\n",
      count);
  std::printf("  %-52s %10s %10s %10s %9s\n", "method", "median", "mean", "p90", "qemu/this");
  double qemu_median = Percentile(qemu.seconds, 0.5);
  for (Series* s : {&syscall, &ln, &ctl, &qemu}) {
    if (s->seconds.empty()) {
      std::printf("  %-52s %10s\n", s->name.c_str(), "(not run)");
      continue;
    }
    double median = Percentile(s->seconds, 0.5);
    std::printf("  %-52s %8.3f ms %7.3f ms %7.3f ms %8.1fx%s\n", s->name.c_str(), median * 1e3,
                Mean(s->seconds) * 1e3, Percentile(s->seconds, 0.9) * 1e3,
                median > 0 ? qemu_median / median : 0.0,
                s->failures ? (" (" + std::to_string(s->failures) + " failed)").c_str() : "");
  }
  std::printf("  overlays checked: %d bad of %d\n", bad,
              count * (ctl.seconds.empty() && ctl.failures == 0 ? 3 : 4));
  double target = Percentile(syscall.seconds, 0.5);
  std::printf("  target (ln -s at least 5x faster than qemu-img create, median): %s\n",
              target > 0 && qemu_median / target >= 5.0 ? "met" : "NOT met");
  RemoveTree(root);
  return bad == 0 && syscall.failures == 0 && ln.failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace chainfs::bench

int main(int argc, char** argv) { return chainfs::bench::Main(argc, argv); }
