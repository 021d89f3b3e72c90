// Tree: the read side of the mounted tree (DESIGN section 1) as plain calls
// on NodeKeys: lookup, attributes, listing and content. No FUSE here, so the
// adapter in operations.cc stays a thin translation layer.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/data/chain_reader.h"
#include "core/domain/domain_catalog.h"
#include "core/domain/domain_view.h"
#include "core/pool/catalog.h"
#include "core/render/metrics.h"
#include "core/render/tree_render.h"
#include "core/status.h"
#include "fs/chain_cache.h"
#include "fs/event_log.h"
#include "fs/node.h"

namespace boost::asio {
class thread_pool;
}

namespace chainfs::fs {

// Who is asking: from the FUSE request context.
struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;  // supplementary groups
};

// Attributes of one node.
struct NodeAttr {
  uint32_t mode = 0;  // including the S_IF* type bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  uint32_t nlink = 1;
  struct timespec atime {};
  struct timespec mtime {};
  struct timespec ctime {};
  // Regular files: the content, rendered once for the size above (the
  // mount keeps it per inode, see fs/kernel_cache.h). chain/: a signature of
  // its listing, which changes when the chain's length does.
  std::optional<std::string> content;
  // The chain the node was described from (chain-derived nodes only).
  std::shared_ptr<const ChainSnapshot> chain;
  // Every image the node draws on is in a directory whose inotify events
  // report all its changes, so the kernel may keep the node for long.
  bool watched = false;
};

// One directory entry.
struct DirEntry {
  std::string name;
  NodeKey key;
};

// Thread-safe (all state lives in the thread-safe catalog, caches and log).
class Tree {
 public:
  Tree(core::PoolCatalog& catalog, ChainCache& chains, EventLog& log);
  ~Tree();  // joins the prefetch threads (fs/domain_tree.cc)

  // Drops the prefetch work not started, waits for the running tasks and
  // starts no more. The daemon calls it when the loop has ended, before it
  // stops the watcher that newly resolved chains report to.
  void StopPrefetch();

  // Resolves `name` in directory `parent`. kNotFound when absent.
  core::Result<NodeKey> Lookup(const NodeKey& parent, const std::string& name);
  // Returns the attributes of `key` (a file's size is its rendered length).
  // kNotFound if the node no longer exists.
  core::Result<NodeAttr> GetAttr(const NodeKey& key);
  // Lists directory `key` ("." and ".." not included).
  core::Result<std::vector<DirEntry>> List(const NodeKey& key);
  // Returns the content of file `key` for `caller`; kPermissionDenied when
  // the caller cannot read every image the content draws on (DESIGN 3, Access).
  core::Result<std::string> Read(const NodeKey& key, const Caller& caller);
  // Checks that `caller` may read file or link `key` (the rule of Read),
  // without rendering it.
  core::Status Authorize(const NodeKey& key, const Caller& caller);
  // Returns the target of symlink `key`, with the same access rule.
  core::Result<std::string> ReadLink(const NodeKey& key, const Caller& caller);

  // Forgets what the daemon cached about the image at absolute `path`: the
  // chains that run through it and the scan of the pool folder holding it.
  // For the write side, to call after it created, changed, renamed or
  // removed an image (the inotify watcher would notice too, but this makes
  // the daemon's own next answer exact without waiting for it). Kernel
  // caches are not touched here (see Watcher). Thread-safe.
  void InvalidateImage(const std::string& path);

  // Sets the renderer of .chainfs/stats (the daemon owns the counters).
  void set_stats_renderer(std::function<std::string()> render) { stats_renderer_ = std::move(render); }
  // Sets the renderer of .chainfs/metrics.
  void set_metrics_renderer(std::function<std::string()> render) {
    metrics_renderer_ = std::move(render);
  }
  // The figures of .chainfs/metrics: per pool, its volumes, their chains'
  // states and the lines of their `problems` files by code; per domain,
  // its disks and theirs.
  std::vector<core::PoolFigures> PoolMetrics();
  std::vector<core::DomainFigures> DomainMetrics();
  // A pool's volumes and their chains, by name, for POOL/.tree.
  core::TreePool PoolChains(const std::string& pool);
  // Sets the renderer of VOL/rebase, called with the volume's absolute path
  // (the write side owns the rebase jobs); without one the file is empty.
  void set_rebase_renderer(std::function<std::string(const std::string& image)> render) {
    rebase_renderer_ = std::move(render);
  }
  // Sets the owner of the root and the control files (the daemon's ids) and
  // the time shown on them.
  void set_owner(uint32_t uid, uint32_t gid, struct timespec mount_time);
  // Enables MOUNT/.domains over `domains`, resolving disks with `inspector`
  // (both must outlive the tree). Without it there is no .domains.
  void set_domains(core::DomainCatalog* domains, core::ImageInspector* inspector) {
    domains_ = domains;
    inspector_ = inspector;
  }

