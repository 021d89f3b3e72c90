#include "fs/operations.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "fs/errno_map.h"
#include "fs/state.h"

namespace chainfs::fs {

namespace {

using core::Result;
using core::Status;

// How long the kernel may keep the fixed directories (they never change).
constexpr double kStaticTimeout = 3600.0;

FsState& StateOf(fuse_req_t req) { return *static_cast<FsState*>(fuse_req_userdata(req)); }

double TimeoutFor(const FsState& fs, const NodeKey& key) {
  // The root's and .chainfs's attributes never change (pools appearing on
  // SIGHUP are entries, invalidated by the watcher).
  if (key.kind == NodeKind::kControlDir || key.kind == NodeKind::kRoot) return kStaticTimeout;
  if (key.kind == NodeKind::kControlFile) return 0.0;
  return fs.config.cache_timeout;
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

void OpInit(void* userdata, struct fuse_conn_info* conn) {
  FsState& fs = *static_cast<FsState*>(userdata);
  fs.Count(Op::kInit);
  // Rendered files change size behind the kernel's back: no async reads,
  // and page cache use is disabled per file with direct_io.
  conn->want &= ~unsigned(FUSE_CAP_ASYNC_READ);
  fs.log.Add("mount", fs.config.mountpoint, "ok",
             fs.config.read_only ? "mounted read-only" : "mounted");
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kLookup, [&](FsState& fs) {
    Result<NodeKey> parent_key = KeyOf(fs, parent);
    if (!parent_key.ok()) return ReplyStatus(req, fs, Op::kLookup, name, parent_key.status());
    std::string path = parent_key->Path() + (parent_key->kind == NodeKind::kRoot ? "" : "/") + name;
    Result<NodeKey> key = fs.tree.Lookup(*parent_key, name);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kLookup, path, key.status());
    Result<NodeAttr> attr = fs.tree.GetAttr(*key);
    if (!attr.ok()) return ReplyStatus(req, fs, Op::kLookup, path, attr.status());
    struct fuse_entry_param e {};
    e.ino = fs.nodes.Ref(*key);
    e.generation = 1;
    e.attr = ToStat(e.ino, *attr);
    e.attr_timeout = TimeoutFor(fs, *key);
    e.entry_timeout = TimeoutFor(fs, *key);
    if (fuse_reply_entry(req, &e) != 0) fs.nodes.Forget(e.ino, 1);  // interrupted
  });
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  GuardedNoReply(req, Op::kForget, [&](FsState& fs) {
    fs.nodes.Forget(ino, nlookup);
    fuse_reply_none(req);
  });
}

void OpForgetMulti(fuse_req_t req, size_t count, struct fuse_forget_data* forgets) {
  GuardedNoReply(req, Op::kForget, [&](FsState& fs) {
    for (size_t i = 0; i < count; ++i) fs.nodes.Forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  });
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
  Guarded(req, Op::kGetattr, [&](FsState& fs) {
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kGetattr, "-", key.status());
    Result<NodeAttr> attr = fs.tree.GetAttr(*key);
    if (!attr.ok()) return ReplyStatus(req, fs, Op::kGetattr, key->Path(), attr.status());
    struct stat st = ToStat(ino, *attr);
    fuse_reply_attr(req, &st, TimeoutFor(fs, *key));
  });
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat*, int, struct fuse_file_info*) {
  Guarded(req, Op::kSetattr, [&](FsState& fs) {
    Result<NodeKey> key = KeyOf(fs, ino);
    std::string path = key.ok() ? key->Path() : "-";
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
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kReadlink, "-", key.status());
    Result<std::string> target = fs.tree.ReadLink(*key, CallerOf(req));
    if (!target.ok()) return ReplyStatus(req, fs, Op::kReadlink, key->Path(), target.status());
    fuse_reply_readlink(req, target->c_str());
  });
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  Guarded(req, Op::kOpendir, [&](FsState& fs) {
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kOpendir, "-", key.status());
    Result<std::vector<DirEntry>> entries = fs.tree.List(*key);
    if (!entries.ok()) return ReplyStatus(req, fs, Op::kOpendir, key->Path(), entries.status());
    fi->fh = fs.handles.AddDir(
        std::make_shared<const std::vector<DirEntry>>(std::move(entries).value()));
    fi->cache_readdir = 0;
    fi->keep_cache = 0;
    if (fuse_reply_open(req, fi) != 0) fs.handles.Remove(fi->fh);  // interrupted
  });
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info* fi) {
  Guarded(req, Op::kReaddir, [&](FsState& fs) {
    HandleTable::Listing listing = fs.handles.Dir(fi->fh);
    if (!listing) {
      return ReplyStatus(req, fs, Op::kReaddir, "-",
                         core::Error(core::Code::kInvalidArgument, "unknown directory handle"));
    }
    const std::vector<DirEntry>& entries = *listing;
    std::vector<char> buf(std::min<size_t>(size, 1 << 20));
    size_t used = 0;
    // Offsets: 1 = ".", 2 = "..", 3 + i = entries[i].
    size_t total = entries.size() + 2;
    for (size_t i = size_t(std::max<off_t>(off, 0)); i < total; ++i) {
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
        st.st_mode = e.key.IsDir() ? S_IFDIR : (e.key.kind == NodeKind::kElementLink ? S_IFLNK : S_IFREG);
      }
      size_t need = fuse_add_direntry(req, buf.data() + used, buf.size() - used, name.c_str(), &st,
                                      off_t(i + 1));
      if (need > buf.size() - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void OpReleasedir(fuse_req_t req, fuse_ino_t, struct fuse_file_info* fi) {
  Guarded(req, Op::kReleasedir, [&](FsState& fs) {
    fs.handles.Remove(fi->fh);
    fuse_reply_err(req, 0);
  });
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  Guarded(req, Op::kOpen, [&](FsState& fs) {
    Result<NodeKey> key = KeyOf(fs, ino);
    if (!key.ok()) return ReplyStatus(req, fs, Op::kOpen, "-", key.status());
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
      Status refused = fs.config.read_only
                           ? core::Error(core::Code::kReadOnly, "mounted read-only")
                           : core::Error(core::Code::kPermissionDenied,
                                         "{} is read-only", key->Path());
      return ReplyStatus(req, fs, Op::kOpen, key->Path(), refused);
    }
    Result<std::string> content = fs.tree.Read(*key, CallerOf(req));
    if (!content.ok()) return ReplyStatus(req, fs, Op::kOpen, key->Path(), content.status());
    fi->fh = fs.handles.AddFile(std::make_shared<const std::string>(std::move(content).value()));
    fi->direct_io = 1;  // sizes change with the images; never serve stale pages
    fi->keep_cache = 0;
    fi->nonseekable = 0;
    if (fuse_reply_open(req, fi) != 0) fs.handles.Remove(fi->fh);  // interrupted
  });
}

void OpRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, struct fuse_file_info* fi) {
  Guarded(req, Op::kRead, [&](FsState& fs) {
    HandleTable::Content content = fs.handles.File(fi->fh);
    if (!content) {
      return ReplyStatus(req, fs, Op::kRead, "-",
                         core::Error(core::Code::kInvalidArgument, "unknown file handle"));
    }
    const std::string& c = *content;
    if (off < 0 || size_t(off) >= c.size()) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    size_t n = std::min(size, c.size() - size_t(off));
    fuse_reply_buf(req, c.data() + off, n);  // `content` keeps the bytes alive
  });
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char*, size_t, off_t, struct fuse_file_info*) {
  Guarded(req, Op::kWrite, [&](FsState& fs) {
    Result<NodeKey> key = KeyOf(fs, ino);
    ReplyStatus(req, fs, Op::kWrite, key.ok() ? key->Path() : "-",
                fs.config.read_only ? core::Error(core::Code::kReadOnly, "mounted read-only")
                                    : core::Error(core::Code::kPermissionDenied, "read-only file"));
  });
}

void OpRelease(fuse_req_t req, fuse_ino_t, struct fuse_file_info* fi) {
  Guarded(req, Op::kRelease, [&](FsState& fs) {
    fs.handles.Remove(fi->fh);
    fuse_reply_err(req, 0);
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
    o.releasedir = OpReleasedir;
    o.open = OpOpen;
    o.read = OpRead;
    o.write = OpWrite;
    o.release = OpRelease;
    o.statfs = OpStatfs;
    return o;
  }();
  return ops;
}

}  // namespace chainfs::fs
