// EventLog: the last 1000 events, served as .chainfs/log and, when the
// daemon runs in the foreground, echoed to stderr.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>

namespace chainfs::fs {

// Thread-safe. Lock order: mu_ only; never held while calling out.
class EventLog {
 public:
  static constexpr size_t kMaxEvents = 1000;

  explicit EventLog(bool echo_to_stderr = false) : echo_(echo_to_stderr) {}

  // Records one event: `op` ("lookup", "open", "scan", "mount"...), the
  // mount-relative path ("/" for the root), the result ("ok", "EACCES") and a
  // one-line reason. Control characters and invalid UTF-8 in any of them are
  // escaped C-style (core::OneLine: "\n", "\r", "\x1b"), never passed on.
  void Add(const std::string& op, const std::string& path, const std::string& result,
           const std::string& reason);
  // Records the event only the first time `key` is seen (bounded memory),
  // so that a skipped pool entry is not logged on every rescan.
  void AddOnce(const std::string& key, const std::string& op, const std::string& path,
               const std::string& result, const std::string& reason);
  // Returns the log: one "TIME OP PATH RESULT REASON\n" line per event,
  // oldest first; TIME is UTC ISO 8601 with milliseconds.
  std::string Render() const;
  // Returns how many events were ever recorded.
  uint64_t total() const;
  // Enables or disables echoing to stderr (off once daemonized).
  void set_echo(bool echo);

 private:
  mutable std::mutex mu_;
  std::deque<std::string> lines_;  // guarded by mu_
  std::set<std::string> once_;     // guarded by mu_
  uint64_t total_ = 0;             // guarded by mu_
  bool echo_;                      // guarded by mu_
};

}  // namespace chainfs::fs
