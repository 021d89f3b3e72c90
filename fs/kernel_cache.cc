#include "fs/kernel_cache.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <unordered_set>

#include "core/chain/backing_ref.h"
#include "core/pool/catalog.h"
#include "fs/fuse_api.h"
#include "fs/state.h"

namespace chainfs::fs {

namespace {

thread_local uint64_t request_ino = 0;

bool Later(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
}

bool Same(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

struct timespec PlusOneNs(struct timespec t) {
  if (++t.tv_nsec >= 1000000000L) {
    t.tv_nsec = 0;
    ++t.tv_sec;
  }
  return t;
}

// Sends the inode invalidations: attributes only for the current request's
// inode and for inodes with a request in flight (a READ holds page locks
// that dropping pages would wait for). Attributes suffice for correctness:
// the next access refreshes them, and a new size or mtime drops the pages
// (auto_inval_data).
void Notify(FsState& fs, struct fuse_session* se, const std::vector<uint64_t>& inodes) {
  for (uint64_t ino : inodes) {
    bool attr_only = ino == request_ino || fs.gate.Busy(ino);
    fuse_lowlevel_notify_inval_inode(se, ino, attr_only ? -1 : 0, 0);
  }
}

}  // namespace

struct timespec KernelCache::NextTime(const struct timespec& after) {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  struct timespec t = now;
  if (!Later(t, last_)) t = PlusOneNs(last_);
  if (!Later(t, after)) t = PlusOneNs(after);
  last_ = t;
  return t;
}

void KernelCache::Keep(uint64_t ino, Entry& e) {
  if (e.kept) {
    lru_.splice(lru_.begin(), lru_, e.lru);
  } else {
    lru_.push_front(ino);
    e.lru = lru_.begin();
    e.kept = true;
    kept_bytes_ += e.version.bytes.size();
  }
  while (kept_bytes_ > budget_ && lru_.size() > 1) {
    auto victim = versions_.find(lru_.back());
    if (victim == versions_.end()) {  // cannot happen: kept inodes are entries
      lru_.pop_back();
      continue;
    }
    Drop(victim->second);
  }
}

void KernelCache::Drop(Entry& e) {
  if (!e.kept) return;
  kept_bytes_ -= e.version.bytes.size();
  lru_.erase(e.lru);
  e.kept = false;
  std::string().swap(e.version.bytes);
}

KernelCache::Version KernelCache::Update(uint64_t ino, std::string content,
                                         struct timespec natural) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t digest = Fnv1a(content);
  auto [it, added] = versions_.try_emplace(ino);
  Entry& e = it->second;
  if (added) {
    e.version.mtime = natural;
  } else {
    // Dropped bytes (see kContentBudget) are recognized by length and digest.
    bool same = e.kept ? e.version.bytes == content
                       : e.length == content.size() && e.digest == digest;
    if (!same) {
      e.version.mtime = NextTime(Later(natural, e.version.mtime) ? natural : e.version.mtime);
    }
  }
  if (e.kept) kept_bytes_ -= e.version.bytes.size();
  e.version.bytes = std::move(content);
  if (e.kept) kept_bytes_ += e.version.bytes.size();
  e.length = e.version.bytes.size();
  e.digest = digest;
  Version v = e.version;
  Keep(ino, e);
  return v;
}

std::optional<KernelCache::Version> KernelCache::Current(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = versions_.find(ino);
  if (it == versions_.end() || !it->second.kept) return std::nullopt;
  return it->second.version;
}

size_t KernelCache::content_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return kept_bytes_;
}

void KernelCache::Forget(uint64_t ino) {
  std::shared_ptr<const std::vector<DirEntry>> listing;  // freed after unlock
  std::lock_guard<std::mutex> lock(mu_);
  auto v = versions_.find(ino);
  if (v != versions_.end()) {
    Drop(v->second);
    versions_.erase(v);
  }
  auto it = listings_.find(ino);
  if (it != listings_.end()) {
    listing = std::move(it->second);
    listings_.erase(it);
  }
}

void KernelCache::SetListing(uint64_t ino, std::shared_ptr<const std::vector<DirEntry>> listing) {
  std::lock_guard<std::mutex> lock(mu_);
  if (listing) {
    listings_[ino].swap(listing);
  } else {
    auto it = listings_.find(ino);
    if (it != listings_.end()) {
      listing = std::move(it->second);  // freed after unlock
      listings_.erase(it);
    }
  }
}

std::shared_ptr<const std::vector<DirEntry>> KernelCache::Listing(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = listings_.find(ino);
  return it == listings_.end() ? nullptr : it->second;
}

uint64_t KernelCache::Fnv1a(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

void KernelCache::RecordChain(const std::string& volume_prefix, const void* snapshot,
                              const std::function<std::vector<std::string>()>& paths) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, added] = chains_.try_emplace(volume_prefix);
  Recorded& r = it->second;
  if (r.snapshot == snapshot && snapshot != nullptr) return;
  const std::string* key = &it->first;
  for (uint64_t h : r.paths) {
    auto u = users_.find(h);
    if (u == users_.end()) continue;
    auto& list = u->second;
    list.erase(std::remove(list.begin(), list.end(), key), list.end());
    if (list.empty()) users_.erase(u);
  }
  r.snapshot = snapshot;
  r.paths.clear();
  for (const std::string& p : paths()) {
    uint64_t h = Fnv1a(p);
    if (std::find(r.paths.begin(), r.paths.end(), h) != r.paths.end()) continue;
    r.paths.push_back(h);
    users_[h].push_back(key);
  }
  r.paths.shrink_to_fit();
}

