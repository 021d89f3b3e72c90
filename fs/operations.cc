#include "fs/operations.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/pool/change_monitor.h"
#include "fs/errno_map.h"
#include "fs/state.h"
#include "fs/write_ops.h"

namespace chainfs::fs {

namespace {

using core::Result;
using core::Status;

// How long the kernel may keep the fixed directories (they never change).
constexpr double kStaticTimeout = 3600.0;

FsState& StateOf(fuse_req_t req) { return *static_cast<FsState*>(fuse_req_userdata(req)); }

double TimeoutFor(const FsState& fs, const NodeKey& key, const NodeAttr& attr) {
  switch (key.kind) {
    case NodeKind::kRoot:
    case NodeKind::kControlDir:
      // Their attributes never change (pools appearing on SIGHUP are
      // entries, invalidated by the watcher).
      return kStaticTimeout;
    case NodeKind::kControlFile:  // counters and the log: new at every access
    case NodeKind::kPoolFile:     // live filesystem sizes; .create
      return 0.0;
    default:
      break;
  }
  if (IsPendingLinkKey(key)) return 0.0;
  if (key.kind == NodeKind::kVolumeFile && key.file == kRebaseFileName) return 0.0;  // job state
  // Who uses an image depends on other chains and on the domains.
  if (key.kind == NodeKind::kVolumeFile && key.file == "users") return 0.0;
  return attr.watched ? fs.config.cache_timeout : 0.0;
}

struct stat ToStat(uint64_t ino, const NodeAttr& a) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_size = static_cast<off_t>(a.size);
  st.st_blksize = 4096;
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st.st_atim = a.atime;
  st.st_mtim = a.mtime;
  st.st_ctim = a.ctime;
  return st;
}

// Replies with the errno of `status`; failures other than "not found" are
// counted and logged with their reason.
void ReplyStatus(fuse_req_t req, FsState& fs, Op op, const std::string& path, const Status& status) {
  int err = ErrnoFromStatus(status);
  if (err == 0) err = EIO;
  if (err != ENOENT) {
    fs.CountError();
    fs.log.Add(OpName(op), path, ErrnoName(err), status.message());
  }
  fuse_reply_err(req, err);
}

// Replies with the errno of a write-side status (already logged by
// fs/write_ops.cc).
void ReplyWriteStatus(fuse_req_t req, const Status& status) {
  int err = ErrnoFromStatus(status);
  fuse_reply_err(req, err == 0 ? EIO : err);
}

// Runs `body`, turning anything thrown into ENOMEM/EIO (logged). `body`
// replies itself, as its last action, so a throw means no reply was sent.
template <typename Body>
void Guarded(fuse_req_t req, Op op, Body&& body) {
  FsState& fs = StateOf(req);
  fs.Count(op);
  int err = EIO;
  std::string what;
  try {
    body(fs);
    return;
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
    what = "out of memory";
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "unknown exception";
  }
  try {
    fs.CountError();
    fs.log.Add(OpName(op), "-", ErrnoName(err), "internal error: " + what);
  } catch (...) {
  }
  fuse_reply_err(req, err);
}

// Like Guarded, for the operations that have no reply (forget).
template <typename Body>
void GuardedNoReply(fuse_req_t req, Op op, Body&& body) {
  FsState& fs = StateOf(req);
  fs.Count(op);
  try {
    body(fs);
    return;
  } catch (...) {
    fs.CountError();
  }
  fuse_reply_none(req);
}

Caller CallerOf(fuse_req_t req) {
  Caller caller;
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  caller.uid = ctx->uid;
  caller.gid = ctx->gid;
  if (caller.uid == 0) return caller;  // root reads everything; skip /proc
  std::vector<gid_t> groups(64);
  int n = fuse_req_getgroups(req, int(groups.size()), groups.data());
  if (n > int(groups.size())) {
    groups.resize(size_t(n));
    n = fuse_req_getgroups(req, int(groups.size()), groups.data());
  }
  if (n > 0) {
    groups.resize(std::min(size_t(n), groups.size()));
    caller.groups.assign(groups.begin(), groups.end());
  }
  return caller;
}

Result<NodeKey> KeyOf(FsState& fs, fuse_ino_t ino) {
  std::optional<NodeKey> key = fs.nodes.Get(ino);
  if (!key) return core::Error(core::Code::kNotFound, "inode {} is not known", ino);
  return *key;
}

// Returns the attributes to reply for `ino`: a file's size and mtime come
// from the content kept for it (KernelCache), so that what the kernel caches
// and what READ serves agree; the chain the node draws on is recorded for
// invalidation.
Result<NodeAttr> Describe(FsState& fs, uint64_t ino, const NodeKey& key) {
  Result<NodeAttr> attr = AttrWithWrites(fs, key);
  if (!attr.ok()) return attr;
  if (attr->chain) {
    const ChainSnapshot* snap = attr->chain.get();
    fs.kcache.RecordChain(EncodePrefix(key.pool, key.volume), snap, [snap] {
      std::vector<std::string> paths;
      for (const core::ChainElement& e : snap->chain().elements) {
        if (!e.network) paths.push_back(core::NormalizePathLexically(e.path));
      }
      return paths;
    });
    attr->chain.reset();
  }
  if (attr->content) {
    KernelCache::Version v = fs.kcache.Update(ino, std::move(*attr->content), attr->mtime);
    attr->content.reset();
    attr->mtime = v.mtime;
    if (!S_ISDIR(attr->mode)) attr->size = v.bytes.size();
  }
  return attr;
}

// Drops `n` kernel lookup references of `ino`, and what is kept for it once
// the kernel forgot it.
void ForgetNode(FsState& fs, uint64_t ino, uint64_t n) {
  if (fs.nodes.Forget(ino, n)) fs.kcache.Forget(ino);
}

// Files whose content is pushed into the kernel's page cache after a
// LOOKUP or GETATTR reply (PushPages): rendered text the kernel may keep
// (a cache timeout), small enough that a page or a few hold it.
constexpr size_t kPushLimit = 64 << 10;
// How long a push after a lookup waits for the kernel to make the inode
// (the looking-up thread does that once it runs again).
constexpr std::chrono::microseconds kLookupPushWait{2000};

bool Pushable(const NodeKey& key) {
  switch (key.kind) {
    case NodeKind::kVolumeFile:
    case NodeKind::kElementFile:
    case NodeKind::kDomainFile:
    case NodeKind::kDiskFile:
    case NodeKind::kDiskElementFile:
      break;
    default:
      return false;
  }
  // Never a file users write (backing, backing_format, rebase, .create):
  // pages stored while a write is under way would overwrite the user's
  // bytes in the page cache, and the WRITE would carry the old content.
  return !Tree::IsDataNode(key) && !IsPendingLinkKey(key) && !IsWritableFile(key);
}

// After a reply that described `ino` with `timeout` and `mtime`: pushes
// its content, if it is still the content described.
void PushAfterReply(FsState& fs, uint64_t ino, const NodeKey& key, double timeout,
                    const struct timespec& mtime, std::chrono::microseconds retry_for) {
  if (timeout <= 0 || !Pushable(key)) return;
  std::optional<KernelCache::Version> v = fs.kcache.Current(ino);
  if (!v || v->bytes.empty() || v->bytes.size() > kPushLimit) return;
  if (v->mtime.tv_sec != mtime.tv_sec || v->mtime.tv_nsec != mtime.tv_nsec) return;
  fs.CountPush(PushPages(fs, ino, *v, retry_for));
}

// Fills an entry reply for `key`, taking one kernel lookup reference.
Result<struct fuse_entry_param> EntryFor(FsState& fs, const NodeKey& key) {
  struct fuse_entry_param e {};
  e.ino = fs.nodes.Ref(key);
  Result<NodeAttr> attr = Describe(fs, e.ino, key);
  if (!attr.ok()) {
    ForgetNode(fs, e.ino, 1);
    return attr.status();
  }
  e.generation = 1;
  e.attr = ToStat(e.ino, *attr);
  e.attr_timeout = TimeoutFor(fs, key, *attr);
  e.entry_timeout = e.attr_timeout;
  return e;
}

void OpInit(void* userdata, struct fuse_conn_info* conn) {
  FsState& fs = *static_cast<FsState*>(userdata);
  fs.Count(Op::kInit);
  // Rendered files change size behind the kernel's back: no async reads.
  conn->want &= ~unsigned(FUSE_CAP_ASYNC_READ);
  // No OPEN, OPENDIR or FLUSH requests (OpOpen and OpOpendir answer ENOSYS,
  // flush is not implemented): a read of cached content costs no request.
  // Files then keep their pages, directories their listings, until the
  // daemon invalidates them or their attributes show a new size or mtime
  // (auto_inval_data).
  conn->want |= conn->capable & unsigned(FUSE_CAP_NO_OPEN_SUPPORT | FUSE_CAP_NO_OPENDIR_SUPPORT |
                                         FUSE_CAP_AUTO_INVAL_DATA);
  conn->want &= ~unsigned(FUSE_CAP_EXPLICIT_INVAL_DATA | FUSE_CAP_WRITEBACK_CACHE);
  // O_TRUNC must reach the daemon as a SETATTR: with no OPEN, an atomic
  // truncating open would never be seen.
  conn->want &= ~unsigned(FUSE_CAP_ATOMIC_O_TRUNC);
  // READDIRPLUS only pays when the kernel may keep what it returns: with
  // zero timeouts every entry would be looked up again anyway.
  if (fs.config.cache_timeout <= 0) {
    conn->want &= ~unsigned(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
  }
  fs.log.Add("mount", fs.config.mountpoint, "ok",
             fs.config.read_only ? "mounted read-only" : "mounted");
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kLookup, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, parent);  // the kernel holds parent's lock
    core::QuietEpochScope quiet;  // read-only request: one epoch sample
    Result<NodeKey> parent_key = KeyOf(fs, parent);
    if (!parent_key.ok()) return ReplyStatus(req, fs, Op::kLookup, name, parent_key.status());
    // Only built on failure: lookups are the most frequent request.
    auto path = [&] {
      return parent_key->Path() + (parent_key->kind == NodeKind::kRoot ? "" : "/") + name;
    };
    std::optional<NodeKey> write_node = LookupWriteNode(*parent_key, name);
    Result<NodeKey> key =
        write_node ? Result<NodeKey>(*write_node) : fs.tree.Lookup(*parent_key, name);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kLookup, path(), key.status());
    Result<struct fuse_entry_param> e = EntryFor(fs, *key);
    if (!e.ok()) return ReplyStatus(req, fs, Op::kLookup, path(), e.status());
    fs.gate.ClearDropped(parent, name);
    if (fuse_reply_entry(req, &*e) != 0) {
      ForgetNode(fs, e->ino, 1);  // interrupted
      return;
    }
    // A looked-up file is read next, as a rule (cat, grep): its pages are
    // there before the read. The inode is being made by the looking-up
    // thread meanwhile.
    PushAfterReply(fs, e->ino, *key, e->attr_timeout, e->attr.st_mtim, kLookupPushWait);
  });
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  GuardedNoReply(req, Op::kForget, [&](FsState& fs) {
    ForgetNode(fs, ino, nlookup);
    fuse_reply_none(req);
  });
}

