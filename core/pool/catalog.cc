#include "core/pool/catalog.h"

#include <dirent.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/chain/backing_ref.h"

namespace chainfs::core {

namespace {

// A directory whose mtime is this close to "now" may still change within the
// same timestamp tick, so a scan of it is not trusted for reuse.
constexpr int64_t kRacyWindowNs = 1'000'000'000;

int64_t NowRealtimeNs() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::pair<std::string, std::string> SplitDirBase(const std::string& norm) {
  size_t slash = norm.rfind('/');
  if (slash == std::string::npos) return {"", norm};
  if (slash == 0) return {"/", norm.substr(1)};
  return {norm.substr(0, slash), norm.substr(slash + 1)};
}

const VolumeEntry* FindByName(const PoolScan& scan, const std::string& name) {
  auto it = std::lower_bound(scan.volumes.begin(), scan.volumes.end(), name,
                             [](const VolumeEntry& v, const std::string& n) { return v.name < n; });
  if (it == scan.volumes.end() || it->name != name) return nullptr;
  return &*it;
}

}  // namespace

std::string NormalizePathLexically(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  size_t i = 0;
  bool absolute = !path.empty() && path[0] == '/';
  std::vector<std::string_view> parts;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (!part.empty() && part != ".") parts.push_back(part);
    i = j + 1;
  }
  // push_back rather than assigning literals: GCC 12 -O2 warns falsely
  // (-Wrestrict) on the latter.
  if (absolute) out.push_back('/');
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k > 0) out += '/';
    out += parts[k];
  }
  if (out.empty()) out.push_back(absolute ? '/' : '.');
  return out;
}

Result<PoolLoad> PoolCatalog::LoadPools(const PoolSources& sources) {
  PoolLoad load;
  std::string dir;
  if (sources.pool_dir) {
    dir = *sources.pool_dir;
  } else if (sources.pool_specs.empty()) {
    dir = kDefaultPoolDir;
  }
  if (!dir.empty()) load = LoadPoolDir(dir);
  for (const std::string& spec : sources.pool_specs) {
    Result<PoolDef> def = PoolFromSpec(spec);
    if (!def.ok()) {
      return Error(Code::kInvalidArgument, "--pool {}: {}", spec, def.status().message());
    }
    auto same = std::find_if(load.pools.begin(), load.pools.end(),
                             [&](const PoolDef& p) { return p.name == def->name; });
    if (same != load.pools.end()) {
      load.skipped.push_back(fmt::format("{}: pool '{}' replaced by --pool {}", same->origin,
                                         same->name, spec));
      *same = std::move(def).value();
    } else {
      load.pools.push_back(std::move(def).value());
    }
  }
  std::sort(load.pools.begin(), load.pools.end(),
            [](const PoolDef& a, const PoolDef& b) { return a.name < b.name; });
  return load;
}

namespace {

// Returns ok if `dir` can be opened as a directory and listed.
Status CheckReadableDir(const std::string& what, const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    int saved = errno;
    return Error(saved == EACCES ? Code::kPermissionDenied : Code::kNotFound, "{} {}: {}", what,
                 dir, std::strerror(saved));
  }
  ::closedir(d);
  return Status::Ok();
}

}  // namespace

