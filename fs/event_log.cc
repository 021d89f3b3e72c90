#include "fs/event_log.h"

#include <fmt/format.h>
#include <time.h>

#include <cstdio>

#include "core/util/escape.h"

namespace chainfs::fs {

namespace {

constexpr size_t kMaxOnceKeys = 100000;

std::string Now() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm {};
  gmtime_r(&ts.tv_sec, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

}  // namespace

void EventLog::Add(const std::string& op, const std::string& path, const std::string& result,
                   const std::string& reason) {
  // Values may carry bytes from images and file names: control characters
  // are escaped ("\r"), so that no value can forge a line or a terminal
  // sequence; reasons already built from escaped tokens are kept as they are.
  using core::OneLine;
  std::string line =
      fmt::format("{} {} {} {} {}\n", Now(), OneLine(op), OneLine(path.empty() ? "-" : path),
                  OneLine(result), OneLine(reason.empty() ? "-" : reason));
  bool echo = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back(line);
    while (lines_.size() > kMaxEvents) lines_.pop_front();
    ++total_;
    echo = echo_;
  }
  if (echo) std::fprintf(stderr, "chainfs: %s", line.c_str());
}

void EventLog::AddOnce(const std::string& key, const std::string& op, const std::string& path,
                       const std::string& result, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (once_.size() >= kMaxOnceKeys) once_.clear();
    if (!once_.insert(key).second) return;
  }
  Add(op, path, result, reason);
}

std::string EventLog::Render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& line : lines_) out += line;
  return out;
}

uint64_t EventLog::total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

void EventLog::set_echo(bool echo) {
  std::lock_guard<std::mutex> lock(mu_);
  echo_ = echo;
}

}  // namespace chainfs::fs