void OpForgetMulti(fuse_req_t req, size_t count, struct fuse_forget_data* forgets) {
  GuardedNoReply(req, Op::kForget, [&](FsState& fs) {
    for (size_t i = 0; i < count; ++i) ForgetNode(fs, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  });
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
  Guarded(req, Op::kGetattr, [&](FsState& fs) {
    core::QuietEpochScope quiet;  // read-only request: one epoch sample
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kGetattr, "-", key.status());
    Result<NodeAttr> attr = Describe(fs, ino, *key);
    if (!attr.ok()) return ReplyStatus(req, fs, Op::kGetattr, key->Path(), attr.status());
    struct stat st = ToStat(ino, *attr);
    double timeout = TimeoutFor(fs, *key, *attr);
    if (fuse_reply_attr(req, &st, timeout) != 0) return;
    // After an invalidation the kernel refreshes the attributes, then reads.
    PushAfterReply(fs, ino, *key, timeout, st.st_mtim, std::chrono::microseconds(0));
  });
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
               struct fuse_file_info*) {
  Guarded(req, Op::kSetattr, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, ino);  // the kernel holds its inode lock
    Result<NodeKey> key = KeyOf(fs, ino);
    std::string path = key.ok() ? key->Path() : "-";
    // Truncation: open(2) with O_TRUNC, as every `echo VALUE > FILE` does
    // (other attribute changes that come with it are ignored).
    if (key.ok() && (to_set & FUSE_SET_ATTR_SIZE)) {
      ScopedRequestInode current(ino);
      Status s = TruncateFile(fs, ino, *key, uint64_t(std::max<off_t>(attr->st_size, 0)));
      if (!s.ok()) return ReplyWriteStatus(req, s);
      Result<NodeAttr> now = AttrWithWrites(fs, *key);
      if (!now.ok()) return ReplyStatus(req, fs, Op::kSetattr, path, now.status());
      now->size = 0;
      struct stat st = ToStat(ino, *now);
      fuse_reply_attr(req, &st, 0.0);
      return;
    }
    if (fs.config.read_only) {
      return ReplyStatus(req, fs, Op::kSetattr, path,
                         core::Error(core::Code::kReadOnly, "mounted read-only"));
    }
    ReplyStatus(req, fs, Op::kSetattr, path,
                core::Error(core::Code::kPermissionDenied,
                            "attributes follow the image; change them on the host"));
  });
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Guarded(req, Op::kReadlink, [&](FsState& fs) {
    core::QuietEpochScope quiet;  // read-only request: one epoch sample
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kReadlink, "-", key.status());
    if (IsPendingLinkKey(*key)) {
      fuse_reply_readlink(req, key->file.c_str());
      return;
    }
    Result<std::string> target = fs.tree.ReadLink(*key, CallerOf(req));
    if (!target.ok()) return ReplyStatus(req, fs, Op::kReadlink, key->Path(), target.status());
    fuse_reply_readlink(req, target->c_str());
  });
}

