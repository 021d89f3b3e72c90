// PoolCatalog: the pools the mount (and chainctl) show, with a cached scan of
// each pool's volumes, and the path -> "POOL/VOLUME" lookups that phrase
// fixes as file operations and feed the trust rule (DESIGN section 3).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/chain/trust.h"
#include "core/pool/change_monitor.h"
#include "core/pool/pool_def.h"
#include "core/pool/pool_scan.h"

namespace chainfs::core {

// The default folder of libvirt pool definitions.
inline constexpr const char* kDefaultPoolDir = "/etc/libvirt/storage";

// Where the pools come from: `--pool-dir DIR` and repeated `--pool NAME=PATH`.
struct PoolSources {
  // Folder of pool XML files. When unset, kDefaultPoolDir is read only if no
  // --pool spec is given (so `--pool a=/x` alone shows exactly pool a).
  std::optional<std::string> pool_dir;
  std::vector<std::string> pool_specs;  // "NAME=PATH", in command-line order
};

// Holds the pool definitions and a cached ScanPool result per pool.
//
// Thread-safe: every method may be called from any thread. Lock order: mu_
// only; it is never held during I/O (scans, stats, inspections run unlocked,
// and a scan is stored only if the pool was not invalidated meanwhile).
// A cached scan is also revalidated on every use by re-stating the pool's
// target directory (dev, ino, mtime, ctime), so entries added, removed or
// renamed show up even without an explicit Invalidate -- unless a
// ChangeMonitor vouches that the directory has not changed since the scan
// started (then a use costs no system call but the monitor's).
class PoolCatalog {
 public:
  PoolCatalog() = default;
  PoolCatalog(const PoolCatalog&) = delete;
  PoolCatalog& operator=(const PoolCatalog&) = delete;

  // Loads pool definitions from `sources`: the XML folder first, then each
  // --pool spec (a spec replaces a folder pool of the same name, with a
  // skipped line saying so). kInvalidArgument for a malformed spec; a
  // missing folder or a bad XML file is only a skipped line.
  static Result<PoolLoad> LoadPools(const PoolSources& sources);
  // Checks that what the user named explicitly can be read: the --pool-dir
  // folder (when given and not empty) and the target directory of every
  // --pool spec. Returns the first failure ("--pool-dir DIR: No such file or
  // directory"), ok otherwise. LoadPools only logs these, for SIGHUP; a
  // daemon or a command line refuses to start over them.
  static Status CheckExplicitSources(const PoolSources& sources);

  // Replaces every pool definition (initial load, SIGHUP) and drops every
  // cached scan.
  void SetPools(std::vector<PoolDef> pools);
  // Returns the current definitions, sorted by name.
  std::vector<PoolDef> Pools() const;
  // Returns the definition named `name`, if any.
  std::optional<PoolDef> FindPool(const std::string& name) const;
  // Bumps whenever definitions are replaced or a scan is invalidated; lets
  // callers notice that something may have changed.
  uint64_t generation() const;

  // Returns the (cached) scan of pool `name`; nullptr if there is no such
  // pool or it is not browsable. A pool whose directory cannot be read
  // gives a scan with a non-ok status and no volumes.
  std::shared_ptr<const PoolScan> Scan(const std::string& name);
  // Finds volume `volume` of pool `pool` in the current scan.
  std::optional<VolumeEntry> FindVolume(const std::string& pool, const std::string& volume);
  // Like FindVolume, without copying: the entry shares ownership of its scan.
  std::shared_ptr<const VolumeEntry> FindVolumeShared(const std::string& pool,
                                                      const std::string& volume);

  // Sets (or clears, with nullptr) the monitor that lets cached scans be
  // reused without re-stating the pool directory. It must outlive its use.
  void set_change_monitor(const ChangeMonitor* monitor) { monitor_.store(monitor); }

  // Drops the cached scan of one pool / of every pool.
  void Invalidate(const std::string& name);
  void InvalidateAll();

  // Returns "POOL/VOLUME" when `abs_path` is a volume of a browsable pool:
  // the directory part equals a pool's target path and the name is one of
  // its volumes; otherwise the first volume (pools by name, volumes by
  // name) with the same (dev, ino). nullopt when none.
  std::optional<std::string> Locate(const std::string& abs_path);
  // Returns true if `abs_path` is a volume of a browsable pool.
  bool InPool(const std::string& abs_path) { return Locate(abs_path).has_value(); }

  // Returns the backing format that some pool volume records for the file
  // at `abs_path` (matched by resolved path, or by (dev, ino)); nullopt when
  // no volume records one. Inspects volumes through `inspector` (cached).
  std::optional<std::string> RecordedFormat(const std::string& abs_path,
                                            ImageInspector& inspector);

  // Builds a VolumeLocator calling Locate. The catalog must outlive it.
  VolumeLocator MakeLocator();
  // Builds a TrustContext over RecordedFormat and InPool. The catalog and
  // `inspector` must outlive it.
  TrustContext MakeTrustContext(ImageInspector& inspector);

 private:
  // (dev, ino) -> index in PoolScan::volumes, for Locate's fallback.
  using IdIndex = std::map<std::pair<uint64_t, uint64_t>, size_t>;
  struct Entry {
    PoolDef def;
    std::string norm_target;                // NormalizePathLexically(def.target_path)
    uint64_t scan_generation = 0;           // bumped by Invalidate
    std::optional<FileIdentity> dir_id;     // target dir when `scan` was made
    std::optional<uint64_t> quiet_epoch;    // monitor epoch the scan is valid in
    std::shared_ptr<const PoolScan> scan;   // null until scanned / after Invalidate
    std::shared_ptr<const IdIndex> ids;     // built with `scan`
  };
  // Returns the scan of `name` and its (dev, ino) index.
  std::pair<std::shared_ptr<const PoolScan>, std::shared_ptr<const IdIndex>> ScanWithIndex(
      const std::string& name);

  // Returns the scans of every browsable pool, by pool name.
  std::vector<std::pair<std::string, std::shared_ptr<const PoolScan>>> AllScans();

  mutable std::mutex mu_;
  std::map<std::string, Entry> pools_;  // guarded by mu_
  uint64_t generation_ = 1;             // guarded by mu_
  std::atomic<const ChangeMonitor*> monitor_{nullptr};
};

// Removes trailing '/' (keeping a lone "/") and collapses "//" runs and "/./"
// components; used to compare paths with pool target paths. Lexical only.
std::string NormalizePathLexically(std::string_view path);

}  // namespace chainfs::core
