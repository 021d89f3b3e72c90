#include "fs/dir_gate.h"

namespace chainfs::fs {

DirGate::Scope::Scope(DirGate& gate, uint64_t ino) : gate_(gate), ino_(ino) {
  if (ino_ != 0) gate_.Enter(ino_);
}

DirGate::Scope::~Scope() {
  if (ino_ != 0) gate_.Leave(ino_);
}

void DirGate::SetIdleCallback(std::function<void()> callback) {
  std::lock_guard<std::mutex> lock(mu_);
  on_idle_ = std::move(callback);
}

void DirGate::Enter(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mu_);
  ++busy_[ino];
}

void DirGate::Leave(uint64_t ino) {
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = busy_.find(ino);
    if (it == busy_.end()) return;
    if (--it->second > 0) return;
    busy_.erase(it);
    auto d = deferred_.lower_bound({ino, std::string()});
    if (d != deferred_.end() && d->first == ino) wake = on_idle_;
  }
  if (wake) wake();
}

bool DirGate::Busy(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_.count(ino) != 0;
}

bool DirGate::DeferIfBusy(uint64_t dir, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  if (busy_.count(dir) == 0) return false;
  deferred_.emplace(dir, name);
  return true;
}

std::vector<std::pair<uint64_t, std::string>> DirGate::TakeIdleDeferred() {
  std::vector<std::pair<uint64_t, std::string>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = deferred_.begin(); it != deferred_.end();) {
    if (busy_.count(it->first) != 0) {
      ++it;
      continue;
    }
    out.push_back(*it);
    it = deferred_.erase(it);
  }
  return out;
}

size_t DirGate::deferred() const {
  std::lock_guard<std::mutex> lock(mu_);
  return deferred_.size();
}

void DirGate::NoteDropped(uint64_t dir, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  dropped_.emplace(dir, name);
  dropped_count_.store(dropped_.size(), std::memory_order_relaxed);
}

void DirGate::ClearDropped(uint64_t dir, const std::string& name) {
  if (dropped_count_.load(std::memory_order_relaxed) == 0) return;  // lookups: the hot path
  std::lock_guard<std::mutex> lock(mu_);
  dropped_.erase({dir, name});
  dropped_count_.store(dropped_.size(), std::memory_order_relaxed);
}

bool DirGate::Dropped(uint64_t dir, const std::string& name) const {
  if (dropped_count_.load(std::memory_order_relaxed) == 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_.count({dir, name}) != 0;
}

}  // namespace chainfs::fs
