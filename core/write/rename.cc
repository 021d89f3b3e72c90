#include "core/write/rename.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "core/chain/backing_ref.h"
#include "core/format/qcow2/writer.h"
#include "core/write/in_use.h"
#include "core/write/loop_check.h"

namespace chainfs::core {
namespace {

std::vector<std::string> SplitComponents(std::string_view path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (!part.empty() && part != ".") {
      if (part == "..") {
        if (!parts.empty() && parts.back() != "..") {
          parts.pop_back();
        } else if (path.empty() || path[0] != '/') {
          parts.emplace_back("..");
        }
      } else {
        parts.emplace_back(part);
      }
    }
    i = j + 1;
  }
  return parts;
}

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, fmt::format("open directory {}", dir));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno(e, fmt::format("fsync directory {}", dir));
  return Status::Ok();
}

// A relative string whose first component has a ':' would read as a protocol.
std::string GuardRelative(std::string s) {
  std::string_view first = std::string_view(s).substr(0, s.find('/'));
  if (first.find(':') != std::string_view::npos) s = "./" + s;
  return s;
}

// Refuses (LoopError) a rename that gives the image the name a dangling
// backing string in its own chain spells: the chain would come back to it.
// A loop that is there already is left to `problems` (the rename does not
// make it worse, and may be part of the fix).
Status CheckRenameMakesNoLoop(ImageInspector& inspector, const std::string& old_path,
                              const std::string& new_path) {
  Result<std::shared_ptr<const Inspection>> self = inspector.Inspect(old_path);
  if (!self.ok() || !(*self)->meta) return Status::Ok();
  const ImageMeta& meta = *(*self)->meta;
  if (!meta.backing || meta.backing->empty()) return Status::Ok();
  Result<BackingRef> ref = ClassifyBacking(*meta.backing, old_path);
  if (!ref.ok() || ref->resolved_path.empty()) return Status::Ok();
  std::string format = meta.backing_format.value_or("");
  if (format.empty() && ref->network) format = ref->network->format;
  const FileIdentity& id = (*self)->stat.id;
  Status after = CheckNoLoop(inspector, LoopSubject{old_path, id, new_path}, *meta.backing,
                             ref->resolved_path, format);
  if (after.ok()) return after;
  Status before = CheckNoLoop(inspector, LoopSubject{old_path, id, std::nullopt}, *meta.backing,
                              ref->resolved_path, format);
  if (!before.ok()) return Status::Ok();
  return LoopError(fmt::format("renaming '{}' to '{}' would close a backing chain loop: {}",
                               old_path, new_path, after.message()));
}

}  // namespace

std::string NormalizeDots(std::string_view path) {
  bool absolute = !path.empty() && path[0] == '/';
  std::vector<std::string> parts = SplitComponents(path);
  std::string out = absolute ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k > 0) out += '/';
    out += parts[k];
  }
  if (out.empty()) out = ".";
  return out;
}

std::string RelativePath(const std::string& from_dir, const std::string& to) {
  std::vector<std::string> from = SplitComponents(NormalizeDots(from_dir));
  std::vector<std::string> dest = SplitComponents(NormalizeDots(to));
  size_t common = 0;
  while (common < from.size() && common < dest.size() && from[common] == dest[common]) ++common;
  std::string out;
  for (size_t k = common; k < from.size(); ++k) out += "../";
  for (size_t k = common; k < dest.size(); ++k) {
    out += dest[k];
    if (k + 1 < dest.size()) out += '/';
  }
  if (out.empty()) out = ".";
  return out;
}

Result<std::string> RenamedBackingString(const std::string& overlay_path,
                                         const std::string& old_backing,
                                         const std::string& old_path, const std::string& new_path) {
  Result<BackingRef> ref = ClassifyBacking(old_backing, overlay_path);
  if (!ref.ok()) return ref.status();
  if (!ref->IsLocal()) {
    return Error(Code::kUnsupported, "backing string '{}' of '{}' is not a plain file path",
                 old_backing, overlay_path);
  }
  bool absolute = ref->kind == BackingKind::kAbsolute;
  bool plain = NormalizeDots(ref->resolved_path) == NormalizeDots(old_path);
  bool same_dir = NormalizeDots(DirName(old_path)) == NormalizeDots(DirName(new_path));
  std::string out;
  if (plain && same_dir) {
    size_t slash = old_backing.rfind('/');
    std::string prefix = slash == std::string::npos ? "" : old_backing.substr(0, slash + 1);
    out = prefix + BaseName(new_path);
    if (prefix.empty()) out = GuardRelative(out);
  } else if (absolute) {
    out = new_path;
  } else {
    out = GuardRelative(RelativePath(DirName(overlay_path), new_path));
  }
  CHAINFS_RETURN_IF_ERROR(ValidateBackingString(out));
  return out;
}