Status PoolCatalog::CheckExplicitSources(const PoolSources& sources) {
  if (sources.pool_dir && !sources.pool_dir->empty()) {
    Status s = CheckReadableDir("--pool-dir", *sources.pool_dir);
    if (!s.ok()) return s;
  }
  for (const std::string& spec : sources.pool_specs) {
    Result<PoolDef> def = PoolFromSpec(spec);
    if (!def.ok()) {
      return Error(Code::kInvalidArgument, "--pool {}: {}", spec, def.status().message());
    }
    Status s = CheckReadableDir(fmt::format("--pool {}: pool folder", spec), def->target_path);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

void PoolCatalog::SetPools(std::vector<PoolDef> pools) {
  std::map<std::string, Entry> fresh;
  for (PoolDef& def : pools) {
    std::string name = def.name;
    Entry entry;
    entry.norm_target = NormalizePathLexically(def.target_path);
    entry.def = std::move(def);
    fresh.emplace(std::move(name), std::move(entry));  // first definition wins
  }
  std::map<std::string, Entry> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old.swap(pools_);
    pools_.swap(fresh);
    ++generation_;
    for (auto& [name, entry] : pools_) entry.scan_generation = generation_;
  }
  // `old` (and any scans it holds) is destroyed here, outside the lock.
}

std::vector<PoolDef> PoolCatalog::Pools() const {
  std::vector<PoolDef> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.reserve(pools_.size());
  for (const auto& [name, entry] : pools_) out.push_back(entry.def);
  return out;
}

std::optional<PoolDef> PoolCatalog::FindPool(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pools_.find(name);
  if (it == pools_.end()) return std::nullopt;
  return it->second.def;
}

uint64_t PoolCatalog::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

std::shared_ptr<const PoolScan> PoolCatalog::Scan(const std::string& name) {
  return ScanWithIndex(name).first;
}

std::pair<std::shared_ptr<const PoolScan>, std::shared_ptr<const PoolCatalog::IdIndex>>
PoolCatalog::ScanWithIndex(const std::string& name) {
  const ChangeMonitor* monitor = monitor_.load();
  std::optional<uint64_t> quiet = monitor ? monitor->QuietEpoch() : std::nullopt;
  PoolDef def;
  std::string norm_target;
  uint64_t gen = 0;
  std::shared_ptr<const PoolScan> cached;
  std::shared_ptr<const IdIndex> cached_ids;
  std::optional<FileIdentity> cached_dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pools_.find(name);
    if (it == pools_.end() || !it->second.def.Browsable()) return {};
    Entry& e = it->second;
    // Fast path: the monitor vouches that the directory did not change
    // since this scan started.
    if (e.scan && quiet && e.quiet_epoch == quiet) return {e.scan, e.ids};
    def = e.def;
    norm_target = e.norm_target;
    gen = e.scan_generation;
    cached = e.scan;
    cached_ids = e.ids;
    cached_dir = e.dir_id;
  }
  // Taken before the directory is stat'ed and read: a change after this
  // point moves the epoch, so the scan below is trusted only for changes
  // it could have seen.
  bool watched = monitor && monitor->Watches(norm_target);
  quiet = watched ? monitor->QuietEpoch() : std::nullopt;
  Result<FileStat> dir = StatPath(def.target_path);
  if (cached && dir.ok() && cached_dir && *cached_dir == dir->id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pools_.find(name);
    if (quiet && it != pools_.end() && it->second.scan == cached) it->second.quiet_epoch = quiet;
    return {cached, cached_ids};
  }

  int64_t started = NowRealtimeNs();
  auto scan = std::make_shared<const PoolScan>(ScanPool(def));
  auto ids = std::make_shared<IdIndex>();
  for (size_t i = 0; i < scan->volumes.size(); ++i) {
    const FileIdentity& id = scan->volumes[i].stat.id;
    ids->emplace(std::make_pair(id.dev, id.ino), i);  // first name (sorted) wins
  }
  // Only reuse this scan later if the directory was already quiet when the
  // scan started; otherwise a change in the same timestamp tick could hide.
  std::optional<FileIdentity> dir_id;
  if (dir.ok() && started - dir->id.mtime_ns > kRacyWindowNs &&
      started - dir->id.ctime_ns > kRacyWindowNs) {
    dir_id = dir->id;
  }
  std::shared_ptr<const IdIndex> const_ids = std::move(ids);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pools_.find(name);
    if (it != pools_.end() && it->second.scan_generation == gen) {
      cached.swap(it->second.scan);  // old scan released after unlock
      cached_ids.swap(it->second.ids);
      it->second.scan = scan;
      it->second.ids = const_ids;
      it->second.dir_id = dir_id;
      it->second.quiet_epoch = quiet;
    }
  }
  return {scan, const_ids};
}

std::optional<VolumeEntry> PoolCatalog::FindVolume(const std::string& pool,
                                                   const std::string& volume) {
  std::shared_ptr<const PoolScan> scan = Scan(pool);
  if (!scan) return std::nullopt;
  const VolumeEntry* entry = FindByName(*scan, volume);
  if (!entry) return std::nullopt;
  return *entry;
}

std::shared_ptr<const VolumeEntry> PoolCatalog::FindVolumeShared(const std::string& pool,
                                                                 const std::string& volume) {
  std::shared_ptr<const PoolScan> scan = Scan(pool);
  if (!scan) return nullptr;
  const VolumeEntry* entry = FindByName(*scan, volume);
  if (!entry) return nullptr;
  return std::shared_ptr<const VolumeEntry>(scan, entry);  // aliasing: keeps the scan alive
}