std::vector<std::string> KernelCache::VolumesUsing(const std::string& normalized_path) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = users_.find(Fnv1a(normalized_path));
  if (it == users_.end()) return {};
  std::vector<std::string> out;
  for (const std::string* key : it->second) out.push_back(*key);
  return out;
}

void KernelCache::Pin(uint64_t ino, const Version& v, bool reached_end) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (pins_.size() >= 1024) {
    // Bounded: the pins of reads long finished go first.
    std::erase_if(pins_, [&](const auto& p) { return now - p.second.at > kPinFor; });
  }
  PinnedRead pin;
  pin.length = v.bytes.size();
  if (!reached_end) pin.version = v;
  pin.at = now;
  pins_[ino] = std::move(pin);
}

std::optional<KernelCache::PinnedRead> KernelCache::Pinned(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pins_.find(ino);
  if (it == pins_.end() || std::chrono::steady_clock::now() - it->second.at > kPinFor) {
    return std::nullopt;
  }
  return it->second;
}

size_t KernelCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return versions_.size();
}

ScopedRequestInode::ScopedRequestInode(uint64_t ino) : saved_(request_ino) { request_ino = ino; }
ScopedRequestInode::~ScopedRequestInode() { request_ino = saved_; }

bool PushPages(FsState& fs, uint64_t ino, const KernelCache::Version& v,
               std::chrono::microseconds retry_for) {
  struct fuse_session* se = fs.session;
  if (se == nullptr || v.bytes.empty()) return false;
  struct fuse_bufvec buf = FUSE_BUFVEC_INIT(v.bytes.size());
  buf.buf[0].mem = const_cast<char*>(v.bytes.data());
  int rc = fuse_lowlevel_notify_store(se, ino, 0, &buf, FUSE_BUF_NO_SPLICE);
  auto deadline = std::chrono::steady_clock::now() + retry_for;
  while (rc == -ENOENT && std::chrono::steady_clock::now() < deadline) {
    // Sleep, not yield: the looking-up thread may be waiting for this CPU.
    std::this_thread::sleep_for(std::chrono::microseconds(20));
    rc = fuse_lowlevel_notify_store(se, ino, 0, &buf, FUSE_BUF_NO_SPLICE);
  }
  if (rc != 0) return false;
  std::optional<KernelCache::Version> now = fs.kcache.Current(ino);
  if (!now || !Same(now->mtime, v.mtime)) {
    // Described anew while the pages were on their way: they may be old.
    fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
    return false;
  }
  return true;
}

void InvalidateKernelImages(FsState& fs, const std::vector<std::string>& paths) {
  struct fuse_session* se = fs.session;
  if (se == nullptr || paths.empty()) return;
  std::vector<core::PoolDef> pools = fs.catalog.Pools();
  std::unordered_set<std::string> prefixes;
  std::unordered_set<uint64_t> inodes;
  for (const std::string& path : paths) {
    std::string norm = core::NormalizePathLexically(path);
    for (std::string& prefix : fs.kcache.VolumesUsing(norm)) prefixes.insert(std::move(prefix));
    std::string name = core::BaseName(norm);
    for (const std::string& pool : PoolsHolding(pools, norm)) {
      prefixes.insert(EncodePrefix(pool, name));
      if (auto ino = fs.nodes.Find(NodeKey(NodeKind::kPoolDir, pool))) inodes.insert(*ino);
      if (auto ino = fs.nodes.Find(NodeKey(NodeKind::kPoolFile, pool, {}, -1, kPoolXmlName))) {
        inodes.insert(*ino);
      }
    }
  }
  for (const std::string& prefix : prefixes) {
    for (const auto& [ino, key] : fs.nodes.FindByPrefix(prefix)) {
      // VOL/rebase is never cached (zero timeouts: every access asks), and
      // a running rebase writes its image all the time: an invalidation
      // would only make the kernel discard the attribute reply in flight
      // (its attr_version moved), keep the old size and cut the new line.
      if (key.kind == NodeKind::kVolumeFile && key.file == kRebaseFileName) continue;
      inodes.insert(ino);
    }
  }
  Notify(fs, se, std::vector<uint64_t>(inodes.begin(), inodes.end()));
}

void InvalidateKernelAll(FsState& fs) {
  struct fuse_session* se = fs.session;
  if (se == nullptr) return;
  std::vector<uint64_t> inodes;
  for (const auto& [ino, key] : fs.nodes.FindByPrefix("")) {
    if (key.kind != NodeKind::kRoot && key.kind != NodeKind::kControlDir &&
        key.kind != NodeKind::kControlFile) {
      inodes.push_back(ino);
    }
  }
  inodes.push_back(kRootIno);
  Notify(fs, se, inodes);
}

void InvalidateKernelDomains(FsState& fs) {
  struct fuse_session* se = fs.session;
  if (se == nullptr) return;
  std::vector<uint64_t> inodes;
  for (const auto& [ino, key] : fs.nodes.FindByPrefix("")) {
    // A domain started or stopped, so its QEMU took or dropped the locks
    // of its images, which no inotify event reports: the nodes that show
    // whether an image is held for writing go too (VOL/problems, data).
    if (key.IsDomainNode() || Tree::IsDataNode(key) ||
        (key.kind == NodeKind::kVolumeFile &&
         (key.file == "problems" || key.file == "problems.json"))) {
      inodes.push_back(ino);
    }
  }
  Notify(fs, se, inodes);
}

}  // namespace chainfs::fs
