#include "fs/write_ops.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/chain/backing_ref.h"
#include "core/format/driver.h"
#include "core/format/qcow2/writer.h"
#include "core/pool/pool_scan.h"
#include "core/util/escape.h"
#include "core/util/shell.h"
#include "core/write/create.h"
#include "core/write/in_use.h"
#include "core/write/loop_check.h"
#include "core/write/rebase.h"
#include "core/write/remove.h"
#include "core/write/rename.h"
#include "core/write/retarget.h"
#include "core/write/volume_xml_parse.h"
#include "fs/errno_map.h"
#include "fs/kernel_cache.h"
#include "fs/state.h"

namespace chainfs::fs {

namespace {

using core::Code;
using core::Error;
using core::Result;
using core::Status;

// Logs the outcome of a change: "ok" with `done`, or the errno and reason.
Status Logged(FsState& fs, const char* op, const std::string& path, Status s,
              const std::string& done) {
  if (s.ok()) {
    fs.log.Add(op, path, "ok", done);
  } else {
    int err = ErrnoFromStatus(s);
    fs.CountError();
    fs.log.Add(op, path, ErrnoName(err == 0 ? EIO : err), s.message());
  }
  return s;
}

Status ReadOnly() { return Error(Code::kReadOnly, "mounted read-only (-o ro)"); }

// EPERM has no Code of its own; it travels as kIo with the saved errno.
Status NotPermitted(const std::string& reason) { return Status(Code::kIo, reason, EPERM); }

// Refuses a change of the header of a directory volume (a subdirectory of a
// dir pool): EISDIR, as qemu-img says when given a folder. Ok for an image.
Status RefuseDirVolumeHeader(const core::VolumeEntry& v, const std::string& shown) {
  if (!v.IsDir()) return Status::Ok();
  return Status(Code::kIo,
                fmt::format("'{}' is a directory (a volume of type dir): it has no image header "
                            "to change",
                            shown),
                EISDIR);
}

// Refuses to rename, remove or create inside a directory volume: EPERM.
// chainfs changes images only; the folder is the administrator's.
Status RefuseDirVolumeEntry(const core::VolumeEntry& v, const std::string& shown,
                            const char* what) {
  if (!v.IsDir()) return Status::Ok();
  return NotPermitted(fmt::format(
      "'{}' is a directory (a volume of type dir): chainfs {}; do it on the host", shown, what));
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

std::string ChildPath(const NodeKey& parent, const std::string& name) {
  return parent.kind == NodeKind::kRoot ? "/" + name : parent.Path() + "/" + name;
}

Result<core::PoolDef> BrowsablePool(FsState& fs, const std::string& name) {
  std::optional<core::PoolDef> def = fs.catalog.FindPool(name);
  if (!def || !def->Browsable()) return Error(Code::kNotFound, "no browsable pool '{}'", name);
  return *def;
}

Result<core::VolumeEntry> FindVolume(FsState& fs, const std::string& pool,
                                     const std::string& volume) {
  if (IsReservedPoolEntry(volume)) return Error(Code::kNotFound, "'{}' is reserved", volume);
  std::optional<core::VolumeEntry> v = fs.catalog.FindVolume(pool, volume);
  if (!v) return Error(Code::kNotFound, "no volume '{}' in pool '{}'", volume, pool);
  return *v;
}

Status CheckNewName(const std::string& name) {
  if (!core::IsAcceptableVolumeName(name) || IsReservedPoolEntry(name)) {
    return Error(Code::kInvalidArgument,
                 "'{}' cannot be a volume name (reserved, or has control characters)", name);
  }
  return Status::Ok();
}

// The absolute paths of every volume of every browsable pool.
std::vector<std::string> AllVolumePaths(FsState& fs) {
  std::vector<std::string> out;
  for (const core::PoolDef& pool : fs.catalog.Pools()) {
    if (!pool.Browsable()) continue;
    std::shared_ptr<const core::PoolScan> scan = fs.catalog.Scan(pool.name);
    if (!scan) continue;
    for (const core::VolumeEntry& v : scan->volumes) {
      if (!v.IsDir()) out.push_back(v.path);  // a folder has no backing to name anything
    }
  }
  return out;
}

// Drops what the daemon caches about the images at `paths` (created,
// rewritten, renamed or removed): the chains through them and the scans of
// their pool folders (Tree::InvalidateImage). Timestamps are coarse, so
// revalidation by (size, mtime, ctime) alone could miss a header rewritten
// in the same tick: the inspector's parsed headers go too when headers were
// rewritten. Then the kernel drops its pages and attributes of every node
// drawn from them before the change is answered, so the next access
// through the mount sees it (entries follow from the watcher's inotify
// events and the kernel's own bookkeeping of the request).
void AfterChange(FsState& fs, const std::vector<std::string>& paths, bool headers_rewritten) {
  if (headers_rewritten) fs.inspector.Clear();
  for (const std::string& path : paths) fs.tree.InvalidateImage(path);
  InvalidateKernelImages(fs, paths);
}

Status CheckCallerReads(const Caller& caller, const std::string& path) {
  if (caller.uid == 0) return Status::Ok();
  Result<core::FileStat> st = core::StatPath(path);
  if (!st.ok()) return st.status();
  if (!CallerCanRead(caller, st->uid, st->gid, st->mode)) {
    return Error(Code::kPermissionDenied, "uid {} may not read '{}'", caller.uid, path);
  }
  return Status::Ok();
}

Status CheckCallerWrites(const Caller& caller, const core::FileStat& st, const std::string& path) {
  if (!CallerCanWrite(caller, st.uid, st.gid, st.mode)) {
    return Error(Code::kPermissionDenied, "uid {} may not change '{}'", caller.uid, path);
  }
  return Status::Ok();
}

// Refuses a change of `path` while a background rebase works on it (the
// rebased image, or the new backing it is being rebased onto).
Status CheckNoRebase(FsState& fs, const std::string& path) {
  if (fs.rebases.Involves(path)) {
    return Error(Code::kBusy, "a rebase involving '{}' is running (see VOL/rebase)", path);
  }
  return Status::Ok();
}

// Owner and mode of a file made on behalf of `caller`: a root daemon gives
// the file to the caller, as a local file system would.
core::NewFileOptions FileOptionsFor(const Caller& caller, uint32_t mode) {
  core::NewFileOptions opts;
  opts.mode = mode;
  if (::geteuid() == 0 && caller.uid != 0) {
    opts.uid = caller.uid;
    opts.gid = caller.gid;
  }
  return opts;
}

// A backing as it will be recorded, and the file it names on the host.
struct BackingChoice {
  std::string as_written;
  std::string resolved;
};

// A relative name whose first component has a ':' would read as a protocol.
std::string GuardColon(std::string s) {
  if (s.substr(0, s.find('/')).find(':') != std::string::npos) s = "./" + s;
  return s;
}

// Turns mount components POOL/VOL into a backing: just the name for a
// volume of `from_pool`, else the volume's absolute host path.
Result<BackingChoice> MountVolumeAsBacking(FsState& fs, const std::string& from_pool,
                                           const std::vector<std::string>& parts,
                                           const std::string& shown) {
  if (parts.size() != 2) {
    return Error(Code::kInvalidArgument,
                 "'{}' is not a volume: inside the mount a backing is POOL/VOLUME", shown);
  }
  Result<core::PoolDef> pool = BrowsablePool(fs, parts[0]);
  if (!pool.ok()) return pool.status();
  Result<core::VolumeEntry> v = FindVolume(fs, parts[0], parts[1]);
  if (!v.ok()) return v.status();
  if (v->IsDir()) {
    return Status(Code::kIo,
                  fmt::format("'{}' is a directory (a volume of type dir), not an image: it "
                              "cannot be a backing file",
                              shown),
                  EISDIR);
  }
  if (parts[0] == from_pool) return BackingChoice{GuardColon(parts[1]), v->path};
  return BackingChoice{v->path, v->path};
}

// Splits a path into components, resolving "." and ".."; `start` holds the
// components of the directory it is relative to. kInvalidArgument if it
// climbs above the mount's root.
Result<std::vector<std::string>> WalkMountPath(std::vector<std::string> start, std::string_view rel,
                                               const std::string& shown) {
  size_t i = 0;
  while (i <= rel.size()) {
    size_t j = rel.find('/', i);
    if (j == std::string_view::npos) j = rel.size();
    std::string_view part = rel.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (start.empty()) {
        return Error(Code::kInvalidArgument,
                     "'{}' leads out of the mount; give an absolute host path instead", shown);
      }
      start.pop_back();
      continue;
    }
    start.emplace_back(part);
  }
  return start;
}

// Maps an absolute path inside the mount to the host; nullopt when `path`
// is not inside the mount.
std::optional<Result<BackingChoice>> MapMountPath(FsState& fs, const std::string& from_pool,
                                                  const std::string& path) {
  const std::string& mp = fs.config.mountpoint;
  if (mp.empty() || path.compare(0, mp.size(), mp) != 0) return std::nullopt;
  if (path.size() > mp.size() && path[mp.size()] != '/') return std::nullopt;
  Result<std::vector<std::string>> parts = WalkMountPath({}, path.substr(mp.size()), path);
  if (!parts.ok()) return Result<BackingChoice>(parts.status());
  return MountVolumeAsBacking(fs, from_pool, *parts, path);
}

// Reads the target of `ln -s TARGET POOL/NEW` (DESIGN section 2).
Result<BackingChoice> MapLinkTarget(FsState& fs, const std::string& pool,
                                    const std::string& target) {
  if (target.empty()) return Error(Code::kInvalidArgument, "empty link target");
  if (target[0] == '/') {
    if (auto mapped = MapMountPath(fs, pool, target)) return *mapped;
    return BackingChoice{target, target};
  }
  Result<std::vector<std::string>> parts = WalkMountPath({pool}, target, target);
  if (!parts.ok()) return parts.status();
  return MountVolumeAsBacking(fs, pool, *parts, target);
}

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; });
}

