// Shared helpers for the benchmarks in tests/bench: timing, child processes,
// mounting chainfs, page-cache control. Benchmarks run by hand, as root.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace chainfs::bench {

// Returns seconds elapsed on a steady clock since `start`.
double SecondsSince(std::chrono::steady_clock::time_point start);

// Runs argv (no shell), stdout and stderr to /dev/null unless `capture` is
// given; returns the exit code (or -1 if it could not start).
int RunQuiet(const std::vector<std::string>& argv, std::string* capture = nullptr);

// Starts argv in the background; returns its pid (or -1).
pid_t Spawn(const std::vector<std::string>& argv);

// Drops the page cache (sync + drop_caches); returns false if not permitted.
bool DropCaches();

// Returns the peak resident set size (VmHWM) of `pid` in KiB, or 0.
long PeakRssKiB(pid_t pid);

// A chainfs mount started with `chainfs -f` in the foreground as a child.
// Unmounts and reaps the child on destruction (or on Unmount()).
class Mount {
 public:
  // Mounts with `args` (pool options) on a fresh temporary mountpoint.
  explicit Mount(const std::vector<std::string>& args);
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  bool ok() const { return pid_ > 0 && mounted_; }
  const std::string& path() const { return mountpoint_; }
  pid_t pid() const { return pid_; }
  // Unmounts (fusermount3 -u) and waits for the daemon to exit.
  void Unmount();

 private:
  std::string mountpoint_;
  pid_t pid_ = -1;
  bool mounted_ = false;
};

// Returns the counters of MOUNT/.chainfs/stats ("name value" lines).
std::map<std::string, long> ReadStats(const std::string& mount);

// Returns a fresh directory under `parent` (default $TMPDIR or /var/tmp).
std::string MakeBenchDir(const std::string& prefix);
// Removes a directory tree.
void RemoveTree(const std::string& path);

// A 3-image qcow2 chain of random data made in DIR: base ~80% allocated,
// mid overwriting ~25%, top ~10% (qemu-io writes of 64 KiB..1 MiB at 4 KiB
// offsets, so clusters are partly copied up), and top_raw, the chain's
// guest bytes as `qemu-img convert -O raw` writes them.
struct RandomChain {
  std::string base, mid, top, top_raw;
};
// Builds it (`size` bytes virtual); false, with a message, on failure.
bool MakeRandomChain(const std::string& dir, uint64_t size, RandomChain* out);

// Prints "name: N.NNN s" in an aligned table row.
void PrintRow(const std::string& name, double seconds, const std::string& note = {});

}  // namespace chainfs::bench
