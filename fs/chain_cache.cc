#include "fs/chain_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <future>

#include "core/chain/backing_ref.h"
#include "core/io/file.h"
#include "core/pool/catalog.h"

namespace chainfs::fs {
namespace {

// Returns true if a stat of `path` fails as for a name that does not exist.
bool Absent(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return false;
  return errno == ENOENT || errno == ENOTDIR;
}

// Returns true if the problem that stopped `chain` at element `index` is
// that the element's file could not be opened (the resolver then records
// no stat for it), with the kind of that problem.
std::optional<core::ProblemKind> OpenFailure(const core::Chain& chain, int index) {
  for (const core::Problem& p : chain.problems) {
    if (p.index != index) continue;
    switch (p.kind) {
      case core::ProblemKind::kMissingBackingFile:
      case core::ProblemKind::kUnreadable:
      case core::ProblemKind::kUnsupported:
        return p.kind;
      default:
        break;
    }
  }
  return std::nullopt;
}

// Decides how to revalidate an element whose file could not be opened
// (problem `kind`), setting `id` when it is checked by identity. The stat
// comes after the failure, so it is trusted only when it shows something
// that fails the same way for as long as the identity holds: an inode that
// is not a regular file or block device (its type never changes), or a
// regular file that still refuses to be opened for reading (its mode,
// owner and ACLs change its ctime).
ElementCheck CheckFailedOpen(const std::string& path, core::ProblemKind kind,
                             std::optional<core::FileIdentity>& id) {
  if (kind == core::ProblemKind::kMissingBackingFile) return ElementCheck::kAbsent;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ElementCheck::kNever;
  if (kind == core::ProblemKind::kUnsupported) {
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) return ElementCheck::kNever;
    id = core::FromStat(st).id;
    return ElementCheck::kIdentity;
  }
  if (!S_ISREG(st.st_mode)) return ElementCheck::kNever;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd >= 0) {
    ::close(fd);
    return ElementCheck::kNever;  // readable again: resolve it anew
  }
  if (errno != EACCES && errno != EPERM) return ElementCheck::kNever;  // e.g. an I/O error
  id = core::FromStat(st).id;
  return ElementCheck::kIdentity;
}

}  // namespace

ChainSnapshot::ChainSnapshot(core::Chain chain, std::vector<std::optional<core::FileIdentity>> ids,
                             std::vector<ElementCheck> checks)
    : chain_(std::move(chain)), ids_(std::move(ids)), checks_(std::move(checks)) {
  if (checks_.empty()) {
    for (const std::optional<core::FileIdentity>& id : ids_) {
      checks_.push_back(id ? ElementCheck::kIdentity : ElementCheck::kAbsent);
    }
  }
}

std::string ChainSnapshot::Rendered(const std::string& name,
                                    const std::function<std::string()>& render) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = rendered_.find(name);
    if (it != rendered_.end()) return it->second;
  }
  std::string text = render();  // pure function of the immutable chain
  std::lock_guard<std::mutex> lock(mu_);
  return rendered_.emplace(name, std::move(text)).first->second;
}

