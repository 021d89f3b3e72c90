#include "fs/watcher.h"

#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <vector>

#include "core/domain/domain_view.h"
#include "fs/fuse_api.h"
#include "fs/kernel_cache.h"

namespace chainfs::fs {

namespace {

// The "pool" of the watches on the domain and run folders (pool names
// never hold control characters).
constexpr const char* kDomainsWatch = "\x01domains";

constexpr uint32_t kWatchMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY |
                                IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF |
                                IN_ONLYDIR;
constexpr size_t kMaxExtraDirs = 1024;

// Returns true if inotify on `dir` sees every change of its entries: not on
// network and cluster filesystems (changes made by other hosts raise no
// events) nor on FUSE (changes behind the FUSE server's back).
bool ReportsEveryChange(const std::string& dir) {
  struct statfs sf {};
  if (::statfs(dir.c_str(), &sf) != 0) return false;
  switch (static_cast<uint64_t>(static_cast<uint32_t>(sf.f_type))) {
    case 0x6969:      // NFS
    case 0x517B:      // SMB
    case 0xFF534D42:  // CIFS
    case 0xFE534D42:  // SMB2
    case 0x65735546:  // FUSE
    case 0x00C36400:  // Ceph
    case 0x01021997:  // 9p
    case 0x5346414F:  // AFS
    case 0x6B414653:  // kAFS
    case 0x73757245:  // Coda
    case 0x01161970:  // GFS2
    case 0x7461636F:  // OCFS2
    case 0x0BD00BD0:  // Lustre
    case 0x47504653:  // GPFS
    case 0x20030528:  // OrangeFS
    case 0x564C:      // NCP
      return false;
    default:
      return true;
  }
}

}  // namespace

Watcher::Watcher(FsState& state, core::PoolSources sources)
    : state_(state),
      sources_(std::move(sources)),
      signals_(io_),
      inotify_(io_) {}

Watcher::~Watcher() { Stop(); }

void Watcher::Start() {
  signals_.add(SIGHUP);
  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (!ec) OnSignal(signo);
  });
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    int saved = errno;
    state_.log.Add("inotify", "-", "error", std::strerror(saved));
  } else {
    inotify_.assign(fd);
    inotify_fd_.store(fd);
    WatchPools();
    ReadEvents();
    epoch_.store(2);  // quiet: the pool watches are in place
  }
  state_.catalog.set_change_monitor(this);
  state_.chains.set_change_monitor(this);
  state_.gate.SetIdleCallback([this] {
    boost::asio::post(io_, [this] { SendDeferredEntries(); });
  });
  state_.chains.set_on_resolved([this](const core::Chain& chain) {
    for (const core::ChainElement& e : chain.elements) {
      if (!e.network && e.stat) WatchDirOf(e.path);
    }
  });
  thread_ = std::thread([this] {
    try {
      io_.run();
    } catch (const std::exception& e) {
      state_.log.Add("watcher", "-", "error", e.what());
    }
  });
  started_ = true;
}

void Watcher::Stop() {
  if (!started_) return;
  started_ = false;
  state_.gate.SetIdleCallback(nullptr);
  io_.stop();
  if (thread_.joinable()) thread_.join();
  state_.catalog.set_change_monitor(nullptr);
  state_.chains.set_change_monitor(nullptr);
  inotify_fd_.store(-1);
  epoch_.fetch_add(1);  // odd (or moved): nothing validated before is trusted
  state_.chains.set_on_resolved(nullptr);
  boost::system::error_code ec;
  inotify_.close(ec);
  signals_.cancel(ec);
}

void Watcher::OnSignal(int signo) {
  if (signo == SIGHUP) {
    Reload();
  } else {
    RequestExit(signo);
  }
  signals_.async_wait([this](const boost::system::error_code& ec, int next) {
    if (!ec) OnSignal(next);
  });
}