// The trust context of the mount's writes: the pools' recorded formats and
// volumes, and refusals phrased as the mount's file operations (POOL/VOL
// when the image is a volume; chainctl's command where the mount has no
// file for it).
core::TrustContext MountTrust(FsState& fs) {
  core::TrustContext trust = fs.catalog.MakeTrustContext(fs.inspector);
  core::VolumeLocator locate = fs.catalog.MakeLocator();
  trust.suggest = [locate](const core::SuggestionArgs& a) -> std::string {
    std::optional<std::string> vol;
    if (locate && !a.image.empty()) vol = locate(a.image);
    const std::string v = vol ? core::ShellQuote(*vol) : std::string("VOL");
    const std::string b = core::ShellQuote(a.backing);
    switch (a.what) {
      case core::Suggestion::kDeclareFormatForCreate:
        return fmt::format(
            "write to POOL/.create a <volume> whose <backingStore> has <path>{}</path> and "
            "<format type='FMT'/>, or chainctl create -F FMT -b {} NEW",
            core::EscapeOneLine(a.backing), b);
      case core::Suggestion::kDeclareFormatForRetarget:
        return fmt::format(
            "echo FMT > {}/backing_format, then echo {} > {}/backing again (a recorded format "
            "that the new backing probes as is kept), or chainctl rebase -u -F FMT -b {} {}",
            v, b, v, b, core::ShellQuote(a.image));
      case core::Suggestion::kDeclareFormatForRebase:
        return fmt::format("{}/rebase takes no format: chainctl rebase -F FMT -b {} {}", v, b,
                           core::ShellQuote(a.image));
      case core::Suggestion::kRetargetInstead:
        return fmt::format("echo {} > {}/backing (metadata only, when it holds the same data)", b,
                           v);
      case core::Suggestion::kFlattenInstead:
        return fmt::format("echo '' > {}/rebase", v);
    }
    return core::ChainctlSuggestion(a);
  };
  return trust;
}