// Open requests are answered ENOSYS: the kernel then opens every file and
// directory itself from then on (FUSE_CAP_NO_OPEN(DIR)_SUPPORT). Its
// permission check (default_permissions, against the modes of Tree::GetAttr)
// is the access check; writes are checked again when they arrive.
void OpOpen(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) {
  Guarded(req, Op::kOpen, [&](FsState&) { fuse_reply_err(req, ENOSYS); });
}

void OpOpendir(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) {
  Guarded(req, Op::kOpendir, [&](FsState&) { fuse_reply_err(req, ENOSYS); });
}

// The file type a directory entry shows (d_type).
mode_t DirentType(const NodeKey& key) {
  if (key.IsDir()) return S_IFDIR;
  if (key.kind == NodeKind::kElementLink || key.kind == NodeKind::kDiskElementLink) return S_IFLNK;
  return S_IFREG;
}

// Returns the listing a READDIR at `off` continues: a new one at offset 0,
// else the one taken then (there are no open handles to hold it).
Result<std::shared_ptr<const std::vector<DirEntry>>> ListingAt(FsState& fs, fuse_ino_t ino,
                                                               off_t off) {
  if (off > 0) {
    if (auto kept = fs.kcache.Listing(ino)) return kept;
  }
  Result<NodeKey> key = KeyOf(fs, ino);
  if (!key.ok()) return key.status();
  Result<std::vector<DirEntry>> entries = fs.tree.List(*key);
  if (!entries.ok()) return entries.status();
  return std::make_shared<const std::vector<DirEntry>>(std::move(entries).value());
}

