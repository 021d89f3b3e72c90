// The domains' view of the tree (DESIGN section 8): MOUNT/.domains, and
// VOL/users. Tree methods; the dispatch is in fs/tree.cc.
#include <sys/stat.h>

#include <algorithm>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "core/render/domain_render.h"
#include "core/render/render.h"
#include "fs/chain_nodes.h"
#include "fs/tree.h"

namespace chainfs::fs {
namespace {

using core::Code;
using core::Error;
using core::Result;
using core::Status;

constexpr uint32_t kReadBits = S_IRUSR | S_IRGRP | S_IROTH;

Status NotFound(const NodeKey& key) { return Error(Code::kNotFound, "{}: no such node", key.Path()); }

using chain_nodes::Contains;

const chain_nodes::Kinds kDiskKinds{NodeKind::kDiskElementDir, NodeKind::kDiskElementFile,
                                    NodeKind::kDiskElementLink, &DiskElementFileNames()};

// The chain cache key of a disk: the disk's XML as shown (a new definition
// or a new start is a new entry) and whether drift is checked.
std::string DiskCacheKey(const core::DomainEntry& entry, const core::DiskDef& disk,
                         uint64_t pools_generation) {
  std::string key = "domain\x1f" + entry.def.name + "\x1f" + disk.target + "\x1f";
  key += entry.running() ? "live\x1f" : "defined\x1f";
  if (disk.top.type == "volume") key += std::to_string(pools_generation) + "\x1f";
  key += disk.xml;
  return key;
}

}  // namespace

Result<std::shared_ptr<const core::DomainEntry>> Tree::Domain(const std::string& name) {
  if (!DomainsEnabled()) return Error(Code::kNotFound, "no domain folder is read");
  std::shared_ptr<const core::DomainSet> set = domains_->Current();
  for (const std::string& line : set->skipped) {
    log_.AddOnce("domain-skip:" + line, "scan", "/.domains", "skipped", line);
  }
  auto it = set->domains.find(name);
  if (it == set->domains.end()) return Error(Code::kNotFound, "no domain '{}'", name);
  return it->second;
}

Result<Tree::DiskState> Tree::Disk(const std::string& domain, const std::string& target) {
  Result<std::shared_ptr<const core::DomainEntry>> entry = Domain(domain);
  if (!entry.ok()) return entry.status();
  DiskState d;
  d.entry = *entry;
  d.disk = core::ShownDisk(*d.entry, target);
  if (!d.disk) return Error(Code::kNotFound, "domain '{}' has no disk '{}'", domain, target);
  std::shared_ptr<const core::DomainEntry> hold = d.entry;
  const core::DiskDef* disk = d.disk;
  d.snap = chains_.GetWith(DiskCacheKey(*d.entry, *d.disk, catalog_.generation()), [&] {
    core::DiskContext ctx = core::MakeDiskContext(catalog_, domain);
    return core::ResolveShownDisk(*inspector_, *hold, *disk, ctx);
  });
  return d;
}

Tree::~Tree() { StopPrefetch(); }

void Tree::StopPrefetch() {
  std::unique_ptr<boost::asio::thread_pool> pool;
  {
    std::lock_guard<std::mutex> lock(prefetch_mu_);
    prefetch_stopped_ = true;
    pool = std::move(prefetch_pool_);
  }
  if (!pool) return;
  pool->stop();  // queued tasks are dropped; running ones finish
  pool->join();
}

void Tree::PrefetchDisks(const std::shared_ptr<const core::DomainSet>& set,
                         const std::string& only) {
  std::pair<uint64_t, uint64_t> generations{set->generation, catalog_.generation()};
  // Posting is cheap; holding the lock keeps StopPrefetch from taking the
  // pool away meanwhile.
  std::lock_guard<std::mutex> lock(prefetch_mu_);
  // Whole-set prefetch done for these generations: its disks are cached
  // (or were dropped for newer chains, which a new prefetch would not help).
  if (prefetch_stopped_ || prefetched_ == generations) return;
  if (only.empty()) prefetched_ = generations;
  if (!prefetch_pool_) prefetch_pool_ = std::make_unique<boost::asio::thread_pool>(kPrefetchThreads);
  size_t budget = chains_.capacity() / 2;
  for (const auto& [name, entry] : set->domains) {
    if (!only.empty() && name != only) continue;
    for (const core::DiskDef& d : entry->def.disks) {
      if (budget == 0) return;
      --budget;
      // Disk() takes the set current when it runs and caches the chain
      // under the key the lookup will use; its errors are the lookup's.
      boost::asio::post(*prefetch_pool_,
                        [this, name = name, target = d.target] { (void)Disk(name, target); });
    }
  }
}

Result<NodeKey> Tree::LookupDomainNode(const NodeKey& parent, const std::string& name) {
  switch (parent.kind) {
    case NodeKind::kDomainsDir: {
      CHAINFS_RETURN_IF_ERROR(Domain(name).status());
      return NodeKey{NodeKind::kDomainDir, name};
    }
    case NodeKind::kDomainDir: {
      Result<std::shared_ptr<const core::DomainEntry>> entry = Domain(parent.pool);
      if (!entry.ok()) return entry.status();
      if (Contains(DomainFileNames(), name)) {
        NodeKey key{NodeKind::kDomainFile, parent.pool};
        key.file = name;
        return key;
      }
      if (core::ShownDisk(**entry, name)) return NodeKey{NodeKind::kDiskDir, parent.pool, name};
      break;
    }
    case NodeKind::kDiskDir: {
      CHAINFS_RETURN_IF_ERROR(Disk(parent.pool, parent.volume).status());
      if (name == kChainDirName) return NodeKey{NodeKind::kDiskChainDir, parent.pool, parent.volume};
      if (!Contains(DiskFileNames(), name)) break;
      NodeKey key{NodeKind::kDiskFile, parent.pool, parent.volume};
      key.file = name;
      return key;
    }
    case NodeKind::kDiskChainDir: {
      if (!chain_nodes::ParseIndex(name)) break;
      Result<DiskState> d = Disk(parent.pool, parent.volume);
      if (!d.ok()) return d.status();
      if (auto key = chain_nodes::LookupElement(parent, name, d->snap->chain(), kDiskKinds)) {
        return *key;
      }
      break;
    }
    case NodeKind::kDiskElementDir: {
      Result<DiskState> d = Disk(parent.pool, parent.volume);
      if (!d.ok()) return d.status();
      auto key = chain_nodes::LookupInElement(
          parent, name, d->snap->chain(), kDiskKinds,
          [&](const NodeKey& link) { return DiskLinkTarget(link, *d->snap).ok(); });
      if (key) return *key;
      break;
    }
    default:
      return Error(Code::kInvalidArgument, "{}: not a directory", parent.Path());
  }
  return Error(Code::kNotFound, "{}/{}: no such entry", parent.Path(), name);
}

Result<std::vector<DirEntry>> Tree::ListDomainNode(const NodeKey& key) {
  std::vector<DirEntry> out;
  switch (key.kind) {
    case NodeKind::kDomainsDir: {
      if (!DomainsEnabled()) return NotFound(key);
      std::shared_ptr<const core::DomainSet> set = domains_->Current();
      for (const std::string& line : set->skipped) {
        log_.AddOnce("domain-skip:" + line, "scan", "/.domains", "skipped", line);
      }
      for (const auto& [name, entry] : set->domains) {
        out.push_back({name, NodeKey{NodeKind::kDomainDir, name}});
      }
      PrefetchDisks(set, "");
      return out;
    }
    case NodeKind::kDomainDir: {
      Result<std::shared_ptr<const core::DomainEntry>> entry = Domain(key.pool);
      if (!entry.ok()) return entry.status();
      for (const std::string& name : DomainFileNames()) {
        NodeKey f{NodeKind::kDomainFile, key.pool};
        f.file = name;
        out.push_back({name, f});
      }
      for (const core::DiskDef& d : (*entry)->def.disks) {
        out.push_back({d.target, NodeKey{NodeKind::kDiskDir, key.pool, d.target}});
      }
      PrefetchDisks(domains_->Current(), key.pool);
      return out;
    }
    case NodeKind::kDiskDir: {
      CHAINFS_RETURN_IF_ERROR(Disk(key.pool, key.volume).status());
      for (const std::string& name : DiskFileNames()) {
        NodeKey f{NodeKind::kDiskFile, key.pool, key.volume};
        f.file = name;
        out.push_back({name, f});
      }
      out.push_back({kChainDirName, NodeKey{NodeKind::kDiskChainDir, key.pool, key.volume}});
      return out;
    }
    case NodeKind::kDiskChainDir: {
      Result<DiskState> d = Disk(key.pool, key.volume);
      if (!d.ok()) return d.status();
      return chain_nodes::ListElements(key, d->snap->chain(), kDiskKinds);
    }
    case NodeKind::kDiskElementDir: {
      Result<DiskState> d = Disk(key.pool, key.volume);
      if (!d.ok()) return d.status();
      if (key.index >= int(d->snap->chain().elements.size())) return NotFound(key);
      return chain_nodes::ListElement(
          key, d->snap->chain(), kDiskKinds,
          [&](const NodeKey& link) { return DiskLinkTarget(link, *d->snap).ok(); });
    }
    default:
      return Error(Code::kInvalidArgument, "{}: not a directory", key.Path());
  }
}

Result<std::string> Tree::DiskLinkTarget(const NodeKey& key, const ChainSnapshot& snap) {
  const core::Chain& chain = snap.chain();
  if (key.index < 0 || key.index >= int(chain.elements.size())) return NotFound(key);
  const core::ChainElement& e = chain.elements[key.index];
  if (e.network || e.path.empty() || e.path[0] != '/') return NotFound(key);
  std::optional<std::string> located = catalog_.Locate(e.path);
  if (!located) return NotFound(key);
  return "../../../../../" + *located;
}

Result<std::string> Tree::RenderDomainNode(const NodeKey& key) {
  switch (key.kind) {
    case NodeKind::kDomainFile: {
      Result<std::shared_ptr<const core::DomainEntry>> entry = Domain(key.pool);
      if (!entry.ok()) return entry.status();
      const core::DomainEntry& e = **entry;
      if (key.file == "state") return core::RenderDomainState(e);
      if (key.file == "uuid") return core::RenderDomainUuid(e);
      if (key.file == "domain.xml") return e.def.xml;
      return NotFound(key);
    }
    case NodeKind::kDiskFile:
    case NodeKind::kDiskElementFile: {
      Result<DiskState> d = Disk(key.pool, key.volume);
      if (!d.ok()) return d.status();
      const core::Chain& chain = d->snap->chain();
      const core::DiskDef& disk = *d->disk;
      if (key.kind == NodeKind::kDiskElementFile) {
        if (key.index < 0 || key.index >= int(chain.elements.size())) return NotFound(key);
        const core::ChainElement& e = chain.elements[size_t(key.index)];
        if (key.file == "origin") return core::RenderElementOrigin(e);
        if (key.file == "index") return core::RenderElementIndex(chain, size_t(key.index));
        return core::RenderElementField(e, key.file);
      }
      const std::string& f = key.file;
      return d->snap->Rendered(f, [&]() -> std::string {
        if (f == "info") return core::RenderInfoText(chain);
        if (f == "info.json") return core::RenderInfoJson(chain);
        if (f == "problems") return core::RenderProblems(chain);
        if (f == "problems.json") return core::RenderProblemsJson(chain, {});
        if (f == "disk.xml") return core::RenderDomainDiskXml(disk, chain);
        return core::RenderDiskField(disk, chain, f);
      });
    }
    default:
      return Error(Code::kInvalidArgument, "{}: not a regular file", key.Path());
  }
}

Result<NodeAttr> Tree::DomainNodeAttr(const NodeKey& key) {
  NodeAttr a;
  a.uid = owner_uid_;
  a.gid = owner_gid_;
  a.atime = a.mtime = a.ctime = mount_time_;
  if (!DomainsEnabled()) return NotFound(key);
  // The kernel may keep what it got while inotify reports every change of
  // both folders (the watcher then drops it, fs/watcher.cc) and, for a
  // disk's nodes, of every image of its chain.
  const core::DomainSources sources = domains_->sources();
  const bool folders_watched =
      (sources.domain_dir.empty() ||
       chains_.WatchesDir(core::NormalizePathLexically(sources.domain_dir))) &&
      (sources.run_dir.empty() || chains_.WatchesDir(core::NormalizePathLexically(sources.run_dir)));
  a.watched = folders_watched;
  if (key.kind == NodeKind::kDomainsDir) {
    a.mode = S_IFDIR | 0555;
    return a;
  }
  Result<std::shared_ptr<const core::DomainEntry>> entry = Domain(key.pool);
  if (!entry.ok()) return entry.status();
  // Everything of a domain takes the owner and read bits of its
  // definition file: libvirt keeps it private to root (it may hold
  // passwords and secrets' names).
  uint32_t bits = kReadBits;
  if (Result<core::FileStat> st = core::StatPath((*entry)->def.origin); st.ok()) {
    a.uid = st->uid;
    a.gid = st->gid;
    a.mtime = a.ctime = st->mtime;
    bits = st->mode & kReadBits;
  }
  const uint32_t dir_mode = S_IFDIR | bits | (bits >> 2);
  if (key.kind != NodeKind::kDomainDir && key.kind != NodeKind::kDomainFile) {
    Result<DiskState> d = Disk(key.pool, key.volume);
    if (!d.ok()) return d.status();
    a.chain = d->snap;
    a.watched = folders_watched && d->snap->watched();
  }
  Result<std::string> text = Error(Code::kNotFound, "");
  switch (key.kind) {
    case NodeKind::kDomainDir:
    case NodeKind::kDiskDir:
    case NodeKind::kDiskChainDir:
    case NodeKind::kDiskElementDir:
      if (key.kind != NodeKind::kDomainDir) {
        Result<DiskState> d = Disk(key.pool, key.volume);
        if (!d.ok()) return d.status();
        if (key.kind == NodeKind::kDiskElementDir &&
            key.index >= int(d->snap->chain().elements.size())) {
          return NotFound(key);
        }
        if (key.kind == NodeKind::kDiskChainDir) {
          a.content = std::to_string(d->snap->chain().elements.size());
        }
      }
      a.mode = dir_mode;
      return a;
    case NodeKind::kDiskElementLink: {
      Result<DiskState> d = Disk(key.pool, key.volume);
      if (!d.ok()) return d.status();
      Result<std::string> target = DiskLinkTarget(key, *d->snap);
      if (!target.ok()) return target.status();
      a.mode = S_IFLNK | 0777;
      a.size = target->size();
      return a;
    }
    default:
      text = RenderDomainNode(key);
      break;
  }
  if (!text.ok()) return text.status();
  a.mode = S_IFREG | bits;
  a.size = text->size();
  a.content = std::move(text).value();
  return a;
}

Status Tree::CheckDomainAccess(const NodeKey& key, const Caller& caller) {
  if (key.kind == NodeKind::kDomainsDir || caller.uid == 0) return Status::Ok();
  Result<std::shared_ptr<const core::DomainEntry>> entry = Domain(key.pool);
  if (!entry.ok()) return entry.status();
  Result<core::FileStat> st = core::StatPath((*entry)->def.origin);
  if (!st.ok() || !CallerCanRead(caller, st->uid, st->gid, st->mode)) {
    return Error(Code::kPermissionDenied, "uid {} may not read the definition of domain '{}'",
                 caller.uid, key.pool);
  }
  if (key.kind == NodeKind::kDomainFile || key.kind == NodeKind::kDomainDir) return Status::Ok();
  Result<DiskState> d = Disk(key.pool, key.volume);
  if (!d.ok()) return d.status();
  const core::Chain& chain = d->snap->chain();
  size_t count = chain.elements.size();
  if (key.kind == NodeKind::kDiskElementFile || key.kind == NodeKind::kDiskElementLink) {
    count = std::min<size_t>(size_t(std::max(key.index, 0)) + 1, count);
  }
  for (size_t i = 0; i < count; ++i) {
    const core::ChainElement& e = chain.elements[i];
    if (!e.stat) continue;
    if (!CallerCanRead(caller, e.stat->uid, e.stat->gid, e.stat->mode)) {
      return Error(Code::kPermissionDenied, "uid {} may not read {} (chain element {})", caller.uid,
                   e.path, i);
    }
  }
  return Status::Ok();
}

std::vector<Tree::DomainUse> Tree::DomainUsers(const std::string& path) {
  std::vector<DomainUse> out;
  if (!DomainsEnabled()) return out;
  Result<core::FileStat> st = core::StatPath(path);
  if (!st.ok()) return out;
  std::shared_ptr<const core::DomainSet> set = domains_->Current();
  for (const auto& [name, entry] : set->domains) {
    for (const core::DiskDef& disk : entry->def.disks) {
      Result<DiskState> d = Disk(name, disk.target);
      if (!d.ok()) continue;
      bool uses = false;
      for (const core::ChainElement& e : d->snap->chain().elements) {
        if (e.stat && e.stat->id.dev == st->id.dev && e.stat->id.ino == st->id.ino) uses = true;
      }
      // A running domain's definition may name another chain for its next
      // start: both count.
      if (!uses && entry->running()) {
        core::DiskContext ctx = core::MakeDiskContext(catalog_, name);
        core::Chain next = core::ResolveDiskChain(*inspector_, disk, ctx);
        for (const core::ChainElement& e : next.elements) {
          if (e.stat && e.stat->id.dev == st->id.dev && e.stat->id.ino == st->id.ino) uses = true;
        }
      }
      if (uses) {
        out.push_back({name, disk.target, entry->running(), entry->defined ? entry->def.origin : ""});
      }
    }
  }
  return out;
}

std::shared_ptr<const Tree::UsersIndex> Tree::Users() {
  std::shared_ptr<const core::DomainSet> domains =
      DomainsEnabled() ? domains_->Current() : nullptr;
  const uint64_t domains_generation = domains ? domains->generation : 0;
  const uint64_t pools_generation = catalog_.generation();
  std::optional<uint64_t> epoch = chains_.QuietEpoch();
  {
    std::lock_guard<std::mutex> lock(users_mu_);
    const std::shared_ptr<const UsersIndex>& kept = users_index_;
    if (kept && kept->epoch && epoch && *kept->epoch == *epoch &&
        kept->pools_generation == pools_generation &&
        kept->domains_generation == domains_generation) {
      return kept;
    }
  }
  auto index = std::make_shared<UsersIndex>();
  index->epoch = epoch;
  index->pools_generation = pools_generation;
  index->domains_generation = domains_generation;
  auto add = [&](const core::Chain& chain, size_t from, const std::string& name) {
    for (size_t i = from; i < chain.elements.size(); ++i) {
      const core::ChainElement& e = chain.elements[i];
      if (!e.stat) continue;
      std::vector<std::string>& list = index->users[{e.stat->id.dev, e.stat->id.ino}];
      if (list.empty() || list.back() != name) list.push_back(name);
    }
  };
  auto note = [&](const ChainSnapshot& snap) {
    if (!snap.watched()) index->epoch.reset();
  };
  if (domains) {
    for (const auto& [name, entry] : domains->domains) {
      for (const core::DiskDef& disk : entry->def.disks) {
        Result<DiskState> d = Disk(name, disk.target);
        if (!d.ok()) continue;
        note(*d->snap);
        const std::string user = name + "/" + disk.target;
        add(d->snap->chain(), 0, user);
        if (entry->running()) {
          // The definition may name another chain for the next start.
          core::DiskContext ctx = core::MakeDiskContext(catalog_, name);
          add(core::ResolveDiskChain(*inspector_, disk, ctx), 0, user);
          index->epoch.reset();
        }
      }
    }
  }
  for (const core::PoolDef& p : catalog_.Pools()) {
    if (!p.Browsable()) continue;
    std::shared_ptr<const core::PoolScan> scan = catalog_.Scan(p.name);
    if (!scan) continue;
    for (const core::VolumeEntry& v : scan->volumes) {
      if (IsReservedPoolEntry(v.name) || v.IsDir()) continue;
      std::shared_ptr<const ChainSnapshot> snap = chains_.Get(v.path);
      note(*snap);
      add(snap->chain(), 1, p.name + "/" + v.name);
    }
  }
  std::lock_guard<std::mutex> lock(users_mu_);
  users_index_ = index;
  return index;
}

Result<std::string> Tree::RenderVolumeUsers(const std::string& pool, const std::string& volume) {
  Result<std::shared_ptr<const core::VolumeEntry>> v = Volume(pool, volume);
  if (!v.ok()) return v.status();
  Result<core::FileStat> st = core::StatPath((*v)->path);
  if (!st.ok()) return st.status();
  std::shared_ptr<const UsersIndex> index = Users();
  auto it = index->users.find({st->id.dev, st->id.ino});
  if (it == index->users.end()) return std::string();
  std::vector<std::string> users;
  const std::string self = pool + "/" + volume;
  for (const std::string& u : it->second) {
    if (u != self) users.push_back(u);
  }
  return core::RenderUsers(users);
}

}  // namespace chainfs::fs