// Strips the one trailing newline `echo` adds; refuses anything else that
// is not a single line.
Result<std::string> OneLine(std::string_view value, const char* what) {
  if (!value.empty() && value.back() == '\n') value.remove_suffix(1);
  if (value.find('\n') != std::string_view::npos) {
    return Error(Code::kInvalidArgument, "{} takes one line, not '{}'", what,
                 core::ShortToken(value, 120));
  }
  return std::string(value);
}

Status ApplyBacking(FsState& fs, const Caller& caller, const NodeKey& key, std::string_view raw) {
  Result<std::string> value = OneLine(raw, "backing");
  if (!value.ok()) return value.status();
  Result<core::VolumeEntry> v = FindVolume(fs, key.pool, key.volume);
  if (!v.ok()) return v.status();
  CHAINFS_RETURN_IF_ERROR(RefuseDirVolumeHeader(*v, key.Path()));
  CHAINFS_RETURN_IF_ERROR(CheckCallerWrites(caller, v->stat, v->path));
  CHAINFS_RETURN_IF_ERROR(CheckNoRebase(fs, v->path));
  std::string backing = *value;
  if (backing.empty()) {
    return Error(Code::kInvalidArgument,
                 "an empty backing would drop the backing file and change what the guest sees; "
                 "use VOL/rebase to flatten");
  }
  // A path inside the mount is recorded as the host path it shows.
  if (backing[0] == '/') {
    if (auto mapped = MapMountPath(fs, key.pool, backing)) {
      if (!mapped->ok()) return mapped->status();
      backing = (*mapped)->resolved;
    }
  }
  Result<core::BackingRef> ref = core::ClassifyBacking(backing, v->path);
  if (!ref.ok()) return ref.status();
  if (!ref->resolved_path.empty()) {
    Status readable = CheckCallerReads(caller, ref->resolved_path);
    if (!readable.ok() && readable.code() != Code::kNotFound) return readable;
  }
  core::TrustContext trust = MountTrust(fs);
  Status s = core::Retarget(fs.inspector, v->path, backing, trust);
  if (s.ok()) AfterChange(fs, {v->path}, true);
  return s;
}

Status ApplyBackingFormat(FsState& fs, const Caller& caller, const NodeKey& key,
                          std::string_view raw) {
  Result<std::string> value = OneLine(raw, "backing_format");
  if (!value.ok()) return value.status();
  Result<core::VolumeEntry> v = FindVolume(fs, key.pool, key.volume);
  if (!v.ok()) return v.status();
  CHAINFS_RETURN_IF_ERROR(RefuseDirVolumeHeader(*v, key.Path()));
  CHAINFS_RETURN_IF_ERROR(CheckCallerWrites(caller, v->stat, v->path));
  if (value->empty()) return Error(Code::kInvalidArgument, "empty format name");
  CHAINFS_RETURN_IF_ERROR(CheckNoRebase(fs, v->path));
  Status s = core::SetBackingFormat(v->path, *value);
  if (s.ok()) AfterChange(fs, {v->path}, true);
  return s;
}

