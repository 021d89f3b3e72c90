#include "fs/watcher.h"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <vector>

#include "fs/fuse_api.h"

namespace chainfs::fs {

namespace {

constexpr uint32_t kWatchMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY |
                                IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF |
                                IN_ONLYDIR;
constexpr size_t kMaxExtraDirs = 1024;
constexpr auto kFlushDelay = std::chrono::milliseconds(5);

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Watcher::Watcher(FsState& state, core::PoolSources sources)
    : state_(state),
      sources_(std::move(sources)),
      signals_(io_),
      inotify_(io_),
      flush_timer_(io_) {}

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
    WatchPools();
    ReadEvents();
  }
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
  io_.stop();
  if (thread_.joinable()) thread_.join();
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
  state_.chains.Clear();
  WatchPools();
  state_.log.Add("reload", "-", "ok", fmt::format("{} pool definitions", count));
  for (const std::string& name : names) pending_entries_.emplace("", name);
  pending_all_ = true;
  ScheduleFlush();
}

void Watcher::WatchPools() {
  if (!inotify_.is_open()) return;
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (!it->second.second.empty()) {
      inotify_rm_watch(inotify_.native_handle(), it->first);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
  for (const core::PoolDef& pool : state_.catalog.Pools()) {
    if (pool.Browsable()) AddWatch(pool.target_path, pool.name);
  }
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
}

void Watcher::WatchDirOf(const std::string& path) {
  std::string dir = DirOf(path);
  {
    std::lock_guard<std::mutex> lock(dirs_mu_);
    if (requested_dirs_.size() >= kMaxExtraDirs || !requested_dirs_.insert(dir).second) return;
  }
  boost::asio::post(io_, [this, dir] {
    if (inotify_.is_open()) AddWatch(dir, "");
  });
}

void Watcher::ReadEvents() {
  inotify_.async_read_some(boost::asio::buffer(buf_),
                           [this](const boost::system::error_code& ec, size_t length) {
                             if (ec) {
                               if (ec != boost::asio::error::operation_aborted) {
                                 state_.log.Add("inotify", "-", "error", ec.message());
                               }
                               return;
                             }
                             HandleEvents(length);
                             ReadEvents();
                           });
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
      watches_.erase(it);
      continue;
    }
    if (!pool.empty()) {
      if (ev.mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |
                     IN_MOVE_SELF | IN_ATTRIB)) {
        state_.catalog.Invalidate(pool);
      }
      if (!name.empty()) pending_entries_.emplace(pool, name);
    }
    // Any change may alter a chain that runs through this file.
    pending_all_ = true;
  }
  ScheduleFlush();
}

void Watcher::ScheduleFlush() {
  if (flush_armed_) return;
  flush_armed_ = true;
  flush_timer_.expires_after(kFlushDelay);
  flush_timer_.async_wait([this](const boost::system::error_code& ec) {
    flush_armed_ = false;
    if (!ec) Flush();
  });
}

void Watcher::Flush() {
  struct fuse_session* se = state_.session;
  if (!se || exiting_) {
    pending_entries_.clear();
    pending_all_ = false;
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
  std::vector<uint64_t> inodes;
  if (pending_all_) {
    for (const auto& [ino, key] : state_.nodes.FindByPrefix("")) {
      if (key.kind != NodeKind::kRoot && key.kind != NodeKind::kControlDir &&
          key.kind != NodeKind::kControlFile) {
        inodes.push_back(ino);
      }
    }
    inodes.push_back(kRootIno);
  }
  pending_all_ = false;
  for (const auto& [parent, name] : entries) {
    fuse_lowlevel_notify_inval_entry(se, parent, name.c_str(), name.size());
  }
  for (uint64_t ino : inodes) fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
}

}  // namespace chainfs::fs
