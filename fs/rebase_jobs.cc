#include "fs/rebase_jobs.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "core/chain/inspector.h"
#include "fs/errno_map.h"

namespace chainfs::fs {

namespace {

std::string OneLineText(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// Returns the guest size of the image at `path` from its header (one small
// read; 0 if it cannot be read): the total a job shows before its work
// reports one.
uint64_t GuestSize(const std::string& path) {
  core::ImageInspector inspector(1);
  core::Result<std::shared_ptr<const core::Inspection>> in = inspector.Inspect(path);
  if (!in.ok() || !(*in)->meta) return 0;
  return (*in)->meta->virtual_size;
}

}  // namespace

std::string RenderRebaseProgress(const std::optional<std::string>& new_backing, uint64_t done,
                                 uint64_t total) {
  uint64_t percent =
      total == 0 ? 0
                 : std::min<uint64_t>(100, uint64_t(static_cast<long double>(done) * 100 / total));
  std::string what = new_backing ? fmt::format("onto '{}'", OneLineText(*new_backing)) : "flatten";
  return fmt::format("running: {} {}% ({}/{} bytes)\n", what, percent, done, total);
}

std::string RenderRebaseResult(const std::optional<std::string>& new_backing,
                               const core::Status& result, double seconds) {
  if (result.ok()) {
    if (new_backing) {
      return fmt::format("done: rebased onto '{}' in {:.1f} s\n", OneLineText(*new_backing),
                         seconds);
    }
    return fmt::format("done: flattened in {:.1f} s\n", seconds);
  }
  int err = ErrnoFromStatus(result);
  return fmt::format("failed: {}: {}\n", ErrnoName(err == 0 ? EIO : err),
                     OneLineText(result.message()));
}

RebaseJobs::~RebaseJobs() {
  std::list<Job> jobs;
  {
    std::unique_lock<std::mutex> lock(mu_);
    jobs.swap(jobs_);
  }
  for (Job& job : jobs) {
    if (job.thread.joinable()) job.thread.join();
  }
}

void RebaseJobs::Reap() {
  std::list<Job> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      auto next = std::next(it);
      if (!it->running) finished.splice(finished.end(), jobs_, it);
      it = next;
    }
  }
  for (Job& job : finished) {
    if (job.thread.joinable()) job.thread.join();
  }
}

core::Status RebaseJobs::Start(const std::string& image, const std::string& target,
                               std::optional<std::string> new_backing, Work work,
                               Finished finished) {
  Reap();
  // Before the lock (it is I/O): the total is known from the first
  // `cat VOL/rebase` on, not only once the work has opened both chains.
  const uint64_t total = GuestSize(image);
  std::lock_guard<std::mutex> lock(mu_);
  for (const Job& job : jobs_) {
    if (job.running && job.image == image) {
      return core::Error(core::Code::kBusy,
                         "a rebase of '{}' is already running (cat VOL/rebase shows its progress)",
                         image);
    }
  }
  jobs_.emplace_back();
  Job* job = &jobs_.back();  // list nodes keep their address
  job->image = image;
  job->target = target;
  job->new_backing = std::move(new_backing);
  job->total = total;
  job->thread = std::thread([this, job, work = std::move(work), finished = std::move(finished)] {
    auto start = std::chrono::steady_clock::now();
    Progress progress = [this, job](uint64_t done, uint64_t total) {
      std::lock_guard<std::mutex> l(mu_);
      job->done = done;
      if (total > 0) job->total = total;  // else keep the guest size read at the start
    };
    core::Status result = core::Error(core::Code::kIo, "internal error in the rebase job");
    try {
      result = work(progress);
    } catch (const std::exception& e) {
      result = core::Error(core::Code::kIo, "internal error in the rebase job: {}", e.what());
    } catch (...) {
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    try {
      if (finished) finished(result, seconds);
    } catch (...) {
    }
    std::lock_guard<std::mutex> l(mu_);
    results_[job->image] = RenderRebaseResult(job->new_backing, result, seconds);
    job->running = false;
    cv_.notify_all();
  });
  return core::Status::Ok();
}

bool RebaseJobs::Involves(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Job& job : jobs_) {
    if (job.running && (job.image == path || (!job.target.empty() && job.target == path))) {
      return true;
    }
  }
  return false;
}

bool RebaseJobs::Running(const std::string& image) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Job& job : jobs_) {
    if (job.running && job.image == image) return true;
  }
  return false;
}

std::string RebaseJobs::Render(const std::string& image) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Job& job : jobs_) {
    if (job.running && job.image == image) {
      return RenderRebaseProgress(job.new_backing, job.done, job.total);
    }
  }
  auto it = results_.find(image);
  return it == results_.end() ? std::string() : it->second;
}

bool RebaseJobs::WaitAll(std::chrono::milliseconds timeout) {
  bool idle;
  {
    std::unique_lock<std::mutex> lock(mu_);
    idle = cv_.wait_for(lock, timeout, [this] {
      return std::none_of(jobs_.begin(), jobs_.end(), [](const Job& j) { return j.running; });
    });
  }
  if (idle) Reap();
  return idle;
}

}  // namespace chainfs::fs