void PoolCatalog::Invalidate(const std::string& name) {
  std::shared_ptr<const PoolScan> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pools_.find(name);
  if (it == pools_.end()) return;
  ++generation_;
  it->second.scan_generation = generation_;
  dropped.swap(it->second.scan);
  it->second.ids.reset();
  it->second.dir_id.reset();
  it->second.quiet_epoch.reset();
}

void PoolCatalog::InvalidateAll() {
  std::vector<std::shared_ptr<const PoolScan>> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  ++generation_;
  for (auto& [name, entry] : pools_) {
    entry.scan_generation = generation_;
    dropped.push_back(std::move(entry.scan));
    entry.scan.reset();
    entry.ids.reset();
    entry.dir_id.reset();
    entry.quiet_epoch.reset();
  }
}

std::vector<std::pair<std::string, std::shared_ptr<const PoolScan>>> PoolCatalog::AllScans() {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, entry] : pools_) {
      if (entry.def.Browsable()) names.push_back(name);
    }
  }
  std::vector<std::pair<std::string, std::shared_ptr<const PoolScan>>> out;
  for (const std::string& name : names) {
    std::shared_ptr<const PoolScan> scan = Scan(name);
    if (scan) out.emplace_back(name, std::move(scan));
  }
  return out;
}

std::optional<std::string> PoolCatalog::Locate(const std::string& abs_path) {
  std::string norm = NormalizePathLexically(abs_path);
  auto [dir, base] = SplitDirBase(norm);
  std::vector<std::string> by_dir;
  std::vector<std::string> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, entry] : pools_) {
      if (!entry.def.Browsable()) continue;
      if (entry.norm_target == dir) by_dir.push_back(name);
      all.push_back(name);
    }
  }
  for (const std::string& pool : by_dir) {
    std::shared_ptr<const PoolScan> scan = Scan(pool);
    if (scan && FindByName(*scan, base)) return pool + "/" + base;
  }
  Result<FileStat> st = StatPath(norm);
  if (!st.ok()) return std::nullopt;
  for (const std::string& pool : all) {  // pools by name, then the first name with the id
    auto [scan, ids] = ScanWithIndex(pool);
    if (!scan || !ids) continue;
    auto hit = ids->find(std::make_pair(st->id.dev, st->id.ino));
    if (hit != ids->end() && hit->second < scan->volumes.size()) {
      return pool + "/" + scan->volumes[hit->second].name;
    }
  }
  return std::nullopt;
}

std::optional<std::string> PoolCatalog::RecordedFormat(const std::string& abs_path,
                                                       ImageInspector& inspector) {
  std::string norm = NormalizePathLexically(abs_path);
  Result<FileStat> target = StatPath(norm);
  for (const auto& [pool, scan] : AllScans()) {
    for (const VolumeEntry& v : scan->volumes) {
      if (NormalizePathLexically(v.path) == norm) continue;  // not "another image"
      auto inspection = inspector.Inspect(v.path);
      if (!inspection.ok()) continue;
      const std::shared_ptr<const ImageMeta>& meta = (*inspection)->meta;
      if (!meta || !meta->backing || !meta->backing_format || meta->backing_format->empty()) {
        continue;
      }
      Result<BackingRef> ref = ClassifyBacking(*meta->backing, v.path);
      if (!ref.ok() || ref->resolved_path.empty()) continue;
      bool local = ref->IsLocal() || (ref->network && ref->network->driver == "file");
      if (!local) continue;
      bool same = NormalizePathLexically(ref->resolved_path) == norm;
      if (!same && target.ok()) {
        Result<FileStat> other = StatPath(ref->resolved_path);
        same = other.ok() && other->id.dev == target->id.dev && other->id.ino == target->id.ino;
      }
      if (same) return *meta->backing_format;
    }
  }
  return std::nullopt;
}

VolumeLocator PoolCatalog::MakeLocator() {
  return [this](const std::string& path) { return Locate(path); };
}

TrustContext PoolCatalog::MakeTrustContext(ImageInspector& inspector) {
  TrustContext context;
  context.recorded_format = [this, &inspector](const std::string& path) {
    return RecordedFormat(path, inspector);
  };
  context.in_pool = [this](const std::string& path) { return InPool(path); };
  return context;
}

}  // namespace chainfs::core
