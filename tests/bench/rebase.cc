// bench_rebase: issue 5's benchmark. Builds a 1 GiB 3-image qcow2 chain of
// random data (base ~80% allocated, mid overwrites ~25%, top ~10%; the
// overlays made with `qemu-img convert -B`, so they hold only what differs),
// then measures side by side in one run, warm page cache:
//   (a) safe rebase of top onto base (dropping mid): chainfs's SafeRebase
//       vs `qemu-img rebase -b base -F qcow2 top`, each on a fresh copy of
//       top; both results are checked with qemu-img check and compare;
//   (b) a full sequential read of the chain: ChainReader::ReadStream into a
//       file on /dev/shm vs `qemu-img convert -O raw` into a file on /dev/shm.
// Prints the best of N runs of each and the ratios (qemu-img / chainfs:
// above 1 means chainfs is faster).
// Usage: bench_rebase [--size-mib N] [--runs N] [--dir DIR] [--keep]
#include "core/write/rebase.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/data/chain_reader.h"

namespace chainfs::bench {
namespace {

// Zero blocks of this size are left as holes by the read benchmark.
constexpr size_t kBlock = 64 * 1024;

bool Check(bool ok, const char* what) {
  if (!ok) std::fprintf(stderr, "bench_rebase: %s failed\n", what);
  return ok;
}

bool Copy(const std::string& from, const std::string& to) {
  return RunQuiet({"cp", "--sparse=always", from, to}) == 0;
}

// Writes the chain's guest bytes to `out` as `qemu-img convert -O raw`
// does: zero blocks (64 KiB) are left as holes, the file gets the full size.
bool ReadChain(const std::string& top, const std::string& out) {
  core::ImageInspector inspector;
  core::Chain chain = core::ResolveChain(inspector, top);
  auto reader = core::ChainReader::Open(chain);
  if (!reader.ok()) {
    std::fprintf(stderr, "open chain: %s\n", reader.status().ToString().c_str());
    return false;
  }
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  auto zero = [](const uint8_t* p, size_t n) {
    return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
  };
  core::Status s = (*reader)->ReadStream(
      0, UINT64_MAX,
      [fd, &zero](uint64_t offset, std::span<const uint8_t> bytes) -> core::Status {
        size_t i = 0;
        while (i < bytes.size()) {
          // One run of non-zero blocks, written with one pwrite.
          size_t n = std::min(kBlock, bytes.size() - i);
          if (zero(bytes.data() + i, n)) {
            i += n;
            continue;
          }
          size_t j = i + n;
          while (j < bytes.size()) {
            const size_t m = std::min(kBlock, bytes.size() - j);
            if (zero(bytes.data() + j, m)) break;
            j += m;
          }
          if (::pwrite(fd, bytes.data() + i, j - i, off_t(offset + i)) != ssize_t(j - i)) {
            return core::Status::FromErrno(errno, "write");
          }
          i = j;
        }
        return core::Status::Ok();
      },
      1u << 20);
  if (s.ok() && ::ftruncate(fd, off_t((*reader)->Size())) != 0) {
    s = core::Status::FromErrno(errno, "ftruncate");
  }
  ::close(fd);
  if (!s.ok()) std::fprintf(stderr, "read chain: %s\n", s.ToString().c_str());
  return s.ok();
}

double Best(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  uint64_t size_mib = 1024;
  int runs = 5;
  std::string parent;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--keep") {
      keep = true;
    } else if (a == "--size-mib" && has_value) {
      size_mib = std::max<uint64_t>(16, std::strtoull(argv[++i], nullptr, 10));
    } else if (a == "--runs" && has_value) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--dir" && has_value) {
      parent = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_rebase [--size-mib N] [--runs N] [--dir DIR] [--keep]\n");
      return 2;
    }
  }
  const uint64_t size = size_mib << 20;
  if (!parent.empty()) setenv("TMPDIR", parent.c_str(), 1);
  const std::string dir = MakeBenchDir("chainfs-bench-rebase");
  const std::string shm = "/dev/shm/chainfs-bench-rebase-" + std::to_string(getpid());
  std::printf("bench_rebase: %llu MiB chain in %s, %d runs each\n", (unsigned long long)size_mib,
              dir.c_str(), runs);

  // Build the chain.
  RandomChain chain;
  bool ok = Check(MakeRandomChain(dir, size, &chain), "building the chain");
  const std::string& base = chain.base;
  const std::string& top = chain.top;
  const std::string& top_raw = chain.top_raw;
  const std::string& mid = chain.mid;
  if (!ok) {
    RemoveTree(dir);
    return 1;
  }
  std::string map_out;
  RunQuiet({"du", "-sh", base, mid, top}, &map_out);
  std::printf("%s", map_out.c_str());

  // (a) Safe rebase of top onto base.
  std::vector<double> ours, theirs;
  const std::string work = dir + "/work.qcow2";
  // Each run on a fresh copy of top, synced so no writeback of the copy
  // lands in the timed part; both record the same (absolute) backing.
  auto run_ours = [&]() {
    bool good = Copy(top, work);
    ::sync();
    auto t0 = std::chrono::steady_clock::now();
    core::ImageInspector inspector;
    core::Status s = core::SafeRebase(inspector, work, base, std::string("qcow2"), {});
    ours.push_back(SecondsSince(t0));
    if (!s.ok()) std::fprintf(stderr, "%s\n", s.ToString().c_str());
    good = good && Check(s.ok(), "SafeRebase") &&
           Check(RunQuiet({"qemu-img", "check", work}) == 0, "qemu-img check (chainfs)") &&
           Check(RunQuiet({"qemu-img", "compare", "-F", "raw", work, top_raw}) == 0,
                 "qemu-img compare (chainfs)");
    ::unlink(work.c_str());
    return good;
  };
  auto run_qemu = [&]() {
    bool good = Copy(top, work);
    ::sync();
    auto t0 = std::chrono::steady_clock::now();
    int rc = RunQuiet({"qemu-img", "rebase", "-f", "qcow2", "-b", base, "-F", "qcow2", work});
    theirs.push_back(SecondsSince(t0));
    good = good && Check(rc == 0, "qemu-img rebase") &&
           Check(RunQuiet({"qemu-img", "check", work}) == 0, "qemu-img check (qemu)") &&
           Check(RunQuiet({"qemu-img", "compare", "-F", "raw", work, top_raw}) == 0,
                 "qemu-img compare (qemu)");
    ::unlink(work.c_str());
    return good;
  };
  for (int r = 0; r < runs && ok; ++r) {
    // Alternate who goes first, so neither gets the other's leftovers.
    ok = (r % 2 == 0) ? (run_ours() && run_qemu()) : (run_qemu() && run_ours());
  }

  // (b) Sequential read of the whole chain into tmpfs.
  std::vector<double> read_ours, read_theirs;
  const std::string out = shm + ".raw";
  for (int r = 0; r < runs && ok; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    ok = Check(ReadChain(top, out), "ChainReader read");
    read_ours.push_back(SecondsSince(t0));
    ok = ok && Check(RunQuiet({"cmp", "-s", out, top_raw}) == 0, "cmp (chainfs read)");
    ::unlink(out.c_str());

    t0 = std::chrono::steady_clock::now();
    int rc = RunQuiet({"qemu-img", "convert", "-O", "raw", top, out});
    read_theirs.push_back(SecondsSince(t0));
    ok = ok && Check(rc == 0, "qemu-img convert");
    ::unlink(out.c_str());
  }

  if (ok) {
    std::printf("\nsafe rebase of a %llu MiB 3-image chain (top onto base), best of %d\n",
                (unsigned long long)size_mib, runs);
    PrintRow("chainfs SafeRebase", Best(ours), fmt::format("median {:.3f} s", Median(ours)));
    PrintRow("qemu-img rebase", Best(theirs), fmt::format("median {:.3f} s", Median(theirs)));
    std::printf("  ratio qemu-img / chainfs: %.2fx (best), %.2fx (median)\n",
                Best(theirs) / Best(ours), Median(theirs) / Median(ours));
    std::printf("\nsequential read of the chain into /dev/shm, best of %d\n", runs);
    PrintRow("chainfs ChainReader::ReadStream", Best(read_ours),
             fmt::format("median {:.3f} s, {:.0f} MiB/s", Median(read_ours),
                         double(size_mib) / Best(read_ours)));
    PrintRow("qemu-img convert -O raw", Best(read_theirs),
             fmt::format("median {:.3f} s, {:.0f} MiB/s", Median(read_theirs),
                         double(size_mib) / Best(read_theirs)));
    std::printf("  ratio qemu-img / chainfs: %.2fx (best), %.2fx (median)\n",
                Best(read_theirs) / Best(read_ours), Median(read_theirs) / Median(read_ours));
  }
  ::unlink(out.c_str());
  if (keep) {
    std::printf("kept %s\n", dir.c_str());
  } else {
    RemoveTree(dir);
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace chainfs::bench

int main(int argc, char** argv) { return chainfs::bench::Main(argc, argv); }
