#include "fs/tree.h"

#include <sys/stat.h>

#include <algorithm>

#include <boost/asio/thread_pool.hpp>  // ~unique_ptr in the constructor

#include "core/chain/backing_ref.h"
#include "core/render/render.h"
#include "core/render/tree_render.h"
#include "core/write/in_use.h"
#include "fs/chain_nodes.h"

namespace chainfs::fs {

namespace {

using core::Code;
using core::Error;
using core::Result;
using core::Status;

constexpr uint32_t kReadBits = S_IRUSR | S_IRGRP | S_IROTH;

// Directory mode for an image: r-x wherever the image is readable.
uint32_t DirModeFor(uint32_t image_mode) {
  uint32_t r = image_mode & kReadBits;
  return S_IFDIR | r | (r >> 2);
}

NodeAttr AttrFromStat(const core::FileStat& st, uint32_t mode) {
  NodeAttr a;
  a.mode = mode;
  a.uid = st.uid;
  a.gid = st.gid;
  a.atime = st.atime;
  a.mtime = st.mtime;
  a.ctime = st.ctime;
  return a;
}



using chain_nodes::Contains;

const chain_nodes::Kinds kVolumeKinds{NodeKind::kElementDir, NodeKind::kElementFile,
                                      NodeKind::kElementLink, &ElementFileNames()};

Status NotFound(const NodeKey& key) { return Error(Code::kNotFound, "{}: no such node", key.Path()); }

// The stat that gives element `index` its owner and mode: its own, or the
// nearest element above it that has one (a missing backing file has none).
const core::FileStat* OwnerStat(const core::Chain& chain, int index) {
  for (int i = std::min<int>(index, int(chain.elements.size()) - 1); i >= 0; --i) {
    if (chain.elements[i].stat) return &*chain.elements[i].stat;
  }
  return nullptr;
}

// How many elements (from the top) a volume-level file draws on.
size_t ElementsDrawnOn(const std::string& file, size_t chain_size) {
  if (file == "volume.xml") return std::min<size_t>(2, chain_size);
  if (file == "info" || file == "info.json" || file == "disk.xml" || file == "problems" ||
      file == "problems.json" || file == "data" || file == "map" || file == "map.json") {
    return chain_size;
  }
  return std::min<size_t>(1, chain_size);
}


// How many elements (from the top) element file or link `index` draws on.
size_t ElementDrawsOn(int index, size_t chain_size) {
  return std::min<size_t>(size_t(std::max(index, 0)) + 1, chain_size);
}

// The same for an element file named `file`: chain/N/data reads N and every
// element below it (and, conservatively, those above: the whole chain).
size_t ElementFileDrawsOn(const std::string& file, int index, size_t chain_size) {
  return file == "data" ? chain_size : ElementDrawsOn(index, chain_size);
}

// Returns true if a directory volume (a subdirectory of a dir pool, libvirt's
// volume type 'dir') has file `name`: the one-value files and the documents
// that describe it. It has no chain/, and no disk.xml or rebase: no image.
bool DirVolumeHasFile(const std::string& name) {
  static const std::vector<std::string> names = {
      "allocation", "backing",  "backing_format", "capacity",  "format",
      "info",       "info.json", "problems",      "problems.json", "volume.xml"};
  return Contains(names, name);
}

// Returns true if `chain` describes a directory volume (core::DirVolumeChain).
bool IsDirVolumeChain(const core::Chain& chain) {
  return !chain.elements.empty() && chain.elements[0].stat &&
         S_ISDIR(chain.elements[0].stat->mode);
}

// The chain's own problems as VOL/problems shows them, memoized with the
// snapshot (the in-use lines that follow them are not).
std::string ChainProblems(const ChainSnapshot& snap) {
  return snap.Rendered("problems", [&] { return core::RenderProblems(snap.chain()); });
}
// The same for problems.json: the chain's problems without in-use notes.
std::string ChainProblemsJson(const ChainSnapshot& snap) {
  return snap.Rendered("problems.json", [&] { return core::RenderProblemsJson(snap.chain(), {}); });
}

}  // namespace

// One more file drawn on narrows the bits by the rule below.
uint32_t NarrowReadBits(uint32_t bits, const core::FileStat& own, const core::FileStat& s) {
  bool everyone = (s.mode & kReadBits) == kReadBits;
  if (!everyone && !(s.uid == own.uid && (s.mode & S_IRUSR))) bits &= ~uint32_t(S_IRUSR);
  if (!everyone && !(s.gid == own.gid && (s.mode & S_IRGRP) && (s.mode & S_IRUSR))) {
    bits &= ~uint32_t(S_IRGRP);
  }
  if (!everyone) bits &= ~uint32_t(S_IROTH);
  return bits;
}

// The read bits the kernel may enforce on a file that describes the image
// with stat `own` and draws on the first `count` elements of `chain`: with
// no open request, the kernel serves cached content to whoever its mode
// check lets through, so a class of users keeps its r bit only if every
// user of that class can read every image drawn on. Whether a user belongs
// to another image's group is not known here, so it counts only when it is
// the same group; the bits can only narrow the image's own.
uint32_t SharedReadBits(const core::FileStat& own, const core::Chain& chain, size_t count) {
  uint32_t bits = own.mode & kReadBits;
  for (size_t i = 0; i < count && i < chain.elements.size(); ++i) {
    if (!chain.elements[i].stat) continue;
    const core::FileStat& s = *chain.elements[i].stat;
    if (&s == &own) continue;
    bits = NarrowReadBits(bits, own, s);
  }
  return bits;
}

bool CallerCanRead(const Caller& caller, uint32_t uid, uint32_t gid, uint32_t mode) {
  if (caller.uid == 0) return true;
  if (caller.uid == uid) return (mode & S_IRUSR) != 0;
  bool in_group = caller.gid == gid ||
                  std::find(caller.groups.begin(), caller.groups.end(), gid) != caller.groups.end();
  if (in_group) return (mode & S_IRGRP) != 0;
  return (mode & S_IROTH) != 0;
}

Tree::Tree(core::PoolCatalog& catalog, ChainCache& chains, EventLog& log)
    : catalog_(catalog), chains_(chains), log_(log) {}

void Tree::set_owner(uint32_t uid, uint32_t gid, struct timespec mount_time) {
  owner_uid_ = uid;
  owner_gid_ = gid;
  mount_time_ = mount_time;
}

Result<core::PoolDef> Tree::Pool(const std::string& name) {
  std::optional<core::PoolDef> def = catalog_.FindPool(name);
  if (!def || !def->Browsable()) return Error(Code::kNotFound, "no browsable pool '{}'", name);
  return *def;
}

Result<std::shared_ptr<const core::VolumeEntry>> Tree::Volume(const std::string& pool,
                                                              const std::string& volume) {
  if (IsReservedPoolEntry(volume)) return Error(Code::kNotFound, "'{}' is reserved", volume);
  std::shared_ptr<const core::VolumeEntry> entry = catalog_.FindVolumeShared(pool, volume);
  if (!entry) return Error(Code::kNotFound, "no volume '{}' in pool '{}'", volume, pool);
  return entry;
}

Result<std::shared_ptr<const ChainSnapshot>> Tree::VolumeChain(const std::string& pool,
                                                               const std::string& volume) {
  Result<std::shared_ptr<const core::VolumeEntry>> entry = Volume(pool, volume);
  if (!entry.ok()) return entry.status();
  if ((*entry)->IsDir()) {
    // Nothing to resolve: described from the scan entry, anew at each access
    // (never watched: inotify on the pool does not see the folder's times).
    return std::make_shared<const ChainSnapshot>(
        core::DirVolumeChain(**entry),
        std::vector<std::optional<core::FileIdentity>>{(*entry)->stat.id});
  }
  std::shared_ptr<const ChainSnapshot> snap = chains_.Get((*entry)->path);
  if (snap->chain().elements.empty()) {
    return Error(Code::kNotFound, "{}: no longer a volume", (*entry)->path);
  }
  return snap;
}

std::vector<std::string> PoolsHolding(const std::vector<core::PoolDef>& pools,
                                      const std::string& path) {
  std::string dir = core::DirName(core::NormalizePathLexically(path));
  std::vector<std::string> names;
  for (const core::PoolDef& pool : pools) {
    if (pool.Browsable() && core::NormalizePathLexically(pool.target_path) == dir) {
      names.push_back(pool.name);
    }
  }
  return names;
}

void Tree::InvalidateImage(const std::string& path) {
  chains_.Invalidate(path);
  for (const std::string& pool : PoolsHolding(catalog_.Pools(), path)) catalog_.Invalidate(pool);
}

std::vector<DirEntry> Tree::PoolEntries(const std::string& pool) {
  std::vector<DirEntry> out;
  NodeKey xml{NodeKind::kPoolFile, pool};
  xml.file = kPoolXmlName;
  out.push_back({kPoolXmlName, xml});
  NodeKey tree{NodeKind::kPoolFile, pool};
  tree.file = kPoolTreeName;
  out.push_back({kPoolTreeName, tree});
  std::shared_ptr<const core::PoolScan> scan = catalog_.Scan(pool);
  if (!scan) return out;
  if (!scan->status.ok()) {
    log_.AddOnce("scan:" + pool + ":" + scan->status.message(), "scan", "/" + pool, "error",
                 scan->status.message());
  }
  for (const std::string& line : scan->skipped) {
    log_.AddOnce("skip:" + pool + ":" + line, "scan", "/" + pool, "skipped", line);
  }
  for (const core::VolumeEntry& v : scan->volumes) {
    if (IsReservedPoolEntry(v.name)) {
      log_.AddOnce("reserved:" + v.path, "scan", "/" + pool, "skipped",
                   v.path + ": name is reserved by chainfs");
      continue;
    }
    out.push_back({v.name, NodeKey{NodeKind::kVolumeDir, pool, v.name}});
  }
  return out;
}

std::vector<core::PoolFigures> Tree::PoolMetrics() {
  std::vector<core::PoolFigures> out;
  for (const core::PoolDef& pool : catalog_.Pools()) {
    if (!pool.Browsable()) continue;
    core::PoolFigures f;
    f.pool = pool.name;
    for (const core::TreeVolume& v : PoolChains(pool.name).volumes) {
      const core::Chain& chain = *v.chain;
      ++f.volumes;
      ++(chain.complete ? f.complete : f.broken);
      // As VOL/problems counts them: the chain's problems, then in-use notes.
      for (const core::Problem& p : chain.problems) ++f.problems[std::string(core::ProblemCode(p.kind))];
      if (size_t held = core::ElementsHeldForWriting(chain).size()) f.problems["in-use"] += held;
    }
    out.push_back(std::move(f));
  }
  return out;
}

core::TreePool Tree::PoolChains(const std::string& pool) {
  core::TreePool out;
  out.name = pool;
  for (const DirEntry& entry : PoolEntries(pool)) {
    if (entry.key.kind != NodeKind::kVolumeDir) continue;
    Result<std::shared_ptr<const ChainSnapshot>> snap = VolumeChain(pool, entry.name);
    if (!snap.ok()) continue;  // gone since the scan
    // The snapshot holds the chain: the picture keeps it alive with it.
    std::shared_ptr<const ChainSnapshot> held = *snap;
    out.volumes.push_back({entry.name, std::shared_ptr<const core::Chain>(held, &held->chain())});
  }
  std::sort(out.volumes.begin(), out.volumes.end(),
            [](const core::TreeVolume& a, const core::TreeVolume& b) { return a.name < b.name; });
  return out;
}

std::vector<core::DomainFigures> Tree::DomainMetrics() {
  std::vector<core::DomainFigures> out;
  if (!DomainsEnabled()) return out;
  Result<std::vector<DirEntry>> domains = List(NodeKey{NodeKind::kDomainsDir});
  if (!domains.ok()) return out;
  for (const DirEntry& d : *domains) {
    if (d.key.kind != NodeKind::kDomainDir) continue;
    core::DomainFigures f;
    f.domain = d.name;
    Result<std::vector<DirEntry>> disks = List(d.key);
    if (!disks.ok()) continue;
    for (const DirEntry& disk : *disks) {
      if (disk.key.kind != NodeKind::kDiskDir) continue;
      Result<DiskState> state = Disk(d.name, disk.name);
      if (!state.ok()) continue;
      ++f.disks;
      for (const core::Problem& p : state->snap->chain().problems) {
        ++f.problems[std::string(core::ProblemCode(p.kind))];
      }
    }
    out.push_back(std::move(f));
  }
  return out;
}

Result<NodeKey> Tree::Lookup(const NodeKey& parent, const std::string& name) {
  if (parent.IsDomainNode()) return LookupDomainNode(parent, name);
  switch (parent.kind) {
    case NodeKind::kRoot: {
      if (name == kControlDirName) return NodeKey{NodeKind::kControlDir};
      if (name == kDomainsDirName) {
        if (!DomainsEnabled()) return Error(Code::kNotFound, "no domain folder is read");
        return NodeKey{NodeKind::kDomainsDir};
      }
      Result<core::PoolDef> pool = Pool(name);
      if (!pool.ok()) return pool.status();
      return NodeKey{NodeKind::kPoolDir, name};
    }
    case NodeKind::kControlDir: {
      if (!Contains(ControlFileNames(), name)) break;
      NodeKey key{NodeKind::kControlFile};
      key.file = name;
      return key;
    }
    case NodeKind::kPoolDir: {
      CHAINFS_RETURN_IF_ERROR(Pool(parent.pool).status());
      if (name == kPoolXmlName || name == kPoolTreeName) {
        NodeKey key{NodeKind::kPoolFile, parent.pool};
        key.file = name;
        return key;
      }
      auto v = Volume(parent.pool, name);
      if (!v.ok()) return v.status();
      return NodeKey{NodeKind::kVolumeDir, parent.pool, name};
    }
    case NodeKind::kVolumeDir: {
      auto v = Volume(parent.pool, parent.volume);
      if (!v.ok()) return v.status();
      const bool dir_volume = (*v)->IsDir();
      if (name == kChainDirName && !dir_volume) {
        return NodeKey{NodeKind::kChainDir, parent.pool, parent.volume};
      }
      if (!Contains(VolumeFileNames(), name) || (dir_volume && !DirVolumeHasFile(name))) break;
      NodeKey key{NodeKind::kVolumeFile, parent.pool, parent.volume};
      key.file = name;
      return key;
    }
    case NodeKind::kChainDir: {
      if (!chain_nodes::ParseIndex(name)) break;
      auto snap = VolumeChain(parent.pool, parent.volume);
      if (!snap.ok()) return snap.status();
      if (IsDirVolumeChain((*snap)->chain())) break;
      if (auto key = chain_nodes::LookupElement(parent, name, (*snap)->chain(), kVolumeKinds)) {
        return *key;
      }
      break;
    }
    case NodeKind::kElementDir: {
      auto snap = VolumeChain(parent.pool, parent.volume);
      if (!snap.ok()) return snap.status();
      auto key = chain_nodes::LookupInElement(
          parent, name, (*snap)->chain(), kVolumeKinds,
          [&](const NodeKey& link) { return LinkTarget(link, **snap).ok(); });
      if (key) return *key;
      break;
    }
    default:
      return Error(Code::kInvalidArgument, "{}: not a directory", parent.Path());
  }
  return Error(Code::kNotFound, "{}/{}: no such entry", parent.Path(), name);
}

Result<std::vector<DirEntry>> Tree::List(const NodeKey& key) {
  if (key.IsDomainNode()) return ListDomainNode(key);
  std::vector<DirEntry> out;
  switch (key.kind) {
    case NodeKind::kRoot:
      out.push_back({kControlDirName, NodeKey{NodeKind::kControlDir}});
      if (DomainsEnabled()) out.push_back({kDomainsDirName, NodeKey{NodeKind::kDomainsDir}});
      for (const core::PoolDef& pool : catalog_.Pools()) {
        if (pool.Browsable()) out.push_back({pool.name, NodeKey{NodeKind::kPoolDir, pool.name}});
      }
      return out;
    case NodeKind::kControlDir:
      for (const std::string& name : ControlFileNames()) {
        NodeKey f{NodeKind::kControlFile};
        f.file = name;
        out.push_back({name, f});
      }
      return out;
    case NodeKind::kPoolDir:
      CHAINFS_RETURN_IF_ERROR(Pool(key.pool).status());
      return PoolEntries(key.pool);
    case NodeKind::kVolumeDir: {
      auto v = Volume(key.pool, key.volume);
      if (!v.ok()) return v.status();
      const bool dir_volume = (*v)->IsDir();
      for (const std::string& name : VolumeFileNames()) {
        if (dir_volume && !DirVolumeHasFile(name)) continue;
        NodeKey f{NodeKind::kVolumeFile, key.pool, key.volume};
        f.file = name;
        out.push_back({name, f});
      }
      if (!dir_volume) {
        out.push_back({kChainDirName, NodeKey{NodeKind::kChainDir, key.pool, key.volume}});
      }
      return out;
    }
    case NodeKind::kChainDir: {
      auto snap = VolumeChain(key.pool, key.volume);
      if (!snap.ok()) return snap.status();
      if (IsDirVolumeChain((*snap)->chain())) return NotFound(key);
      return chain_nodes::ListElements(key, (*snap)->chain(), kVolumeKinds);
    }
    case NodeKind::kElementDir: {
      auto snap = VolumeChain(key.pool, key.volume);
      if (!snap.ok()) return snap.status();
      if (key.index >= int((*snap)->chain().elements.size())) return NotFound(key);
      return chain_nodes::ListElement(
          key, (*snap)->chain(), kVolumeKinds,
          [&](const NodeKey& link) { return LinkTarget(link, **snap).ok(); });
    }
    default:
      return Error(Code::kInvalidArgument, "{}: not a directory", key.Path());
  }
}

Result<std::string> Tree::LinkTarget(const NodeKey& key, const ChainSnapshot& snap) {
  const core::Chain& chain = snap.chain();
  if (key.index < 0 || key.index >= int(chain.elements.size())) return NotFound(key);
  const core::ChainElement& e = chain.elements[key.index];
  if (e.network) return NotFound(key);
  std::optional<std::string> located = catalog_.Locate(e.path);
  if (!located) return NotFound(key);
  return "../../../../" + *located;
}

Result<std::string> Tree::Render(const NodeKey& key) {
  if (key.IsDomainNode()) return RenderDomainNode(key);
  switch (key.kind) {
    case NodeKind::kControlFile:
      if (key.file == "version") return fmt::format("chainfs {}\n", CHAINFS_VERSION);
      if (key.file == "log") return log_.Render();
      if (key.file == "stats") return stats_renderer_ ? stats_renderer_() : std::string();
      if (key.file == "metrics") return metrics_renderer_ ? metrics_renderer_() : std::string();
      return NotFound(key);
    case NodeKind::kPoolFile: {
      Result<core::PoolDef> pool = Pool(key.pool);
      if (!pool.ok()) return pool.status();
      if (key.file == kPoolTreeName) return core::RenderPoolTree(PoolChains(key.pool));
      return core::RenderPoolXml(*pool, core::StatPoolSpace(*pool));
    }
    case NodeKind::kVolumeFile:
    case NodeKind::kElementFile: {
      auto snap = VolumeChain(key.pool, key.volume);
      if (!snap.ok()) return snap.status();
      return RenderChainFile(key, **snap);
    }
    default:
      return Error(Code::kInvalidArgument, "{}: not a regular file", key.Path());
  }
}

Result<std::string> Tree::RenderChainFile(const NodeKey& key, const ChainSnapshot& snap) {
  const core::Chain& chain = snap.chain();
  if (key.kind == NodeKind::kElementFile) {
    if (key.index < 0 || key.index >= int(chain.elements.size())) return NotFound(key);
    return core::RenderElementField(chain.elements[key.index], key.file);
  }
  if (key.kind != NodeKind::kVolumeFile || chain.elements.empty()) return NotFound(key);
  const std::string& f = key.file;
  if (IsDirVolumeChain(chain) && !DirVolumeHasFile(f)) return NotFound(key);
  if (f == "rebase") {
    // Job state, not a chain document: never cached with the snapshot.
    std::shared_ptr<const core::VolumeEntry> v = catalog_.FindVolumeShared(key.pool, key.volume);
    if (!v) return NotFound(key);
    return rebase_renderer_ ? rebase_renderer_(v->path) : std::string();
  }
  if (f == "users") return RenderVolumeUsers(key.pool, key.volume);  // others' chains: not memoized
  if (f == "problems") {
    // The chain's problems, plus a line per element a process holds for
    // writing now (QEMU's locks, which no event reports: not memoized).
    return ChainProblems(snap) + core::RenderInUse(chain, core::ElementsHeldForWriting(chain));
  }
  if (f == "problems.json") {
    std::vector<int> held = core::ElementsHeldForWriting(chain);
    return held.empty() ? ChainProblemsJson(snap) : core::RenderProblemsJson(chain, held);
  }
  if (f == "map" || f == "map.json") return RenderMap(key, snap);
  if ((f == "volume.xml" || f == "disk.xml") && !chain.elements[0].meta) {
    // An image whose own header cannot be read has no XML (chainctl says
    // so and fails). Here the file is empty, as a map that cannot be made:
    // `ls -lR` and `find | xargs cat` must never fail; the log says why,
    // and `problems` says what is wrong with the image.
    std::string why = chain.problems.empty() ? "cannot read image" : chain.problems[0].message;
    log_.AddOnce("xml:" + key.Path() + ":" + why, "read", key.Path(), "empty", why);
    return std::string();
  }
  return snap.Rendered(f, [&]() -> std::string {
    if (f == "info") return core::RenderInfoText(chain);
    if (f == "info.json") return core::RenderInfoJson(chain);
    if (f == "volume.xml") return core::RenderVolumeXml(chain);
    if (f == "disk.xml") return core::RenderDiskXml(chain);
    return core::RenderElementField(chain.elements[0], f);
  });
}

Result<NodeAttr> Tree::GetAttr(const NodeKey& key) {
  if (IsDataNode(key)) return DataAttr(key);
  if (key.IsDomainNode()) return DomainNodeAttr(key);
  NodeAttr a;
  a.uid = owner_uid_;
  a.gid = owner_gid_;
  a.atime = a.mtime = a.ctime = mount_time_;
  switch (key.kind) {
    case NodeKind::kRoot:
    case NodeKind::kControlDir:
      a.mode = S_IFDIR | 0555;
      return a;
    case NodeKind::kControlFile: {
      Result<std::string> text = Render(key);
      if (!text.ok()) return text.status();
      a.mode = S_IFREG | 0444;
      a.size = text->size();
      a.content = std::move(text).value();
      return a;
    }
    case NodeKind::kPoolDir:
    case NodeKind::kPoolFile: {
      Result<core::PoolDef> pool = Pool(key.pool);
      if (!pool.ok()) return pool.status();
      Result<core::FileStat> dir = core::StatPath(pool->target_path);
      uint32_t mode = dir.ok() ? dir->mode : 0555;
      if (dir.ok()) {
        a = AttrFromStat(*dir, 0);
      }
      if (key.kind == NodeKind::kPoolDir) {
        a.mode = S_IFDIR | (mode & 0555);
        a.watched = chains_.WatchesDir(core::NormalizePathLexically(pool->target_path));
        return a;
      }
      Result<std::string> text = Render(key);
      if (!text.ok()) return text.status();
      a.mode = S_IFREG | (mode & kReadBits);
      a.size = text->size();
      a.content = std::move(text).value();
      return a;
    }
    case NodeKind::kVolumeDir:
    case NodeKind::kChainDir: {
      // One stat, no chain resolution: `ls -l` (and readdirplus) of a big
      // pool must not resolve every chain in it.
      auto v = Volume(key.pool, key.volume);
      if (!v.ok()) return v.status();
      Result<core::FileStat> st = core::StatPath((*v)->path);
      if (!st.ok()) return st.status();
      NodeAttr d = AttrFromStat(*st, DirModeFor(st->mode));
      if (key.kind == NodeKind::kVolumeDir) {
        d.watched = !(*v)->IsDir() && chains_.WatchesDirOf((*v)->path);
        return d;
      }
      if ((*v)->IsDir()) return NotFound(key);  // a directory volume has no chain/
      // chain/ lists one directory per element: resolved, unlike the above.
      auto snap = VolumeChain(key.pool, key.volume);
      if (!snap.ok()) return snap.status();
      d.content = std::to_string((*snap)->chain().elements.size());
      d.chain = *snap;
      d.watched = (*snap)->watched();
      return d;
    }
    case NodeKind::kVolumeFile: {
      auto snap = VolumeChain(key.pool, key.volume);
      if (!snap.ok()) return snap.status();
      const core::Chain& chain = (*snap)->chain();
      const core::FileStat* st = OwnerStat(chain, 0);
      if (st) a = AttrFromStat(*st, 0);
      Result<std::string> text = RenderChainFile(key, **snap);
      if (!text.ok()) return text.status();
      a.mode = S_IFREG |
               (st ? SharedReadBits(*st, chain, ElementsDrawnOn(key.file, chain.elements.size()))
                   : 0444);
      a.size = text->size();
      a.content = std::move(text).value();
      a.chain = *snap;
      a.watched = (*snap)->watched();
      // Longer than the memoized problems: it has in-use lines, which the
      // kernel must not keep (a lock comes and goes without an event).
      if ((key.file == "problems" && a.size != ChainProblems(**snap).size()) ||
          (key.file == "problems.json" && a.size != ChainProblemsJson(**snap).size())) {
        a.watched = false;
      }
      return a;
    }
    case NodeKind::kElementDir:
    case NodeKind::kElementFile:
    case NodeKind::kElementLink: {
      auto snap = VolumeChain(key.pool, key.volume);
      if (!snap.ok()) return snap.status();
      const core::Chain& chain = (*snap)->chain();
      if (key.index < 0 || key.index >= int(chain.elements.size())) return NotFound(key);
      const core::FileStat* st = OwnerStat(chain, key.index);
      uint32_t mode = st ? st->mode : 0444;
      if (st) a = AttrFromStat(*st, 0);
      a.chain = *snap;
      a.watched = (*snap)->watched();
      if (key.kind == NodeKind::kElementDir) {
        a.mode = DirModeFor(mode);
        return a;
      }
      if (key.kind == NodeKind::kElementLink) {
        Result<std::string> target = LinkTarget(key, **snap);
        if (!target.ok()) return target.status();
        a.mode = S_IFLNK | 0777;
        a.size = target->size();
        return a;
      }
      Result<std::string> text = RenderChainFile(key, **snap);
      if (!text.ok()) return text.status();
      a.mode = S_IFREG |
               (st ? SharedReadBits(*st, chain, ElementDrawsOn(key.index, chain.elements.size()))
                   : (mode & kReadBits));
      a.size = text->size();
      a.content = std::move(text).value();
      return a;
    }
    default:
      break;  // the domains' view: DomainNodeAttr
  }
  return NotFound(key);
}

Status Tree::CheckAccess(const NodeKey& key, const ChainSnapshot& snap, const Caller& caller) {
  const core::Chain& chain = snap.chain();
  size_t count = 0;
  if (key.kind == NodeKind::kVolumeFile) {
    count = ElementsDrawnOn(key.file, chain.elements.size());
  } else if (key.kind == NodeKind::kElementFile || key.kind == NodeKind::kElementLink) {
    count = ElementFileDrawsOn(key.file, key.index, chain.elements.size());
  }
  for (size_t i = 0; i < count; ++i) {
    const core::ChainElement& e = chain.elements[i];
    if (!e.stat) continue;  // nothing was read from a file that could not be opened
    if (!CallerCanRead(caller, e.stat->uid, e.stat->gid, e.stat->mode)) {
      return Error(Code::kPermissionDenied, "uid {} may not read {} (chain element {})", caller.uid,
                   e.path, i);
    }
  }
  return Status::Ok();
}

Result<std::string> Tree::Read(const NodeKey& key, const Caller& caller) {
  if (key.IsDomainNode()) {
    CHAINFS_RETURN_IF_ERROR(CheckDomainAccess(key, caller));
    return RenderDomainNode(key);
  }
  if (key.kind == NodeKind::kVolumeFile || key.kind == NodeKind::kElementFile) {
    auto snap = VolumeChain(key.pool, key.volume);
    if (!snap.ok()) return snap.status();
    CHAINFS_RETURN_IF_ERROR(CheckAccess(key, **snap, caller));
    return RenderChainFile(key, **snap);
  }
  return Render(key);
}

Status Tree::Authorize(const NodeKey& key, const Caller& caller) {
  if (key.IsDomainNode()) return CheckDomainAccess(key, caller);
  if (key.kind != NodeKind::kVolumeFile && key.kind != NodeKind::kElementFile &&
      key.kind != NodeKind::kElementLink) {
    return Status::Ok();
  }
  auto snap = VolumeChain(key.pool, key.volume);
  if (!snap.ok()) return snap.status();
  return CheckAccess(key, **snap, caller);
}

Result<std::string> Tree::ReadLink(const NodeKey& key, const Caller& caller) {
  if (key.kind == NodeKind::kDiskElementLink) {
    CHAINFS_RETURN_IF_ERROR(CheckDomainAccess(key, caller));
    Result<DiskState> d = Disk(key.pool, key.volume);
    if (!d.ok()) return d.status();
    return DiskLinkTarget(key, *d->snap);
  }
  if (key.kind != NodeKind::kElementLink) {
    return Error(Code::kInvalidArgument, "{}: not a symlink", key.Path());
  }
  auto snap = VolumeChain(key.pool, key.volume);
  if (!snap.ok()) return snap.status();
  CHAINFS_RETURN_IF_ERROR(CheckAccess(key, **snap, caller));
  return LinkTarget(key, **snap);
}

}  // namespace chainfs::fs
