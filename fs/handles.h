// HandleTable: what open files and directories of the mount hold, by the
// number handed to the kernel as fuse_file_info::fh. Owning the snapshots
// here (not behind raw pointers in fh) means a RELEASE racing a READ cannot
// free memory in use, and handles the kernel never released (unmount with
// files open) are freed with the table.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/tree.h"

namespace chainfs::fs {

// Thread-safe. Lock order: mu_ only; snapshots are shared_ptr<const>, so
// they are used after the lock is dropped.
class HandleTable {
 public:
  using Content = std::shared_ptr<const std::string>;
  using Listing = std::shared_ptr<const std::vector<DirEntry>>;

  // Stores a snapshot and returns its handle number (never 0).
  uint64_t AddFile(Content content);
  uint64_t AddDir(Listing listing);
  // Returns the snapshot of a handle, or null if it is unknown.
  Content File(uint64_t fh) const;
  Listing Dir(uint64_t fh) const;
  // Forgets a handle (unknown handles are ignored).
  void Remove(uint64_t fh);
  // Returns how many handles are open.
  size_t size() const;

 private:
  mutable std::mutex mu_;
  uint64_t next_ = 1;                                  // guarded by mu_
  std::unordered_map<uint64_t, Content> files_;       // guarded by mu_
  std::unordered_map<uint64_t, Listing> dirs_;        // guarded by mu_
};

}  // namespace chainfs::fs
