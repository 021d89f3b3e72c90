// FsState: everything a mounted chainfs owns, reached from libfuse's
// userdata pointer (never from globals).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "core/chain/inspector.h"
#include "core/domain/domain_catalog.h"
#include "core/pool/catalog.h"
#include "core/render/metrics.h"
#include "fs/chain_cache.h"
#include "fs/dir_gate.h"
#include "fs/event_log.h"
#include "fs/kernel_cache.h"
#include "fs/node_table.h"
#include "fs/rebase_jobs.h"
#include "fs/tree.h"
#include "fs/write_ops.h"

struct fuse_session;

namespace chainfs::fs {

// Settings of one mount.
struct MountConfig {
  std::string mountpoint;      // absolute
  bool read_only = false;      // -o ro: every change gives EROFS
  // Kernel cache lifetime, in seconds, of the nodes whose images are all
  // in directories inotify fully reports (others, and the control files,
  // always get 0: revalidated on every access). inotify invalidation keeps
  // the kernel's copy current; 0 makes every access revalidate.
  double cache_timeout = kDefaultCacheTimeout;
  static constexpr double kDefaultCacheTimeout = 3600.0;
  // Fault injection for the tests (environment CHAINFS_FAULT_WEDGE_RENAME=1):
  // a rename sends an entry invalidation of its own directory before it
  // replies, the call libfuse forbids there, so that the daemon blocks in
  // the kernel as a wedged daemon does (fs/wedge_guardian.h).
  bool fault_wedge_rename = false;
};

// The FUSE operations counted in .chainfs/stats.
enum class Op : int {
  kInit, kLookup, kForget, kGetattr, kSetattr, kReadlink, kOpendir, kReaddir, kReleasedir,
  kOpen, kRead, kRelease, kStatfs, kWrite,
  // The write side (fs/write_ops.h).
  kSymlink, kRename, kRmdir, kMkdir, kUnlink, kCreate, kFlush,
  kLseek,
  kCount
};
// Names an Op ("lookup").
const char* OpName(Op op);

// Holds the engine objects and the mount's own state.
// Thread-safe: every member is (see each class); `session` is set once
// before the loop starts.
class FsState {
 public:
  explicit FsState(MountConfig config, bool echo_log);
  FsState(const FsState&) = delete;
  FsState& operator=(const FsState&) = delete;

  // Counts one call of `op`.
  void Count(Op op) { ops_[static_cast<int>(op)].fetch_add(1, std::memory_order_relaxed); }
  // Counts one push of file pages into the kernel (PushPages): taken or not.
  void CountPush(bool taken) {
    (taken ? pushed_ : push_missed_).fetch_add(1, std::memory_order_relaxed);
  }
  // Counts one failed operation.
  void CountError() { errors_.fetch_add(1, std::memory_order_relaxed); }
  // Renders .chainfs/stats: "name value\n" lines.
  std::string RenderStats() const;
  // The same figures, for .chainfs/metrics.
  std::vector<core::StatFigure> StatFigures() const;

  const MountConfig config;
  core::ImageInspector inspector;
  core::PoolCatalog catalog;
  core::DomainCatalog domains;  // MOUNT/.domains (DESIGN section 8)
  EventLog log;
  ChainCache chains;
  NodeTable nodes;
  KernelCache kcache;  // what the kernel may cache, by inode
  DirGate gate;        // requests in flight, for safe invalidations
  WriteState writes;  // open files of the write side, and its change lock
  Tree tree;
  struct fuse_session* session = nullptr;
  // Background rebases (VOL/rebase). Declared last so that it is destroyed
  // first: its destructor joins jobs that use the members above.
  RebaseJobs rebases;

 private:
  std::atomic<uint64_t> ops_[static_cast<int>(Op::kCount)] = {};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> pushed_{0}, push_missed_{0};
};

}  // namespace chainfs::fs