// Keeps `listing` for the READDIR that continues it when this reply stopped
// at entry `next` before its end; forgets it when the reply reached the end.
void KeepListingIfUnfinished(FsState& fs, fuse_ino_t ino, off_t off,
                             const std::shared_ptr<const std::vector<DirEntry>>& listing,
                             size_t next) {
  bool finished = next >= listing->size() + 2;
  if (finished) {
    if (off > 0) fs.kcache.SetListing(ino, nullptr);
  } else if (off == 0) {
    fs.kcache.SetListing(ino, listing);
  }
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  Guarded(req, Op::kReaddir, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, ino);  // the kernel holds its lock (shared)
    core::QuietEpochScope quiet;  // read-only request: one epoch sample
    auto listing = ListingAt(fs, ino, off);
    if (!listing.ok()) return ReplyStatus(req, fs, Op::kReaddir, "-", listing.status());
    const std::vector<DirEntry>& entries = **listing;
    std::vector<char> buf(std::min<size_t>(size, 1 << 20));
    size_t used = 0;
    // Offsets: 1 = ".", 2 = "..", 3 + i = entries[i].
    size_t total = entries.size() + 2;
    size_t i = size_t(std::max<off_t>(off, 0));
    for (; i < total; ++i) {
      struct stat st {};
      std::string name;
      if (i == 0) {
        name = ".";
        st.st_ino = ino;
        st.st_mode = S_IFDIR;
      } else if (i == 1) {
        name = "..";
        st.st_ino = FUSE_ROOT_ID;  // the kernel resolves ".." itself
        st.st_mode = S_IFDIR;
      } else {
        const DirEntry& e = entries[i - 2];
        name = e.name;
        st.st_ino = fs.nodes.PeekIno(e.key);
        st.st_mode = DirentType(e.key);
      }
      size_t need = fuse_add_direntry(req, buf.data() + used, buf.size() - used, name.c_str(), &st,
                                      off_t(i + 1));
      if (need > buf.size() - used) break;
      used += need;
    }
    KeepListingIfUnfinished(fs, ino, off, *listing, i);
    fuse_reply_buf(req, buf.data(), used);
  });
}