Result<RenamePlan> PlanRename(ImageInspector& inspector, const std::string& old_path,
                              const std::string& new_path,
                              const std::vector<std::string>& candidates) {
  struct stat st;
  if (::lstat(new_path.c_str(), &st) == 0) {
    return Error(Code::kExists, "'{}' already exists", new_path);
  }
  struct stat old_entry;
  if (::lstat(old_path.c_str(), &old_entry) != 0) {
    int e = errno;
    if (e == ENOENT) return Error(Code::kNotFound, "'{}' does not exist", old_path);
    return Status::FromErrno(e, "lstat " + old_path);
  }
  struct stat new_dir;
  std::string new_dir_path = DirName(new_path);
  if (::stat(new_dir_path.c_str(), &new_dir) != 0) {
    int e = errno;
    if (e == ENOENT) return Error(Code::kNotFound, "directory '{}' does not exist", new_dir_path);
    return Status::FromErrno(e, "stat " + new_dir_path);
  }
  if (new_dir.st_dev != old_entry.st_dev) {
    return Error(Code::kCrossDevice,
                 "'{}' and '{}' are on different file systems; copy the image (qemu-img "
                 "convert) instead",
                 old_path, new_dir_path);
  }
  CHAINFS_RETURN_IF_ERROR(CheckNotInUse(old_path));
  CHAINFS_RETURN_IF_ERROR(CheckRenameMakesNoLoop(inspector, old_path, new_path));

  Result<std::vector<Dependent>> deps = FindDependents(inspector, old_path, candidates);
  if (!deps.ok()) return deps.status();
  RenamePlan plan;
  plan.old_path = old_path;
  plan.new_path = new_path;
  for (const Dependent& d : *deps) {
    if (d.format != "qcow2") {
      return Error(Code::kUnsupported,
                   "'{}' ({}) names '{}' as its backing and only qcow2 backing strings can be "
                   "rewritten",
                   d.path, d.format, old_path);
    }
    if (!d.local) {
      return Error(Code::kUnsupported,
                   "'{}' names '{}' in a json: backing string, which chainfs does not rewrite",
                   d.path, old_path);
    }
    CHAINFS_RETURN_IF_ERROR(CheckNotInUse(d.path));
    Result<std::string> s = RenamedBackingString(d.path, d.backing, old_path, new_path);
    if (!s.ok()) {
      return Error(s.status().code(), "cannot rewrite the backing of '{}': {}", d.path,
                   s.status().message());
    }
    plan.rewrites.push_back({d.path, d.backing, *s, d.backing_format, d.stat});
  }
  // The image's own relative backing, when it changes directory.
  if (NormalizeDots(DirName(old_path)) != NormalizeDots(DirName(new_path))) {
    Result<std::shared_ptr<const Inspection>> self = inspector.Inspect(old_path);
    if (self.ok() && (*self)->meta && (*self)->format == "qcow2" && (*self)->meta->backing &&
        !(*self)->meta->backing->empty()) {
      const std::string& own = *(*self)->meta->backing;
      Result<BackingRef> ref = ClassifyBacking(own, old_path);
      if (ref.ok() && ref->kind == BackingKind::kRelative) {
        std::string absolute = NormalizeDots(ref->resolved_path);
        std::string relative = GuardRelative(RelativePath(DirName(new_path), absolute));
        CHAINFS_RETURN_IF_ERROR(ValidateBackingString(absolute));
        CHAINFS_RETURN_IF_ERROR(ValidateBackingString(relative));
        const std::optional<std::string>& fmt = (*self)->meta->backing_format;
        plan.own_absolute = BackingRewrite{old_path, own, absolute, fmt, (*self)->stat};
        plan.own_relative = BackingRewrite{new_path, absolute, relative, fmt, (*self)->stat};
      }
    }
  }
  // A chain that reaches the image through an overlay outside the candidates
  // would break: that overlay cannot be rewritten.
  Result<std::vector<ChainUser>> users = FindChainUsers(inspector, old_path, candidates);
  if (!users.ok()) return users.status();
  for (const ChainUser& u : *users) {
    bool covered = false;
    for (const BackingRewrite& r : plan.rewrites) {
      if (SameFile(r.stat.id, u.above_id)) covered = true;
    }
    if (!covered) {
      return Error(Code::kBusy,
                   "the chain of '{}' reaches '{}' through '{}', which is not a volume of a "
                   "mounted pool and would be left pointing at the old name",
                   u.volume, old_path, u.above);
    }
  }
  return plan;
}