// `echo PATH > VOL/rebase` / `echo "" > VOL/rebase`: checks what can be
// checked now (caller, target, format, image locks, no job running) and
// starts SafeRebase as a background job; sets `shown` to what the log says.
Status ApplyRebase(FsState& fs, const Caller& caller, const NodeKey& key, std::string_view raw,
                   std::string* shown) {
  Result<std::string> value = OneLine(raw, "rebase");
  if (!value.ok()) return value.status();
  Result<core::VolumeEntry> v = FindVolume(fs, key.pool, key.volume);
  if (!v.ok()) return v.status();
  CHAINFS_RETURN_IF_ERROR(RefuseDirVolumeHeader(*v, key.Path()));
  CHAINFS_RETURN_IF_ERROR(CheckCallerWrites(caller, v->stat, v->path));
  std::optional<std::string> backing;
  std::string target;
  if (!value->empty()) {
    backing = *value;
    // A path inside the mount is recorded as the host path it shows.
    if ((*backing)[0] == '/') {
      if (auto mapped = MapMountPath(fs, key.pool, *backing)) {
        if (!mapped->ok()) return mapped->status();
        backing = (*mapped)->resolved;
      }
    }
    Result<core::BackingRef> ref = core::ClassifyBacking(*backing, v->path);
    if (!ref.ok()) return ref.status();
    if (ref->resolved_path.empty()) {
      return Error(Code::kUnsupported,
                   "'{}' is a network source whose content cannot be compared here; use "
                   "echo PATH > VOL/backing (metadata only) when it holds the same data",
                   *backing);
    }
    target = ref->resolved_path;
    Result<core::FileStat> st = core::StatPath(target);
    if (!st.ok()) {
      if (st.status().code() == Code::kNotFound) {
        return Error(Code::kNotFound, "new backing '{}' does not exist", target);
      }
      return st.status();
    }
    CHAINFS_RETURN_IF_ERROR(CheckCallerReads(caller, target));
  }
  *shown = backing ? fmt::format("rebase onto '{}'", *backing) : std::string("flatten");
  Result<std::shared_ptr<const core::Inspection>> image = fs.inspector.Inspect(v->path);
  if (!image.ok()) return image.status();
  if ((*image)->probed_format != "qcow2") {
    return Error(Code::kUnsupported, "'{}' is {}, not qcow2; only qcow2 images can be rebased",
                 v->path, (*image)->probed_format);
  }
  if (fs.rebases.Running(v->path)) {
    return Error(Code::kBusy, "a rebase of '{}' is already running (cat VOL/rebase shows it)",
                 v->path);
  }
  CHAINFS_RETURN_IF_ERROR(CheckNoRebase(fs, v->path));  // the new backing of another job
  if (!target.empty() && fs.rebases.Running(target)) {
    return Error(Code::kBusy, "'{}' is being rebased itself; wait for it to finish", target);
  }
  CHAINFS_RETURN_IF_ERROR(core::CheckNotInUse(v->path));

  const std::string image_path = v->path;
  const std::string log_path = NodeKey(NodeKind::kVolumeDir, key.pool, key.volume).Path();
  auto trust = std::make_shared<core::TrustContext>(MountTrust(fs));
  RebaseJobs::Work work = [&fs, image_path, backing, trust](const RebaseJobs::Progress& progress) {
    return core::SafeRebase(fs.inspector, image_path, backing, std::nullopt, *trust,
                            [&progress](uint64_t done, uint64_t total) { progress(done, total); });
  };
  std::string what = *shown;
  RebaseJobs::Finished finished = [&fs, image_path, log_path, what](const Status& s,
                                                                    double seconds) {
    // Even a failed copy may have allocated clusters: forget the image.
    AfterChange(fs, {image_path}, true);
    Logged(fs, "rebase", log_path, s, fmt::format("{} finished in {:.1f} s", what, seconds));
  };
  return fs.rebases.Start(image_path, target, backing, std::move(work), std::move(finished));
}

// The owner/group/mode of a volume made from XML, checked for the caller:
// only root may give a file away or set the set-id bits.
Result<core::NewFileOptions> CreateFileOptions(const Caller& caller, const core::VolumeSpec& spec) {
  uint32_t mode = spec.mode.value_or(0600);
  if (mode > 07777) return Error(Code::kInvalidArgument, "mode {:o} is not a file mode", mode);
  core::NewFileOptions opts = FileOptionsFor(caller, mode);
  if (caller.uid != 0) {
    if (mode & (S_ISUID | S_ISGID | S_ISVTX)) {
      return Error(Code::kPermissionDenied, "uid {} may not set the set-id or sticky bits",
                   caller.uid);
    }
    if (spec.owner && *spec.owner != caller.uid) {
      return Error(Code::kPermissionDenied, "uid {} may not create a volume owned by uid {}",
                   caller.uid, *spec.owner);
    }
    if (spec.group && *spec.group != caller.gid &&
        std::find(caller.groups.begin(), caller.groups.end(), *spec.group) == caller.groups.end()) {
      return Error(Code::kPermissionDenied, "uid {} is not in group {}", caller.uid, *spec.group);
    }
  }
  if (spec.owner) opts.uid = *spec.owner;
  if (spec.group) opts.gid = *spec.group;
  return opts;
}