// READDIRPLUS (only with a cache timeout, see OpInit): directory entries
// come with their attributes, so a walk down the tree spares the lookups
// that would follow; each counts as one lookup of its node. Files come
// without (see below).
void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info*) {
  Guarded(req, Op::kReaddir, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, ino);  // the kernel holds its lock (shared)
    core::QuietEpochScope quiet;  // read-only request: one epoch sample
    auto listing = ListingAt(fs, ino, off);
    if (!listing.ok()) return ReplyStatus(req, fs, Op::kReaddir, "-", listing.status());
    const std::vector<DirEntry>& entries = **listing;
    std::vector<char> buf(std::min<size_t>(size, 1 << 20));
    size_t used = 0;
    size_t total = entries.size() + 2;  // offsets as in OpReaddir
    std::vector<uint64_t> sent;          // inodes whose lookup count went up
    size_t i = size_t(std::max<off_t>(off, 0));
    for (; i < total; ++i) {
      struct fuse_entry_param e {};
      const char* name = nullptr;
      std::optional<uint64_t> counted;  // inode whose lookup count this entry took
      if (i < 2) {
        // "." and "..": the kernel takes no reference on these.
        name = i == 0 ? "." : "..";
        e.attr.st_ino = i == 0 ? ino : FUSE_ROOT_ID;
        e.attr.st_mode = S_IFDIR;
      } else if (const DirEntry& d = entries[i - 2]; !d.key.IsDir()) {
        // Files and links come by name and type only (node id 0: the
        // kernel makes no inode for them, and looks them up when they are
        // used). A walk (find, ls -R, a glob) needs no file's attributes,
        // and each would cost a rendering of its content and a node kept
        // for as long as the kernel holds it.
        name = d.name.c_str();
        e.attr.st_ino = fs.nodes.PeekIno(d.key);
        e.attr.st_mode = DirentType(d.key);
      } else {
        Result<struct fuse_entry_param> entry = EntryFor(fs, d.key);
        if (!entry.ok()) continue;  // gone since offset 0: leave it out
        e = *entry;
        name = d.name.c_str();
        counted = e.ino;
      }
      size_t need = fuse_add_direntry_plus(req, buf.data() + used, buf.size() - used, name, &e,
                                           off_t(i + 1));
      if (need > buf.size() - used) {
        if (counted) ForgetNode(fs, *counted, 1);  // not sent after all
        break;
      }
      if (counted) sent.push_back(*counted);
      used += need;
    }
    KeepListingIfUnfinished(fs, ino, off, *listing, i);
    if (fuse_reply_buf(req, buf.data(), used) != 0) {  // interrupted: nothing reached the kernel
      for (uint64_t n : sent) ForgetNode(fs, n, 1);
    }
  });
}