void Watcher::RequestExit(int signo) {
  state_.log.Add("signal", "-", "ok", fmt::format("{}: unmounting", strsignal(signo)));
  if (exiting_ || !state_.session) return;
  exiting_ = true;
  fuse_session_exit(state_.session);
  // The loop's threads sit in read(2) on /dev/fuse; one request wakes one,
  // which sees the exit flag and ends the loop. A lookup of a name that
  // never exists is always sent to us (negative entries are not cached).
  std::string probe = state_.config.mountpoint + "/.chainfs/.wake-unmount";
  std::thread([probe] {
    struct stat st {};
    ::stat(probe.c_str(), &st);
  }).detach();
}

void Watcher::Reload() {
  core::Result<core::PoolLoad> load = core::PoolCatalog::LoadPools(sources_);
  if (!load.ok()) {
    state_.log.Add("reload", "-", "error", load.status().message());
    return;
  }
  for (const std::string& line : load->skipped) state_.log.Add("reload", "-", "skipped", line);
  std::vector<std::string> names;
  for (const core::PoolDef& old : state_.catalog.Pools()) names.push_back(old.name);
  for (const core::PoolDef& pool : load->pools) {
    names.push_back(pool.name);
    if (!pool.Browsable()) {
      state_.log.Add("reload", "/" + pool.name, "skipped",
                     fmt::format("pool type '{}' is not browsable", pool.type));
    }
  }
  size_t count = load->pools.size();
  state_.catalog.SetPools(std::move(load->pools));
  state_.domains.Invalidate();
  state_.chains.Clear();
  WatchPools();
  state_.log.Add("reload", "-", "ok", fmt::format("{} pool definitions", count));
  for (const std::string& name : names) pending_entries_.emplace("", name);
  pending_all_ = true;
  ScheduleFlush();
}

void Watcher::WatchPools() {
  if (!inotify_.is_open()) return;
  epoch_.fetch_add(1);  // odd while watches go away
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (!it->second.second.empty()) {
      inotify_rm_watch(inotify_.native_handle(), it->first);
      ForgetWatch(it->first);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
  for (const core::PoolDef& pool : state_.catalog.Pools()) {
    if (pool.Browsable()) AddWatch(pool.target_path, pool.name);
  }
  const core::DomainSources domains = state_.domains.sources();
  for (const std::string& dir : {domains.domain_dir, domains.run_dir}) {
    if (!dir.empty()) AddWatch(dir, kDomainsWatch);
  }
  epoch_.fetch_add(1);
}

void Watcher::ForgetWatch(int wd) {
  std::lock_guard<std::mutex> lock(watched_mu_);
  for (auto it = trusted_dirs_.begin(); it != trusted_dirs_.end();) {
    it = it->second == wd ? trusted_dirs_.erase(it) : std::next(it);
  }
}

std::optional<uint64_t> Watcher::QuietEpoch() const {
  core::detail::QuietEpochMemo& memo = core::detail::quiet_epoch_memo;
  if (memo.depth > 0 && memo.owner == this) return memo.value;
  std::optional<uint64_t> now = SampleQuietEpoch();
  if (memo.depth > 0) {
    memo.owner = this;
    memo.value = now;
  }
  return now;
}

std::optional<uint64_t> Watcher::SampleQuietEpoch() const {
  uint64_t before = epoch_.load();
  if (before & 1) return std::nullopt;
  int fd = inotify_fd_.load();
  if (fd < 0) return std::nullopt;
  int pending = 0;
  if (::ioctl(fd, FIONREAD, &pending) != 0 || pending != 0) return std::nullopt;
  if (epoch_.load() != before) return std::nullopt;
  return before;
}

bool Watcher::Watches(const std::string& dir) const {
  std::lock_guard<std::mutex> lock(watched_mu_);
  return trusted_dirs_.count(dir) != 0;
}

void Watcher::AddWatch(const std::string& dir, const std::string& pool) {
  int wd = inotify_add_watch(inotify_.native_handle(), dir.c_str(), kWatchMask);
  if (wd < 0) {
    int saved = errno;
    state_.log.AddOnce("watch:" + dir, "watch", dir, "error", std::strerror(saved));
    return;
  }
  auto it = watches_.find(wd);
  // The same directory watched as a pool and as an element dir: pool wins.
  if (it == watches_.end() || !pool.empty()) watches_[wd] = {dir, pool};
  if (ReportsEveryChange(dir)) {
    std::lock_guard<std::mutex> lock(watched_mu_);
    trusted_dirs_[core::NormalizePathLexically(dir)] = wd;
  }
}

void Watcher::WatchDirOf(const std::string& path) {
  std::string dir = core::DirName(path);
  {
    std::lock_guard<std::mutex> lock(dirs_mu_);
    if (requested_dirs_.size() >= kMaxExtraDirs || !requested_dirs_.insert(dir).second) return;
  }
  boost::asio::post(io_, [this, dir] {
    if (inotify_.is_open()) AddWatch(dir, "");
  });
}

// Waits for readability and reads the events itself (not async_read_some,
// which would take them off the queue before the epoch turns odd).
void Watcher::ReadEvents() {
  inotify_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                      [this](const boost::system::error_code& ec) {
                        if (ec) {
                          if (ec != boost::asio::error::operation_aborted) {
                            state_.log.Add("inotify", "-", "error", ec.message());
                          }
                          return;
                        }
                        DrainEvents();
                        ReadEvents();
                      });
}