Status ApplyCreate(FsState& fs, const Caller& caller, const NodeKey& key, std::string_view xml,
                   std::string* created) {
  Result<core::VolumeSpec> spec = core::ParseVolumeXml(xml);
  if (!spec.ok()) return spec.status();
  Result<core::PoolDef> pool = BrowsablePool(fs, key.pool);
  if (!pool.ok()) return pool.status();
  CHAINFS_RETURN_IF_ERROR(CheckNewName(spec->name));
  const std::string path = JoinPath(pool->target_path, spec->name);
  *created = ChildPath(NodeKey(NodeKind::kPoolDir, key.pool), spec->name);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return Error(Code::kExists, "'{}' already exists", path);
  Result<core::NewFileOptions> file = CreateFileOptions(caller, *spec);
  if (!file.ok()) return file.status();

  if (spec->format == "raw") {
    if (!spec->capacity) return Error(Code::kInvalidArgument, "a raw volume needs a <capacity>");
    Status s = core::CreateRaw(path, *spec->capacity, *file);
    if (s.ok()) AfterChange(fs, {path}, false);
    return s;
  }
  core::Qcow2CreateOptions opts;
  opts.version = spec->compat && *spec->compat == "0.10" ? 2 : 3;
  if (spec->cluster_size) opts.cluster_size = *spec->cluster_size;
  opts.lazy_refcounts = spec->lazy_refcounts;
  opts.extended_l2 = spec->extended_l2;
  opts.file = *file;
  if (spec->backing_path) {
    BackingChoice b{*spec->backing_path, *spec->backing_path};
    if (b.as_written.empty()) return Error(Code::kInvalidArgument, "empty <backingStore><path>");
    if (b.as_written[0] == '/') {
      if (auto mapped = MapMountPath(fs, "", b.as_written)) {
        if (!mapped->ok()) return mapped->status();
        b = {(*mapped)->resolved, (*mapped)->resolved};
      }
    } else {
      b.resolved = JoinPath(pool->target_path, b.as_written);  // qemu: relative to the image
    }
    Result<core::FileStat> target = core::StatPath(b.resolved);
    if (!target.ok()) {
      if (target.status().code() == Code::kNotFound) {
        return Error(Code::kNotFound, "backing '{}' does not exist", b.resolved);
      }
      return target.status();
    }
    CHAINFS_RETURN_IF_ERROR(CheckCallerReads(caller, b.resolved));
    std::string format;
    if (spec->backing_format) {
      format = *spec->backing_format;
      if (core::FindDriver(format) == nullptr) {
        return Error(Code::kInvalidArgument, "'{}' is not a known image format", format);
      }
    } else {
      core::TrustContext trust = MountTrust(fs);
      Result<std::string> trusted = core::TrustedBackingFormat(
          fs.inspector, b.resolved, trust,
          core::SuggestionArgs{core::Suggestion::kDeclareFormatForCreate, path, b.as_written});
      if (!trusted.ok()) return trusted.status();
      format = *trusted;
    }
    if (!spec->capacity) {
      Result<std::shared_ptr<const core::Inspection>> in = fs.inspector.Inspect(b.resolved, format);
      if (!in.ok()) return in.status();
      if (!(*in)->meta) {
        return Error(Code::kCorrupt, "backing '{}' cannot be read as {}: {}", b.resolved, format,
                     (*in)->parse_status.message());
      }
      opts.size = (*in)->meta->virtual_size;
    }
    // The new name may be what a dangling backing string below spells.
    CHAINFS_RETURN_IF_ERROR(core::CheckNoLoop(fs.inspector,
                                              core::LoopSubject{path, std::nullopt, path},
                                              b.as_written, b.resolved, format));
    opts.backing = b.as_written;
    opts.backing_format = format;
  }
  if (spec->capacity) opts.size = *spec->capacity;
  CHAINFS_RETURN_IF_ERROR(core::ValidateQcow2CreateOptions(opts));
  Status s = core::CreateQcow2(path, opts);
  if (s.ok()) AfterChange(fs, {path}, false);
  return s;
}

// A write shorter than this that leaves a .create document incomplete ends
// it: tools write in blocks of 4 KiB or more until their last write.
constexpr size_t kShortWrite = 4096;

}  // namespace

NodeKey CreateFileKey(const std::string& pool) {
  NodeKey key(NodeKind::kPoolFile, pool);
  key.file = kCreateFileName;
  return key;
}

bool IsCreateFileKey(const NodeKey& key) {
  return key.kind == NodeKind::kPoolFile && key.file == kCreateFileName;
}

bool IsWritableFile(const NodeKey& key) {
  if (IsCreateFileKey(key)) return true;
  return key.kind == NodeKind::kVolumeFile &&
         (key.file == "backing" || key.file == "backing_format" || key.file == kRebaseFileName);
}

bool IsPendingLinkKey(const NodeKey& key) {
  return key.kind == NodeKind::kElementLink && key.index == kPendingLinkIndex;
}

bool CallerCanWrite(const Caller& caller, uint32_t uid, uint32_t gid, uint32_t mode) {
  if (caller.uid == 0) return true;
  if (caller.uid == uid) return (mode & S_IWUSR) != 0;
  bool in_group = caller.gid == gid ||
                  std::find(caller.groups.begin(), caller.groups.end(), gid) != caller.groups.end();
  if (in_group) return (mode & S_IWGRP) != 0;
  return (mode & S_IWOTH) != 0;
}

Result<NodeAttr> AttrWithWrites(FsState& fs, const NodeKey& key) {
  if (IsCreateFileKey(key) || IsPendingLinkKey(key)) {
    Result<core::PoolDef> pool = BrowsablePool(fs, key.pool);
    if (!pool.ok()) return pool.status();
    Result<core::FileStat> dir = core::StatPath(pool->target_path);
    if (!dir.ok()) return dir.status();
    NodeAttr a;
    a.uid = dir->uid;
    a.gid = dir->gid;
    a.atime = dir->atime;
    a.mtime = dir->mtime;
    a.ctime = dir->ctime;
    if (IsPendingLinkKey(key)) {
      a.mode = S_IFLNK | 0777;
      a.size = key.file.size();
    } else {
      a.mode = S_IFREG | (dir->mode & 0222);
    }
    return a;
  }
  // The write bits are shown on a read-only mount too: the kernel then lets
  // every change through to the daemon, which refuses it with EROFS and logs
  // why (the kernel's own -o ro would refuse silently).
  Result<NodeAttr> a = fs.tree.GetAttr(key);
  if (!a.ok()) return a;
  if (key.kind == NodeKind::kPoolDir) {
    if (std::optional<core::PoolDef> pool = fs.catalog.FindPool(key.pool)) {
      Result<core::FileStat> dir = core::StatPath(pool->target_path);
      if (dir.ok()) a->mode |= dir->mode & 0222;
    }
  } else if (IsWritableFile(key)) {
    if (std::optional<core::VolumeEntry> v = fs.catalog.FindVolume(key.pool, key.volume)) {
      if (!v->IsDir()) a->mode |= v->stat.mode & 0222;  // a folder's files are read-only
    }
  }
  return a;
}