Status ExecuteRename(ImageInspector& inspector, const RenamePlan& plan) {
  const std::string old_dir = DirName(plan.old_path);
  const std::string new_dir = DirName(plan.new_path);
  if (plan.own_absolute) {
    const BackingRewrite& r = *plan.own_absolute;
    Status s = RewriteBacking(r.path, r.new_backing, r.backing_format);
    if (!s.ok()) {
      inspector.Clear();
      return Status(s.code(),
                    fmt::format("making the backing of '{}' absolute: {}", r.path, s.message()),
                    s.sys_errno());
    }
  }
  auto restore_own = [&] {
    if (plan.own_absolute) {
      const BackingRewrite& r = *plan.own_absolute;
      RewriteBacking(r.path, r.old_backing, r.backing_format);
    }
  };
  bool linked = true;
  if (::link(plan.old_path.c_str(), plan.new_path.c_str()) != 0) {
    int e = errno;
    Status failed;
    if (e == EEXIST) {
      failed = Error(Code::kExists, "'{}' already exists", plan.new_path);
    } else if (e == EXDEV) {
      failed = Error(Code::kCrossDevice, "'{}' and '{}' are on different file systems",
                     plan.old_path, new_dir);
    } else if (e != EPERM && e != EOPNOTSUPP && e != EMLINK && e != ENOSYS) {
      failed = Status::FromErrno(e, fmt::format("link {} to {}", plan.old_path, plan.new_path));
    } else if (::renameat2(AT_FDCWD, plan.old_path.c_str(), AT_FDCWD, plan.new_path.c_str(),
                           RENAME_NOREPLACE) != 0) {
      // No hard links here: rename without replacing, then fix the overlays.
      int e2 = errno;
      failed = e2 == EEXIST ? Error(Code::kExists, "'{}' already exists", plan.new_path)
                            : Status::FromErrno(
                                  e2, fmt::format("rename {} to {}", plan.old_path, plan.new_path));
    } else {
      linked = false;
    }
    if (!failed.ok()) {
      restore_own();
      inspector.Clear();
      return failed;
    }
  }
  Status s = FsyncDir(new_dir);
  size_t done = 0;
  for (; s.ok() && done < plan.rewrites.size(); ++done) {
    const BackingRewrite& r = plan.rewrites[done];
    s = RewriteBacking(r.path, r.new_backing, r.backing_format);
    if (!s.ok()) {
      s = Status(s.code(), fmt::format("rewriting the backing of '{}': {}", r.path, s.message()),
                 s.sys_errno());
      break;
    }
  }
  if (!s.ok()) {
    // Undo, newest first, so the old name is again the only one in use.
    for (size_t k = done; k-- > 0;) {
      const BackingRewrite& r = plan.rewrites[k];
      RewriteBacking(r.path, r.old_backing, r.backing_format);
    }
    if (linked) {
      ::unlink(plan.new_path.c_str());
    } else {
      ::renameat2(AT_FDCWD, plan.new_path.c_str(), AT_FDCWD, plan.old_path.c_str(),
                  RENAME_NOREPLACE);
    }
    FsyncDir(new_dir);
    restore_own();
    inspector.Clear();
    return s;
  }
  if (linked) {
    if (::unlink(plan.old_path.c_str()) != 0) {
      int e = errno;
      inspector.Clear();
      return Status::FromErrno(
          e, fmt::format("every overlay now names '{}', but the old name '{}' could not be "
                         "removed",
                         plan.new_path, plan.old_path));
    }
    s = FsyncDir(old_dir);
  }
  if (s.ok() && plan.own_relative) {
    // Only the new name is left; the absolute string stays valid if this fails.
    const BackingRewrite& r = *plan.own_relative;
    RewriteBacking(r.path, r.new_backing, r.backing_format);
  }
  inspector.Clear();
  return s;
}

Status RenameImage(ImageInspector& inspector, const std::string& old_path,
                   const std::string& new_path, const std::vector<std::string>& candidates) {
  Result<RenamePlan> plan = PlanRename(inspector, old_path, new_path, candidates);
  if (!plan.ok()) return plan.status();
  return ExecuteRename(inspector, *plan);
}

}  // namespace chainfs::core