bool ChainCache::Revalidate(const ChainSnapshot& snap) const {
  const core::Chain& chain = snap.chain();
  const std::vector<ElementCheck>& checks = snap.checks();
  const core::ChangeMonitor* monitor = monitor_.load();
  // Whether the monitor covers every element is decided before its epoch
  // is taken, and the stats below come after it (change_monitor.h). A
  // missing element is covered by its directory too: creating it raises an
  // event there.
  bool covered = monitor != nullptr;
  for (size_t i = 0; i < chain.elements.size(); ++i) {
    if (checks[i] == ElementCheck::kNever) return false;
    if (!covered || checks[i] == ElementCheck::kIgnored) continue;
    const core::ChainElement& e = chain.elements[i];
    if (!monitor->Watches(core::DirName(core::NormalizePathLexically(e.path)))) covered = false;
  }
  std::optional<uint64_t> epoch = covered ? monitor->QuietEpoch() : std::nullopt;
  for (size_t i = 0; i < chain.elements.size(); ++i) {
    const core::ChainElement& e = chain.elements[i];
    if (checks[i] == ElementCheck::kIgnored) continue;
    const std::optional<core::FileIdentity>& then = snap.ids()[i];
    // lstat first: for the usual plain file it is the stat we need, and it
    // tells whether inotify on the file's directory sees all its changes.
    struct stat lst;
    std::optional<core::FileIdentity> now;
    int rc = ::lstat(e.path.c_str(), &lst);
    int err = rc == 0 ? 0 : errno;
    if (checks[i] == ElementCheck::kAbsent) {
      // Still missing. A name missing from a watched directory is vouched
      // for like a file there: creating it raises an event.
      if (err == ENOENT) continue;
      epoch.reset();
      if (err == ENOTDIR) continue;
      if (rc == 0 && !S_ISLNK(lst.st_mode)) return false;  // it exists now
      if (!Absent(e.path)) return false;  // a link that leads somewhere now, or EACCES
      continue;
    }
    if (rc == 0 && !S_ISLNK(lst.st_mode)) {
      now = core::FromStat(lst).id;
      if (!S_ISREG(lst.st_mode) || lst.st_nlink != 1) epoch.reset();
    } else {
      epoch.reset();  // a symlink: its target's directory may not be watched
      core::Result<core::FileStat> st = core::StatPath(e.path);
      if (st.ok()) now = st->id;
    }
    if (!now || !then || !(*now == *then)) return false;
  }
  if (epoch) snap.set_quiet_epoch(*epoch);
  return true;
}

std::shared_ptr<const ChainSnapshot> ChainCache::Get(const std::string& path) {
  return GetWith(path, [&] {
    core::ResolveOptions options;
    options.locate = locate_;
    return core::ResolveChain(inspector_, path, options);
  });
}

std::shared_ptr<const ChainSnapshot> ChainCache::GetWith(
    const std::string& path, const std::function<core::Chain()>& resolve) {
  std::shared_ptr<const ChainSnapshot> cached;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(path);
    if (it != entries_.end()) {
      cached = it->second.snap;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
  }
  if (cached) {
    // Fast path: validated in the monitor's current quiet epoch.
    const core::ChangeMonitor* monitor = monitor_.load();
    uint64_t validated = cached->quiet_epoch();
    if (monitor && validated != ChainSnapshot::kNoEpoch) {
      std::optional<uint64_t> now = monitor->QuietEpoch();
      if (now && *now == validated) {
        ++hits_;
        return cached;
      }
    }
    if (Revalidate(*cached)) {
      ++hits_;
      return cached;
    }
  }
  // One resolution per key at a time: a caller that finds the key being
  // resolved (the directory prefetch racing the lookup it runs ahead of)
  // waits for that result instead of probing the same images again.
  std::promise<std::shared_ptr<const ChainSnapshot>> promise;
  uint64_t ticket = 0;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto pending = pending_.find(path);
    if (pending != pending_.end()) {
      std::shared_future<std::shared_ptr<const ChainSnapshot>> result = pending->second.result;
      lock.unlock();
      ++hits_;
      return result.get();
    }
    ticket = ++next_ticket_;
    pending_[path] = Pending{ticket, promise.get_future().share()};
  }
  try {
    std::shared_ptr<const ChainSnapshot> snap = Resolve(path, ticket, resolve);
    promise.set_value(snap);
    return snap;
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      EndPending(path, ticket);
    }
    promise.set_exception(std::current_exception());
    throw;
  }
}

void ChainCache::EndPending(const std::string& path, uint64_t ticket) {
  auto it = pending_.find(path);
  if (it != pending_.end() && it->second.ticket == ticket) pending_.erase(it);
}