std::optional<NodeKey> LookupWriteNode(const NodeKey& parent, const std::string& name) {
  if (parent.kind == NodeKind::kPoolDir && name == kCreateFileName)
    return CreateFileKey(parent.pool);
  return std::nullopt;
}

Status CheckWritable(FsState& fs, const Caller& caller, const NodeKey& key) {
  const char* op = IsCreateFileKey(key) ? "create" : "write";
  auto refuse = [&](Status s) { return Logged(fs, op, key.Path(), std::move(s), ""); };
  if (fs.config.read_only) return refuse(ReadOnly());
  if (!IsWritableFile(key)) return refuse(Error(Code::kPermissionDenied, "read-only file"));
  if (IsCreateFileKey(key)) {
    Result<core::PoolDef> pool = BrowsablePool(fs, key.pool);
    if (!pool.ok()) return refuse(pool.status());
    Result<core::FileStat> dir = core::StatPath(pool->target_path);
    if (!dir.ok()) return refuse(dir.status());
    Status may = CheckCallerWrites(caller, *dir, pool->target_path);
    if (!may.ok()) return refuse(may);
  } else {
    Result<core::VolumeEntry> v = FindVolume(fs, key.pool, key.volume);
    if (!v.ok()) return refuse(v.status());
    Status header = RefuseDirVolumeHeader(*v, key.Path());
    if (!header.ok()) return refuse(header);
    Status may = CheckCallerWrites(caller, v->stat, v->path);
    if (!may.ok()) return refuse(may);
  }
  return Status::Ok();
}

Status ApplyValue(FsState& fs, const Caller& caller, const NodeKey& key, std::string_view value) {
  std::lock_guard<std::mutex> change(fs.writes.change_mu());
  const char* op = IsCreateFileKey(key) ? "create" : "write";
  if (fs.config.read_only) return Logged(fs, op, key.Path(), ReadOnly(), "");
  if (IsCreateFileKey(key)) {
    std::string created;
    Status s = ApplyCreate(fs, caller, key, value, &created);
    return Logged(fs, op, created.empty() ? key.Path() : created, s, "volume created from XML");
  }
  if (key.kind == NodeKind::kVolumeFile && key.file == "backing") {
    Status s = ApplyBacking(fs, caller, key, value);
    std::string shown(value.substr(0, value.find('\n')));
    return Logged(fs, op, key.Path(), s, fmt::format("backing set to '{}' (metadata only)", shown));
  }
  if (key.kind == NodeKind::kVolumeFile && key.file == "backing_format") {
    Status s = ApplyBackingFormat(fs, caller, key, value);
    std::string shown(value.substr(0, value.find('\n')));
    return Logged(fs, op, key.Path(), s, fmt::format("backing format recorded as '{}'", shown));
  }
  if (key.kind == NodeKind::kVolumeFile && key.file == kRebaseFileName) {
    std::string shown;
    Status s = ApplyRebase(fs, caller, key, value, &shown);
    return Logged(fs, op, key.Path(), s, fmt::format("{} started in the background", shown));
  }
  return Logged(fs, op, key.Path(), Error(Code::kPermissionDenied, "read-only file"), "");
}

Result<size_t> WriteFile(FsState& fs, const Caller& caller, uint64_t ino, const NodeKey& key,
                         std::string_view data, off_t offset) {
  CHAINFS_RETURN_IF_ERROR(CheckWritable(fs, caller, key));
  const char* op = IsCreateFileKey(key) ? "create" : "write";
  if (offset < 0 || uint64_t(offset) > kMaxWriteBytes || data.size() > kMaxWriteBytes) {
    return Logged(fs, op, key.Path(),
                  Status(Code::kIo, fmt::format("more than {} bytes", kMaxWriteBytes), EFBIG), "");
  }
  if (!IsCreateFileKey(key)) {
    Status s = ApplyValue(fs, caller, key, data);
    if (!s.ok()) return s;
    return data.size();
  }
  // .create: collect the document until it is complete.
  Result<std::optional<std::string>> value =
      fs.writes.WithPending(ino, [&](WriteState::Pending& p) -> Result<std::optional<std::string>> {
        if (offset == 0) p.buf.clear();
        if (uint64_t(offset) != p.buf.size()) {
          p.buf.clear();
          return Error(Code::kInvalidArgument,
                       "a document is written in order from its start (offset {} after {} bytes)",
                       offset, p.buf.size());
        }
        if (p.buf.size() + data.size() > core::kMaxVolumeXmlBytes) {
          p.buf.clear();
          return Error(Code::kInvalidArgument,
                       "a volume XML document is at most {} bytes; this one has more",
                       core::kMaxVolumeXmlBytes);
        }
        p.buf.append(data);
        // Decided at every write, since no close is seen (see top of
        // write_ops.h): act on a complete document, refuse one that can no
        // longer become a <volume>, wait for the rest of the others unless
        // this write was a short one.
        core::XmlPrefix prefix = core::ClassifyVolumeXmlPrefix(p.buf);
        if (prefix.state == core::XmlPrefixState::kInvalid) {
          p.buf.clear();
          return Error(Code::kInvalidArgument, "{}", prefix.reason);
        }
        if (prefix.state == core::XmlPrefixState::kIncomplete && data.size() < kShortWrite) {
          const bool blank = IsBlank(p.buf);
          const size_t got = p.buf.size();
          p.buf.clear();
          if (blank) return std::optional<std::string>();
          return Error(Code::kInvalidArgument,
                       "the volume XML document ends incomplete after {} bytes (a write shorter "
                       "than {} bytes ends it): {}",
                       got, kShortWrite, prefix.reason);
        }
        if (prefix.state == core::XmlPrefixState::kComplete) {
          std::string doc = std::move(p.buf);
          p.buf.clear();
          return std::optional<std::string>(std::move(doc));
        }
        return std::optional<std::string>();
      });
  if (!value.ok()) return Logged(fs, op, key.Path(), value.status(), "");
  if (*value && !IsBlank(**value)) {
    Status s = ApplyValue(fs, caller, key, **value);
    if (!s.ok()) return s;
  }
  return data.size();
}