void Watcher::DrainEvents() {
  epoch_.fetch_add(1);  // odd: caches revalidate while the batch is applied
  while (true) {
    ssize_t n = ::read(inotify_.native_handle(), buf_.data(), buf_.size());
    if (n < 0) {
      int saved = errno;
      if (saved == EINTR) continue;
      if (saved != EAGAIN && saved != EWOULDBLOCK) {
        state_.log.Add("inotify", "-", "error", std::strerror(saved));
      }
      break;
    }
    if (n == 0) break;
    HandleEvents(size_t(n));
  }
  epoch_.fetch_add(1);
  // At once: until the kernel hears of it, it may serve what changed.
  Flush();
}

void Watcher::HandleEvents(size_t length) {
  size_t off = 0;
  while (off + sizeof(struct inotify_event) <= length) {
    struct inotify_event ev;
    std::memcpy(&ev, buf_.data() + off, sizeof(ev));
    size_t total = sizeof(struct inotify_event) + ev.len;
    if (off + total > length) break;
    std::string name;
    if (ev.len > 0) name.assign(buf_.data() + off + sizeof(struct inotify_event), strnlen(buf_.data() + off + sizeof(struct inotify_event), ev.len));
    off += total;
    if (ev.mask & IN_Q_OVERFLOW) {
      state_.catalog.InvalidateAll();
      pending_all_ = true;
      continue;
    }
    auto it = watches_.find(ev.wd);
    if (it == watches_.end()) continue;
    const std::string pool = it->second.second;
    if (ev.mask & IN_IGNORED) {
      ForgetWatch(ev.wd);
      watches_.erase(it);
      continue;
    }
    if (pool == kDomainsWatch) {
      // A definition or status file: the catalog rereads at its next use;
      // the kernel drops what it keeps of .domains.
      state_.domains.Invalidate();
      pending_domains_ = true;
      continue;
    }
    if (!pool.empty()) {
      if (ev.mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                     IN_MOVE_SELF | IN_ATTRIB)) {
        state_.catalog.Invalidate(pool);
      }
      if (!name.empty() && (ev.mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                       IN_ATTRIB))) {
        pending_entries_.emplace(pool, name);
      }
    }
    if (name.empty() || (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF))) {
      pending_all_ = true;  // the directory itself went away or moved
    } else {
      // The nodes drawn from this file: its volume's, and those of every
      // chain that runs through it (KernelCache's index).
      pending_paths_.insert(it->second.first + "/" + name);
    }
  }
}

void Watcher::ScheduleFlush() {
  if (flush_armed_) return;
  flush_armed_ = true;
  boost::asio::post(io_, [this] {
    flush_armed_ = false;
    Flush();
  });
}