  // The data view (fs/data_files.cc, DESIGN section 9): VOL/data,
  // VOL/chain/N/data and .domains/D/T/data serve guest bytes.
  static bool IsDataNode(const NodeKey& key);
  // Reads at most `size` guest bytes at `off` of data node `key` for
  // `caller` (the access rule of Read); fewer at the end.
  core::Result<std::string> ReadData(const NodeKey& key, const Caller& caller, uint64_t off,
                                     size_t size);
  // Returns the offset SEEK_DATA (`data`) or SEEK_HOLE finds from `off`;
  // kNotFound (ENXIO) past the end or, for SEEK_DATA, when only holes follow.
  core::Result<uint64_t> SeekData(const NodeKey& key, uint64_t off, bool data);

  // One domain disk whose chain holds an image (for VOL/users and the
  // write side's refusals).
  struct DomainUse {
    std::string domain;
    std::string target;
    bool running = false;
    std::string definition;  // the definition file ("" for a transient domain)
  };
  // Returns every domain disk whose chain (the live one for a running
  // domain) holds the image at absolute `path`, at any depth.
  std::vector<DomainUse> DomainUsers(const std::string& path);

 private:
  core::Result<core::PoolDef> Pool(const std::string& name);
  core::Result<std::shared_ptr<const core::VolumeEntry>> Volume(const std::string& pool,
                                                                const std::string& volume);
  core::Result<std::shared_ptr<const ChainSnapshot>> VolumeChain(const std::string& pool,
                                                                 const std::string& volume);
  core::Result<std::string> Render(const NodeKey& key);
  // Renders a volume or element file from an already revalidated chain.
  core::Result<std::string> RenderChainFile(const NodeKey& key, const ChainSnapshot& snap);
  core::Status CheckAccess(const NodeKey& key, const ChainSnapshot& snap, const Caller& caller);
  core::Result<std::string> LinkTarget(const NodeKey& key, const ChainSnapshot& snap);
  std::vector<DirEntry> PoolEntries(const std::string& pool);
  // The chain a data node reads, from its first element (chain/N: N), and
  // an open reader over it (cached by snapshot).
  struct DataSource {
    std::shared_ptr<const ChainSnapshot> snap;
    size_t from = 0;
  };
  core::Result<DataSource> DataSourceOf(const NodeKey& key);
  core::Result<std::shared_ptr<const core::ChainReader>> ReaderFor(const DataSource& source);
  core::Result<NodeAttr> DataAttr(const NodeKey& key);
  // Renders VOL/map or VOL/map.json.
  core::Result<std::string> RenderMap(const NodeKey& key, const ChainSnapshot& snap);
  struct OpenReader {
    std::shared_ptr<const ChainSnapshot> snap;  // keeps the key's pointer valid
    size_t from = 0;
    std::shared_ptr<const core::ChainReader> reader;
  };
  std::mutex readers_mu_;
  std::list<OpenReader> readers_;  // guarded by readers_mu_; front = newest
  static constexpr size_t kMaxOpenReaders = 32;

  // VOL/users: the domain disks and the other volumes whose chain holds it.
  core::Result<std::string> RenderVolumeUsers(const std::string& pool, const std::string& volume);

