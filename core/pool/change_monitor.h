// ChangeMonitor: lets caches of file metadata skip re-stat'ing files while a
// change-notification source (the mount's inotify watcher) guarantees that
// nothing it watches has changed. The engine only consumes the interface;
// the mount implements it (fs/watcher.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace chainfs::core {

// Implementations are thread-safe.
class ChangeMonitor {
 public:
  virtual ~ChangeMonitor() = default;

  // Returns the current change epoch when no change notification is waiting
  // to be processed or being processed at the moment of the call; nullopt
  // otherwise. Contract: if QuietEpoch() returned the same value at times
  // t1 < t2, and Watches(dir) was true at t1, then no entry of `dir` was
  // created, removed, renamed, written or had its attributes changed
  // between t1 and t2. The kernel queues inotify events before the system
  // call that made the change returns, so this holds for every change that
  // completed before t2 -- which is what makes "visible on the next access"
  // exact rather than eventual.
  virtual std::optional<uint64_t> QuietEpoch() const = 0;

  // Returns true if directory `dir` (absolute, lexically normalized) is
  // watched and its filesystem reports every change (local filesystems;
  // never network ones, whose remote changes inotify does not see).
  virtual bool Watches(const std::string& dir) const = 0;
};

namespace detail {
// Per-thread memo of QuietEpoch() inside a QuietEpochScope.
struct QuietEpochMemo {
  int depth = 0;
  const ChangeMonitor* owner = nullptr;  // whose answer `value` is; null: none yet
  std::optional<uint64_t> value;
};
inline thread_local QuietEpochMemo quiet_epoch_memo;
}  // namespace detail

// Marks the current thread as serving one read-only request: inside the
// scope, a monitor may answer QuietEpoch() with its first answer in the
// scope (one system call per request instead of one per cache lookup). The
// request is then answered as of its start, which is still "the next
// access" for any change completed before it. Never open one around code
// that changes images and then reads caches: it would see its own change
// late. Nestable; not copyable.
class QuietEpochScope {
 public:
  QuietEpochScope() {
    if (detail::quiet_epoch_memo.depth++ == 0) detail::quiet_epoch_memo.owner = nullptr;
  }
  ~QuietEpochScope() {
    if (--detail::quiet_epoch_memo.depth == 0) detail::quiet_epoch_memo.owner = nullptr;
  }
  QuietEpochScope(const QuietEpochScope&) = delete;
  QuietEpochScope& operator=(const QuietEpochScope&) = delete;
};

}  // namespace chainfs::core