// READ serves the content whose size the kernel holds (the last one
// described, see Describe). The access rule is checked again with the
// reading process's ids; the kernel has checked the node's mode already.
void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  Guarded(req, Op::kRead, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, ino);  // the kernel holds page locks
    core::QuietEpochScope quiet;  // read-only request: one epoch sample
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kRead, "-", key.status());
    if (IsCreateFileKey(*key)) {
      return ReplyStatus(req, fs, Op::kRead, key->Path(),
                         core::Error(core::Code::kPermissionDenied,
                                     "{} is write-only: write a libvirt <volume> XML to it",
                                     kCreateFileName));
    }
    if (Tree::IsDataNode(*key)) {
      // Guest bytes, read from the chain for this request (DESIGN section 9).
      Result<std::string> bytes = fs.tree.ReadData(*key, CallerOf(req), uint64_t(std::max<off_t>(off, 0)), size);
      if (!bytes.ok()) return ReplyStatus(req, fs, Op::kRead, key->Path(), bytes.status());
      fuse_reply_buf(req, bytes->data(), bytes->size());
      return;
    }
    Status may = fs.tree.Authorize(*key, CallerOf(req));
    if (!may.ok()) return ReplyStatus(req, fs, Op::kRead, key->Path(), may);
    // A read further on continues the content the read from 0 got, so a
    // file that changed in between is never read torn (KernelCache::Pin).
    std::optional<KernelCache::Version> v;
    if (off > 0) {
      if (std::optional<KernelCache::PinnedRead> pin = fs.kcache.Pinned(ino)) {
        if (!pin->version && size_t(off) >= pin->length) {
          fuse_reply_buf(req, nullptr, 0);  // the end the first read reached
          return;
        }
        v = std::move(pin->version);
      }
    }
    if (!v) v = fs.kcache.Current(ino);
    if (!v) {
      Result<NodeAttr> attr = Describe(fs, ino, *key);
      if (!attr.ok()) return ReplyStatus(req, fs, Op::kRead, key->Path(), attr.status());
      v = fs.kcache.Current(ino);
    }
    if (v && off == 0) fs.kcache.Pin(ino, *v, v->bytes.size() <= size);
    if (!v || off < 0 || size_t(off) >= v->bytes.size()) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    const std::string& c = v->bytes;
    size_t n = std::min(size, c.size() - size_t(off));
    fuse_reply_buf(req, c.data() + off, n);
  });
}