  // The domains' view (fs/domain_tree.cc).
  bool DomainsEnabled() const { return domains_ != nullptr && domains_->enabled(); }
  struct DiskState {
    std::shared_ptr<const core::DomainEntry> entry;
    const core::DiskDef* disk = nullptr;  // points into `entry`
    std::shared_ptr<const ChainSnapshot> snap;
  };
  core::Result<std::shared_ptr<const core::DomainEntry>> Domain(const std::string& name);
  core::Result<DiskState> Disk(const std::string& domain, const std::string& target);
  core::Result<NodeKey> LookupDomainNode(const NodeKey& parent, const std::string& name);
  core::Result<std::vector<DirEntry>> ListDomainNode(const NodeKey& key);
  core::Result<NodeAttr> DomainNodeAttr(const NodeKey& key);
  core::Result<std::string> RenderDomainNode(const NodeKey& key);
  core::Result<std::string> DiskLinkTarget(const NodeKey& key, const ChainSnapshot& snap);
  core::Status CheckDomainAccess(const NodeKey& key, const Caller& caller);
  // Resolves, on the prefetch threads, the chains of the disks of `entries`
  // (every domain when .domains is listed, one when its directory is), so
  // the lookups and reads that follow a listing (a shell glob, find) find
  // them resolved, or being resolved, instead of probing one chain at a
  // time. Once per domain-set and pool generation for the whole set; at
  // most half the chain cache's capacity of disks per call.
  void PrefetchDisks(const std::shared_ptr<const core::DomainSet>& set, const std::string& only);

  core::PoolCatalog& catalog_;
  ChainCache& chains_;
  EventLog& log_;
  std::function<std::string()> stats_renderer_;
  std::function<std::string()> metrics_renderer_;
  std::function<std::string(const std::string&)> rebase_renderer_;
  uint32_t owner_uid_ = 0;
  uint32_t owner_gid_ = 0;
  struct timespec mount_time_ {};
  core::DomainCatalog* domains_ = nullptr;
  core::ImageInspector* inspector_ = nullptr;

  // Who uses each image (file identity -> "DOMAIN/TARGET" and "POOL/VOLUME"
  // in listing order), built from every chain at once, so that reading
  // VOL/users of every volume (find | xargs cat) costs one pass over the
  // chains, not one per file. Reused while nothing it was built from can
  // have changed: the same change-monitor quiet epoch (taken before the
  // build), pool and domain generations, and every chain it used watched.
  struct UsersIndex {
    std::optional<uint64_t> epoch;  // nullopt: not reusable
    uint64_t pools_generation = 0;
    uint64_t domains_generation = 0;
    std::map<std::pair<uint64_t, uint64_t>, std::vector<std::string>> users;
  };
  std::shared_ptr<const UsersIndex> Users();
  std::mutex users_mu_;
  std::shared_ptr<const UsersIndex> users_index_;  // guarded by users_mu_

  // The prefetch threads (created on first use) and the generations
  // (domain set, pools) the last whole-set prefetch was for. Declared last:
  // destroyed first, it drops the queued work and joins the running tasks
  // before anything they use goes away.
  static constexpr size_t kPrefetchThreads = 4;
  std::mutex prefetch_mu_;
  std::optional<std::pair<uint64_t, uint64_t>> prefetched_;  // guarded by prefetch_mu_
  std::unique_ptr<boost::asio::thread_pool> prefetch_pool_;   // guarded by prefetch_mu_
  bool prefetch_stopped_ = false;                             // guarded by prefetch_mu_
};

// Returns the names of the browsable pools among `pools` whose folder holds
// the file at absolute `path`, compared lexically (so it also answers for a
// file that is gone).
std::vector<std::string> PoolsHolding(const std::vector<core::PoolDef>& pools,
                                      const std::string& path);

// Returns true if `caller` may read a file with this owner and mode, by
// the classic owner/group/other rule (uid 0 always may).
bool CallerCanRead(const Caller& caller, uint32_t uid, uint32_t gid, uint32_t mode);

// Returns the read bits the kernel may enforce on a file that describes the
// image with stat `own` and draws on the first `count` elements of `chain`
// (the kernel serves cached pages to whoever its mode check lets through):
// a class keeps its r bit only if every user of it can read every element.
uint32_t SharedReadBits(const core::FileStat& own, const core::Chain& chain, size_t count);
// The same rule for one more file `other` drawn on: `bits` narrowed.
uint32_t NarrowReadBits(uint32_t bits, const core::FileStat& own, const core::FileStat& other);

}  // namespace chainfs::fs
