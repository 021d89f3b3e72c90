#include "fs/handles.h"

namespace chainfs::fs {

uint64_t HandleTable::AddFile(Content content) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t fh = next_++;
  files_.emplace(fh, std::move(content));
  return fh;
}

uint64_t HandleTable::AddDir(Listing listing) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t fh = next_++;
  dirs_.emplace(fh, std::move(listing));
  return fh;
}

HandleTable::Content HandleTable::File(uint64_t fh) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(fh);
  return it == files_.end() ? nullptr : it->second;
}

HandleTable::Listing HandleTable::Dir(uint64_t fh) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = dirs_.find(fh);
  return it == dirs_.end() ? nullptr : it->second;
}

void HandleTable::Remove(uint64_t fh) {
  Content file;  // declared before the lock: destroyed after it is released
  Listing dir;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = files_.find(fh); it != files_.end()) {
    file = std::move(it->second);
    files_.erase(it);
  }
  if (auto it = dirs_.find(fh); it != dirs_.end()) {
    dir = std::move(it->second);
    dirs_.erase(it);
  }
}

size_t HandleTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return files_.size() + dirs_.size();
}

}  // namespace chainfs::fs