// SEEK_DATA / SEEK_HOLE: for data files from the chain's allocation map
// (cp --sparse, qemu-img convert and tar -S skip holes); every other file
// is all data. SEEK_SET/CUR/END never reach the daemon.
void OpLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info*) {
  Guarded(req, Op::kLseek, [&](FsState& fs) {
    core::QuietEpochScope quiet;  // read-only request: one epoch sample
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kLseek, "-", key.status());
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    if (off < 0) {
      fuse_reply_err(req, ENXIO);
      return;
    }
    if (Tree::IsDataNode(*key)) {
      Status may = fs.tree.Authorize(*key, CallerOf(req));
      if (!may.ok()) return ReplyStatus(req, fs, Op::kLseek, key->Path(), may);
      Result<uint64_t> at = fs.tree.SeekData(*key, uint64_t(off), whence == SEEK_DATA);
      if (!at.ok()) {
        if (at.status().code() == core::Code::kNotFound) {
          fuse_reply_err(req, ENXIO);
          return;
        }
        return ReplyStatus(req, fs, Op::kLseek, key->Path(), at.status());
      }
      fuse_reply_lseek(req, off_t(*at));
      return;
    }
    Result<NodeAttr> attr = Describe(fs, ino, *key);
    if (!attr.ok()) return ReplyStatus(req, fs, Op::kLseek, key->Path(), attr.status());
    if (uint64_t(off) >= attr->size) {
      fuse_reply_err(req, ENXIO);
      return;
    }
    fuse_reply_lseek(req, whence == SEEK_DATA ? off : off_t(attr->size));
  });
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             struct fuse_file_info*) {
  Guarded(req, Op::kWrite, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, ino);  // the kernel holds its inode lock
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kWrite, "-", key.status());
    ScopedRequestInode current(ino);  // its pages are locked until we reply
    Result<size_t> n = WriteFile(fs, CallerOf(req), ino, *key, std::string_view(buf, size), off);
    if (!n.ok()) return ReplyWriteStatus(req, n.status());
    fuse_reply_write(req, *n);
  });
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  Guarded(req, Op::kStatfs, [&](FsState&) {
    struct statvfs sv {};
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
  });
}

// The write side (DESIGN section 2): thin translations to fs/write_ops.h.

Result<NodeKey> ParentKey(FsState& fs, fuse_ino_t parent) { return KeyOf(fs, parent); }

void OpSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kSymlink, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, parent);
    Result<NodeKey> parent_key = ParentKey(fs, parent);
    if (!parent_key.ok()) return ReplyStatus(req, fs, Op::kSymlink, name, parent_key.status());
    Result<NodeKey> key = SymlinkOverlay(fs, CallerOf(req), *parent_key, name, link);
    if (!key.ok()) return ReplyWriteStatus(req, key.status());
    // The kernel wants a symlink here; the name is a volume directory from
    // the next lookup on (the placeholder has zero timeouts).
    Result<struct fuse_entry_param> e = EntryFor(fs, *key);
    if (!e.ok()) return ReplyStatus(req, fs, Op::kSymlink, key->Path(), e.status());
    if (fuse_reply_entry(req, &*e) != 0) ForgetNode(fs, e->ino, 1);
  });
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  Guarded(req, Op::kRename, [&](FsState& fs) {
    DirGate::Scope busy_from(fs.gate, parent);
    DirGate::Scope busy_to(fs.gate, newparent == parent ? 0 : newparent);
    Result<NodeKey> from = ParentKey(fs, parent);
    if (!from.ok()) return ReplyStatus(req, fs, Op::kRename, name, from.status());
    Result<NodeKey> to = ParentKey(fs, newparent);
    if (!to.ok()) return ReplyStatus(req, fs, Op::kRename, newname, to.status());
    Status s = RenameVolume(fs, CallerOf(req), *from, name, *to, newname, flags);
    if (!s.ok()) return ReplyWriteStatus(req, s);
    // The kernel moves its dentry: the inodes under it now name the new volume.
    if (from->pool != to->pool || std::string(name) != newname) {
      fs.nodes.Rename(from->pool, name, to->pool, newname);
    }
    if (fs.config.fault_wedge_rename && fs.session) {
      // Blocks on the directory lock this very request holds (test only).
      fuse_lowlevel_notify_inval_entry(fs.session, parent, name, std::strlen(name));
    }
    fuse_reply_err(req, 0);
  });
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kRmdir, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, parent);
    Result<NodeKey> from = ParentKey(fs, parent);
    if (!from.ok()) return ReplyStatus(req, fs, Op::kRmdir, name, from.status());
    Status s = RemoveVolume(fs, CallerOf(req), *from, name);
    if (!s.ok()) return ReplyWriteStatus(req, s);
    fs.gate.NoteDropped(parent, name);  // the kernel deletes its entry itself
    fuse_reply_err(req, 0);
  });
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t) {
  Guarded(req, Op::kMkdir, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, parent);
    Result<NodeKey> from = ParentKey(fs, parent);
    std::string path = from.ok() ? from->Path() + "/" + name : name;
    ReplyWriteStatus(req, RefuseChange(fs, "mkdir", path,
                                       "volumes are made with ln -s BACKING POOL/NEW or by "
                                       "writing a <volume> XML to POOL/.create"));
  });
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kUnlink, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, parent);
    Result<NodeKey> from = ParentKey(fs, parent);
    std::string path = from.ok() ? from->Path() + "/" + name : name;
    ReplyWriteStatus(req, RefuseChange(fs, "unlink", path,
                                       "files of the tree cannot be removed; rmdir POOL/VOL "
                                       "deletes an image"));
  });
}

