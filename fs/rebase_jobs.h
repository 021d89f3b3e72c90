// RebaseJobs: the background jobs behind VOL/rebase (DESIGN section 2).
// `echo PATH > VOL/rebase` validates what it can and starts a job here; the
// job runs core::SafeRebase on a thread of its own, so the write(2) returns
// at once, and VOL/rebase renders the job's progress while it runs and its
// last result after. One job per image at a time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/status.h"

namespace chainfs::fs {

// The name of the volume file that starts and shows data-preserving rebases.
inline constexpr const char* kRebaseFileName = "rebase";

// How long an unmount waits for running rebases to finish (SafeRebase
// cannot be stopped between chunks; after this the daemon exits anyway,
// which is as safe as a crash: the image keeps its old backing and content).
inline constexpr std::chrono::seconds kRebaseShutdownWait{60};

// Thread-safe. Lock order: mu_ only; never held while a job's work or its
// `finished` callback runs.
class RebaseJobs {
 public:
  // Reports progress of a job: guest bytes examined and the guest size.
  using Progress = std::function<void(uint64_t done, uint64_t total)>;
  // The work of a job; runs on the job's thread.
  using Work = std::function<core::Status(const Progress& progress)>;
  // Called on the job's thread after `Work` returned, with its result and
  // the seconds it took (before the result becomes visible in Render).
  using Finished = std::function<void(const core::Status& result, double seconds)>;

  RebaseJobs() = default;
  RebaseJobs(const RebaseJobs&) = delete;
  RebaseJobs& operator=(const RebaseJobs&) = delete;
  // Waits for every job (unbounded; call WaitAll first to bound it).
  ~RebaseJobs();

  // Starts a job rebasing the image at absolute `image`. `target` is the
  // resolved host path of the new backing ("" for a flatten or a network
  // source), `new_backing` the string to record (nullopt = flatten).
  // The job's total is the image's guest size, read from its header here,
  // so that its progress shows it before `work` first reports; `work`'s
  // reports replace it. kBusy if a job for `image` is running.
  core::Status Start(const std::string& image, const std::string& target,
                     std::optional<std::string> new_backing, Work work, Finished finished);
  // Returns true if a running job rebases `path` or rebases onto `path`
  // (the write side refuses other changes of those files meanwhile).
  bool Involves(const std::string& path) const;
  // Returns true if a job for `image` is running.
  bool Running(const std::string& image) const;
  // Renders VOL/rebase for the image at `image`: progress while a job
  // runs, the last result after, "" if none ever ran (see chainfs(1)).
  std::string Render(const std::string& image) const;
  // Waits until no job runs, at most `timeout`; returns true if none runs.
  bool WaitAll(std::chrono::milliseconds timeout);

 private:
  struct Job {
    std::string image;
    std::string target;
    std::optional<std::string> new_backing;
    uint64_t done = 0;
    uint64_t total = 0;
    bool running = true;
    std::string result;  // rendered result once finished
    std::thread thread;
  };
  // Joins the threads of finished jobs; takes mu_.
  void Reap();

  mutable std::mutex mu_;
  std::condition_variable cv_;                  // signalled when a job finishes
  std::list<Job> jobs_;                         // guarded by mu_; running and unjoined
  std::map<std::string, std::string> results_;  // guarded by mu_; image -> last result
};

// Renders the progress line of a running job ("running: onto 'B' 45%
// (471859200/1073741824 bytes)\n", "running: flatten ...").
std::string RenderRebaseProgress(const std::optional<std::string>& new_backing, uint64_t done,
                                 uint64_t total);
// Renders the last result of a job ("done: rebased onto 'B' in 3.2 s\n",
// "done: flattened in 0.4 s\n", "failed: EIO: <reason>\n").
std::string RenderRebaseResult(const std::optional<std::string>& new_backing,
                               const core::Status& result, double seconds);

}  // namespace chainfs::fs
