// Watcher: the daemon's own event thread (Boost.Asio). It watches the pool
// directories (and the directories of chain elements outside the pools)
// with inotify, invalidates the catalog and the kernel's caches, reloads
// pool definitions on SIGHUP and unmounts on SIGTERM/SIGINT.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/pool/catalog.h"
#include "core/pool/change_monitor.h"
#include "fs/state.h"

namespace chainfs::fs {

// Owns one thread running an io_context. Kernel notifications are sent only
// from that thread, never from a FUSE request handler and never while a
// lock is held (the kernel may call back into the filesystem).
//
// It is also the mount's ChangeMonitor: while its inotify queue is empty and
// no batch of events is being applied, caches may trust what they validated
// earlier in the same epoch without re-stat'ing (see change_monitor.h). The
// epoch is a sequence counter: odd while a batch is read and applied, bumped
// to the next even value after, so a reader that sees the same even value
// before and after an empty FIONREAD knows that no event arrived in between.
//
// Thread-safety: Start/Stop from the main thread; WatchDirOf, QuietEpoch and
// Watches from any thread; everything else runs on the asio thread. Lock
// order: dirs_mu_ and watched_mu_ are never held together.
class Watcher : public core::ChangeMonitor {
 public:
  Watcher(FsState& state, core::PoolSources sources);
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Installs the signal handlers, opens inotify, watches the pools and
  // starts the thread. Signals are handled from this call on.
  void Start();
  // Stops the thread and closes inotify. Idempotent.
  void Stop();
  // Asks for a watch on the directory of `path` (an element outside the
  // pools); cheap when the directory is already watched.
  void WatchDirOf(const std::string& path);

  std::optional<uint64_t> QuietEpoch() const override;
  bool Watches(const std::string& dir) const override;

 private:
  void OnSignal(int signo);
  void RequestExit(int signo);
  void Reload();
  void ReadEvents();
  void DrainEvents();
  void HandleEvents(size_t length);
  void ForgetWatch(int wd);
  std::optional<uint64_t> SampleQuietEpoch() const;
  void WatchPools();
  void AddWatch(const std::string& dir, const std::string& pool);
  void ScheduleFlush();
  void Flush();
  // Returns true if the kernel may hold a positive entry `name` in
  // directory `parent` that no longer names what it did.
  bool KernelEntryStale(uint64_t parent, const std::string& name);
  // Sends the entry invalidations that are needed, deferring those of
  // busy directories (DirGate).
  void SendEntryInvalidations(const std::vector<std::pair<uint64_t, std::string>>& entries);
  // Sends the deferred entry invalidations of directories now idle.
  void SendDeferredEntries();

  FsState& state_;
  const core::PoolSources sources_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::posix::stream_descriptor inotify_;
  std::thread thread_;
  bool started_ = false;
  alignas(8) std::array<char, 64 * 1024> buf_{};

  // Asio-thread state.
  std::map<int, std::pair<std::string, std::string>> watches_;  // wd -> (dir, pool or "")
  std::set<std::pair<std::string, std::string>> pending_entries_;  // (pool, name)
  std::set<std::string> pending_paths_;  // files that changed (dir/name)
  bool pending_all_ = false;
  bool pending_domains_ = false;  // a domain or status file changed
  bool flush_armed_ = false;
  bool exiting_ = false;

  std::mutex dirs_mu_;
  std::set<std::string> requested_dirs_;  // guarded by dirs_mu_

  // Even: quiet; odd: a batch of events (or a watch removal) is being
  // applied. Starts odd: nothing is trusted before Start.
  std::atomic<uint64_t> epoch_{1};
  std::atomic<int> inotify_fd_{-1};  // for FIONREAD from request threads
  mutable std::mutex watched_mu_;
  // Normalized directory -> wd, for the watches on filesystems that report
  // every change.
  std::map<std::string, int> trusted_dirs_;  // guarded by watched_mu_
};

}  // namespace chainfs::fs