// open(2) with O_CREAT of a name the kernel has no entry for. Only
// POOL/.create exists to be opened this way; its content arrives by WRITE.
void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t,
              struct fuse_file_info* fi) {
  Guarded(req, Op::kCreate, [&](FsState& fs) {
    DirGate::Scope busy(fs.gate, parent);
    Result<NodeKey> from = ParentKey(fs, parent);
    if (!from.ok()) return ReplyStatus(req, fs, Op::kCreate, name, from.status());
    std::optional<NodeKey> key = LookupWriteNode(*from, name);
    if (!key) {
      return ReplyWriteStatus(
          req, RefuseChange(fs, "create", from->Path() + "/" + name,
                            "new files cannot be made here; ln -s BACKING POOL/NEW makes an "
                            "overlay and POOL/.create takes a <volume> XML"));
    }
    Status may = CheckWritable(fs, CallerOf(req), *key);
    if (!may.ok()) return ReplyWriteStatus(req, may);
    Result<struct fuse_entry_param> e = EntryFor(fs, *key);
    if (!e.ok()) return ReplyStatus(req, fs, Op::kCreate, key->Path(), e.status());
    {
      ScopedRequestInode current(e->ino);
      (void)TruncateFile(fs, e->ino, *key, 0);  // a new document starts
    }
    fi->fh = 0;
    fi->direct_io = 1;
    if (fuse_reply_create(req, &*e, fi) != 0) ForgetNode(fs, e->ino, 1);
  });
}

}  // namespace

const struct fuse_lowlevel_ops& MakeOperations() {
  static const struct fuse_lowlevel_ops ops = [] {
    struct fuse_lowlevel_ops o {};
    o.init = OpInit;
    o.lookup = OpLookup;
    o.forget = OpForget;
    o.forget_multi = OpForgetMulti;
    o.getattr = OpGetattr;
    o.setattr = OpSetattr;
    o.readlink = OpReadlink;
    o.opendir = OpOpendir;
    o.readdir = OpReaddir;
    o.readdirplus = OpReaddirplus;
    o.open = OpOpen;
    o.read = OpRead;
    o.lseek = OpLseek;
    o.write = OpWrite;
    o.statfs = OpStatfs;
    o.symlink = OpSymlink;
    o.rename = OpRename;
    o.rmdir = OpRmdir;
    o.mkdir = OpMkdir;
    o.unlink = OpUnlink;
    o.create = OpCreate;
    // No flush: its ENOSYS spares every close(2) a request (values are
    // applied when written, fs/write_ops.h).
    return o;
  }();
  return ops;
}

}  // namespace chainfs::fs