Status TruncateFile(FsState& fs, uint64_t ino, const NodeKey& key, uint64_t size) {
  if (fs.config.read_only) return Logged(fs, "setattr", key.Path(), ReadOnly(), "");
  if (!IsWritableFile(key)) {
    return Logged(fs, "setattr", key.Path(), Error(Code::kPermissionDenied, "read-only file"), "");
  }
  if (size != 0) {
    return Logged(fs, "setattr", key.Path(),
                  Error(Code::kInvalidArgument, "only truncation to 0 bytes is meaningful"), "");
  }
  if (IsCreateFileKey(key)) fs.writes.Drop(ino);
  return Status::Ok();
}

Result<NodeKey> SymlinkOverlay(FsState& fs, const Caller& caller, const NodeKey& parent,
                               const std::string& name, const std::string& target) {
  const std::string path = ChildPath(parent, name);
  auto refuse = [&](Status s) -> Result<NodeKey> {
    return Logged(fs, "symlink", path, std::move(s), "");
  };
  if (fs.config.read_only) return refuse(ReadOnly());
  if (parent.kind == NodeKind::kVolumeDir) {
    if (std::optional<core::VolumeEntry> v = fs.catalog.FindVolume(parent.pool, parent.volume)) {
      Status folder = RefuseDirVolumeEntry(
          *v, parent.Path(), "creates overlays in the pool directory only (ln -s BACKING POOL/NEW)");
      if (!folder.ok()) return refuse(folder);
    }
    return refuse(Error(Code::kExists,
                        "'{}' is an existing volume (ln -s put the link inside it); choose a "
                        "new name",
                        parent.Path()));
  }
  if (parent.kind != NodeKind::kPoolDir) {
    return refuse(NotPermitted("overlays are created in a pool directory: ln -s BACKING POOL/NEW"));
  }
  std::lock_guard<std::mutex> change(fs.writes.change_mu());
  Result<core::PoolDef> pool = BrowsablePool(fs, parent.pool);
  if (!pool.ok()) return refuse(pool.status());
  Status named = CheckNewName(name);
  if (!named.ok()) return refuse(named);
  Result<BackingChoice> b = MapLinkTarget(fs, parent.pool, target);
  if (!b.ok()) return refuse(b.status());
  Status readable = CheckCallerReads(caller, b->resolved);
  if (!readable.ok() && readable.code() != Code::kNotFound) return refuse(readable);
  core::TrustContext trust = MountTrust(fs);
  const std::string new_path = JoinPath(pool->target_path, name);
  Status s = core::CreateOverlay(fs.inspector, new_path, b->as_written, b->resolved, std::nullopt,
                                 trust, FileOptionsFor(caller, 0644));
  if (!s.ok()) return refuse(s);
  AfterChange(fs, {new_path}, false);
  Logged(fs, "symlink", path, s,
         fmt::format("created a qcow2 overlay of '{}' (backing string '{}')", b->resolved,
                     b->as_written));
  NodeKey placeholder(NodeKind::kElementLink, parent.pool, name, kPendingLinkIndex, target);
  return placeholder;
}

// Names the domain disks of `uses` for a log line: "vm1/vda (running), ...".
static std::string DescribeUses(const std::vector<Tree::DomainUse>& uses) {
  std::string out;
  for (const Tree::DomainUse& u : uses) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{}/{} ({})", u.domain, u.target, u.running ? "running" : "shut off");
  }
  return out;
}

// Refuses to delete an image a defined (or running) domain uses at any
// depth: libvirt would fail to start it, or lose it under a running VM.
static Status CheckNoDomainUses(FsState& fs, const std::string& image) {
  std::vector<Tree::DomainUse> uses = fs.tree.DomainUsers(image);
  if (uses.empty()) return Status::Ok();
  return Error(Code::kBusy, "used by domain {}: change or undefine the domain first (virsh edit)",
               DescribeUses(uses));
}