void Watcher::Flush() {
  struct fuse_session* se = state_.session;
  if (!se || exiting_) {
    pending_entries_.clear();
    pending_paths_.clear();
    pending_all_ = false;
    pending_domains_ = false;
    return;
  }
  // Collect first (the node table locks internally), then notify unlocked.
  std::vector<std::pair<uint64_t, std::string>> entries;
  for (const auto& [pool, name] : pending_entries_) {
    if (pool.empty()) {
      entries.emplace_back(kRootIno, name);
    } else if (auto ino = state_.nodes.Find(NodeKey(NodeKind::kPoolDir, pool))) {
      entries.emplace_back(*ino, name);
    }
  }
  pending_entries_.clear();
  std::vector<std::string> paths(pending_paths_.begin(), pending_paths_.end());
  pending_paths_.clear();
  bool all = pending_all_;
  pending_all_ = false;
  if (pending_domains_) {
    pending_domains_ = false;
    // Every domain and disk name the kernel holds an entry for: those that
    // are gone get their entry invalidated (KernelEntryStale decides).
    for (const auto& [ino, key] : state_.nodes.FindByPrefix("")) {
      if (key.kind == NodeKind::kDomainDir) {
        if (auto dir = state_.nodes.Find(NodeKey(NodeKind::kDomainsDir))) {
          entries.emplace_back(*dir, key.pool);
        }
      } else if (key.kind == NodeKind::kDiskDir) {
        if (auto dir = state_.nodes.Find(NodeKey(NodeKind::kDomainDir, key.pool))) {
          entries.emplace_back(*dir, key.volume);
        }
      }
    }
    if (!all) InvalidateKernelDomains(state_);
  }
  // Inodes first: attributes and pages never need a directory lock.
  if (all) {
    InvalidateKernelAll(state_);
  } else {
    InvalidateKernelImages(state_, paths);
  }
  SendEntryInvalidations(entries);
}

bool Watcher::KernelEntryStale(uint64_t parent, const std::string& name) {
  std::optional<NodeKey> dir = state_.nodes.Get(parent);
  if (!dir) return false;  // the kernel forgot the directory, and its entries
  if (state_.gate.Dropped(parent, name)) return false;
  if (dir->kind == NodeKind::kRoot) {
    if (!state_.nodes.Find(NodeKey(NodeKind::kPoolDir, name))) return false;
    return !state_.catalog.FindPool(name).has_value();
  }
  if (dir->kind == NodeKind::kDomainsDir) {
    if (!state_.nodes.Find(NodeKey(NodeKind::kDomainDir, name))) return false;
    return state_.domains.Find(name) == nullptr;
  }
  if (dir->kind == NodeKind::kDomainDir) {
    if (!state_.nodes.Find(NodeKey(NodeKind::kDiskDir, dir->pool, name))) return false;
    std::shared_ptr<const core::DomainEntry> entry = state_.domains.Find(dir->pool);
    return !entry || core::ShownDisk(*entry, name) == nullptr;
  }
  if (dir->kind != NodeKind::kPoolDir) return false;
  // A name the kernel holds no inode for has no positive entry, and
  // negative entries are never cached (lookups answer ENOENT with no
  // timeout); a name that is still a volume keeps its entry (its inode's
  // attributes and pages are invalidated by path).
  if (!state_.nodes.Find(NodeKey(NodeKind::kVolumeDir, dir->pool, name))) return false;
  return state_.catalog.FindVolumeShared(dir->pool, name) == nullptr;
}

void Watcher::SendEntryInvalidations(const std::vector<std::pair<uint64_t, std::string>>& entries) {
  struct fuse_session* se = state_.session;
  if (!se || exiting_) return;
  for (const auto& [parent, name] : entries) {
    if (!KernelEntryStale(parent, name)) continue;
    // Never while a request on the directory is in flight: the kernel holds
    // its lock until we answer (see fs/dir_gate.h). The gate calls back
    // when the directory is idle.
    if (state_.gate.DeferIfBusy(parent, name)) continue;
    fuse_lowlevel_notify_inval_entry(se, parent, name.c_str(), name.size());
  }
}

void Watcher::SendDeferredEntries() { SendEntryInvalidations(state_.gate.TakeIdleDeferred()); }

}  // namespace chainfs::fs