std::shared_ptr<const ChainSnapshot> ChainCache::Resolve(
    const std::string& path, uint64_t ticket, const std::function<core::Chain()>& resolve) {
  ++misses_;
  core::Chain chain = resolve();
  std::vector<std::optional<core::FileIdentity>> ids;
  std::vector<ElementCheck> checks;
  ids.reserve(chain.elements.size());
  checks.reserve(chain.elements.size());
  for (const core::ChainElement& e : chain.elements) {
    ids.push_back(e.stat ? std::optional<core::FileIdentity>(e.stat->id) : std::nullopt);
    if (e.network) {
      checks.push_back(ElementCheck::kIgnored);
    } else if (e.stat) {
      checks.push_back(ElementCheck::kIdentity);
    } else if (std::optional<core::ProblemKind> failed = OpenFailure(chain, e.index)) {
      checks.push_back(CheckFailedOpen(e.path, *failed, ids.back()));
    } else {
      checks.push_back(ElementCheck::kIgnored);  // never opened (unknown recorded format)
    }
  }
  auto snap =
      std::make_shared<const ChainSnapshot>(std::move(chain), std::move(ids), std::move(checks));
  {
    std::shared_lock<std::shared_mutex> hook(hook_mu_);
    if (on_resolved_) on_resolved_(snap->chain());
  }
  // Settles at once whether the monitor vouches for the new chain (the
  // mount lets the kernel keep what it describes when it does).
  if (monitor_.load() != nullptr && !Revalidate(*snap)) {
    // Changed while it was resolved: the next Get resolves it again.
    snap->set_quiet_epoch(ChainSnapshot::kNoEpoch);
  }
  std::vector<std::shared_ptr<const ChainSnapshot>> dropped;  // released after unlock
  {
    std::lock_guard<std::mutex> lock(mu_);
    EndPending(path, ticket);
    auto it = entries_.find(path);
    if (it != entries_.end()) {
      dropped.push_back(std::move(it->second.snap));
      it->second.snap = snap;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    } else {
      lru_.push_front(path);
      entries_.emplace(path, Entry{snap, lru_.begin()});
      while (entries_.size() > max_entries_ && !lru_.empty()) {
        auto victim = entries_.find(lru_.back());
        dropped.push_back(std::move(victim->second.snap));
        entries_.erase(victim);
        lru_.pop_back();
      }
    }
  }
  return snap;
}

void ChainCache::Invalidate(const std::string& path) {
  std::string norm = core::NormalizePathLexically(path);
  core::Result<core::FileStat> st = core::StatPath(path);
  std::vector<std::shared_ptr<const ChainSnapshot>> dropped;  // released after unlock
  std::lock_guard<std::mutex> lock(mu_);
  pending_.clear();  // which pending chains run through `path` is not known yet
  for (auto it = entries_.begin(); it != entries_.end();) {
    const ChainSnapshot& snap = *it->second.snap;
    bool uses = false;
    for (size_t i = 0; i < snap.chain().elements.size() && !uses; ++i) {
      const core::ChainElement& e = snap.chain().elements[i];
      if (e.network) continue;
      uses = core::NormalizePathLexically(e.path) == norm;
      const std::optional<core::FileIdentity>& id = snap.ids()[i];
      if (!uses && st.ok() && id) uses = id->dev == st->id.dev && id->ino == st->id.ino;
    }
    if (uses) {
      dropped.push_back(std::move(it->second.snap));
      lru_.erase(it->second.lru);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

void ChainCache::Clear() {
  std::unordered_map<std::string, Entry> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  dropped.swap(entries_);
  lru_.clear();
  pending_.clear();
}

bool ChainCache::WatchesDir(const std::string& normalized_dir) const {
  const core::ChangeMonitor* monitor = monitor_.load();
  return monitor != nullptr && monitor->Watches(normalized_dir);
}

bool ChainCache::WatchesDirOf(const std::string& path) const {
  return WatchesDir(core::DirName(core::NormalizePathLexically(path)));
}

ChainCacheStats ChainCache::stats() const {
  ChainCacheStats s;
  s.hits = hits_.load();
  s.misses = misses_.load();
  std::lock_guard<std::mutex> lock(mu_);
  s.entries = entries_.size();
  return s;
}

}  // namespace chainfs::fs