Status RenameVolume(FsState& fs, const Caller& caller, const NodeKey& parent,
                    const std::string& name, const NodeKey& new_parent, const std::string& new_name,
                    unsigned int flags) {
  const std::string path = ChildPath(parent, name);
  const std::string new_path_shown = ChildPath(new_parent, new_name);
  auto log = [&](Status s, const std::string& done) {
    return Logged(fs, "rename", path, std::move(s), done);
  };
  if (fs.config.read_only) return log(ReadOnly(), "");
  if (flags & ~unsigned(RENAME_NOREPLACE)) {
    return log(Error(Code::kInvalidArgument, "only plain renames are supported (no exchange)"), "");
  }
  if (parent.kind != NodeKind::kPoolDir) {
    return log(NotPermitted("only volumes (POOL/VOL) can be renamed"), "");
  }
  if (new_parent.kind == NodeKind::kVolumeDir) {
    if (std::optional<core::VolumeEntry> d =
            fs.catalog.FindVolume(new_parent.pool, new_parent.volume)) {
      Status folder = RefuseDirVolumeEntry(*d, new_parent.Path(), "moves nothing into a folder");
      if (!folder.ok()) return log(folder, "");
    }
    return log(Error(Code::kExists, "'{}' is an existing volume", new_parent.Path()), "");
  }
  if (new_parent.kind != NodeKind::kPoolDir) {
    return log(NotPermitted(fmt::format("'{}' is not a pool directory", new_parent.Path())), "");
  }
  std::lock_guard<std::mutex> change(fs.writes.change_mu());
  Result<core::PoolDef> to_pool = BrowsablePool(fs, new_parent.pool);
  if (!to_pool.ok()) return log(to_pool.status(), "");
  Result<core::VolumeEntry> v = FindVolume(fs, parent.pool, name);
  if (!v.ok()) return log(v.status(), "");
  Status folder = RefuseDirVolumeEntry(*v, path, "renames images only");
  if (!folder.ok()) return log(folder, "");
  Status quiet = CheckNoRebase(fs, v->path);
  if (!quiet.ok()) return log(quiet, "");
  Status named = CheckNewName(new_name);
  if (!named.ok()) return log(named, "");
  // A running domain would lose the image under QEMU; a shut-off one only
  // needs its definition changed, which the log says.
  const std::vector<Tree::DomainUse> uses = fs.tree.DomainUsers(v->path);
  std::string definitions;
  for (const Tree::DomainUse& u : uses) {
    if (u.running) {
      return log(Error(Code::kBusy,
                       "used by running domain {}: libvirt would lose the image; shut the domain "
                       "off first",
                       DescribeUses(uses)),
                 "");
    }
    if (definitions.find(u.definition) == std::string::npos) {
      definitions += (definitions.empty() ? "" : ", ") + u.definition;
    }
  }
  const std::string new_path = JoinPath(to_pool->target_path, new_name);
  Result<core::RenamePlan> plan =
      core::PlanRename(fs.inspector, v->path, new_path, AllVolumePaths(fs));
  if (!plan.ok()) return log(plan.status(), "");
  for (const core::BackingRewrite& r : plan->rewrites) {
    Status may = CheckCallerWrites(caller, r.stat, r.path);
    if (!may.ok()) {
      return log(
          Error(Code::kPermissionDenied, "{}, whose backing string would change", may.message()),
          "");
    }
  }
  Status s = core::ExecuteRename(fs.inspector, *plan);
  if (s.ok() || s.code() == Code::kIo) {
    std::vector<std::string> touched = {v->path, new_path};
    for (const core::BackingRewrite& r : plan->rewrites) touched.push_back(r.path);
    AfterChange(fs, touched, true);
  }
  std::string done = fmt::format("renamed to '{}' ({}); rewrote the backing string of {} overlay(s)",
                                 new_path_shown, new_path, plan->rewrites.size());
  if (!uses.empty()) {
    done += fmt::format("; shut-off domain {} still name{} the old path in {}: virsh edit to "
                        "point them at '{}'",
                        DescribeUses(uses), uses.size() == 1 ? "s" : "", definitions, new_path);
  }
  return log(s, done);
}

Status RemoveVolume(FsState& fs, const Caller& /*caller*/, const NodeKey& parent,
                    const std::string& name) {
  const std::string path = ChildPath(parent, name);
  auto log = [&](Status s, const std::string& done) {
    return Logged(fs, "rmdir", path, std::move(s), done);
  };
  if (fs.config.read_only) return log(ReadOnly(), "");
  if (parent.kind != NodeKind::kPoolDir) {
    return log(NotPermitted("only volumes (POOL/VOL) can be removed, with rmdir"), "");
  }
  std::lock_guard<std::mutex> change(fs.writes.change_mu());
  Result<core::VolumeEntry> v = FindVolume(fs, parent.pool, name);
  if (!v.ok()) return log(v.status(), "");
  Status folder = RefuseDirVolumeEntry(*v, path, "deletes images only");
  if (!folder.ok()) return log(folder, "");
  Status quiet = CheckNoRebase(fs, v->path);
  if (!quiet.ok()) return log(quiet, "");
  Status used = CheckNoDomainUses(fs, v->path);
  if (!used.ok()) return log(used, "");
  Status s = core::RemoveImage(fs.inspector, v->path, AllVolumePaths(fs));
  if (s.ok()) AfterChange(fs, {v->path}, true);
  return log(s, fmt::format("deleted the image '{}'", v->path));
}

Status RefuseChange(FsState& fs, const char* op, const std::string& path,
                    const std::string& reason) {
  return Logged(fs, op, path, fs.config.read_only ? ReadOnly() : NotPermitted(reason), "");
}

}  // namespace chainfs::fs
