#include "core/write/loop_check.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <map>
#include <utility>

#include "core/chain/backing_ref.h"
#include "core/format/driver.h"
#include "core/write/remove.h"

namespace chainfs::core {
namespace {

// The kernel's limit on symlinks followed in one lookup.
constexpr int kMaxSymlinkHops = 40;

// Returns true when `path`, which does not exist, would name the file that
// gets the name `target`: the same directory (by device and inode) and last
// component, following a dangling symlink at `path` to where it points.
bool WouldName(std::string path, const std::string& target) {
  Result<FileStat> target_dir = StatPath(DirName(target));
  if (!target_dir.ok()) return false;
  const std::string target_name = BaseName(target);
  for (int hop = 0; hop < kMaxSymlinkHops; ++hop) {
    const std::string dir = DirName(path);
    Result<FileStat> d = StatPath(dir);
    if (!d.ok()) return false;
    if (SameFile(d->id, target_dir->id) && BaseName(path) == target_name) return true;
    char buf[PATH_MAX];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
    if (n <= 0 || size_t(n) >= sizeof(buf)) return false;  // not a (dangling) symlink
    std::string link(buf, size_t(n));
    path = link[0] == '/' ? link : (dir == "/" ? "/" + link : dir + "/" + link);
  }
  return false;
}

}  // namespace

Status LoopError(std::string message) { return Status(Code::kIo, std::move(message), ELOOP); }

bool IsLoopError(const Status& s) { return s.code() == Code::kIo && s.sys_errno() == ELOOP; }

Status CheckNoLoop(ImageInspector& inspector, const LoopSubject& subject, const std::string& shown,
                   const std::string& backing, const std::string& format) {
  std::map<std::pair<uint64_t, uint64_t>, std::string> seen;  // (dev, ino) -> path
  std::string path = backing;
  std::string fmt = format;
  for (int depth = 1;; ++depth) {
    if (depth > kMaxLoopWalk) {
      return LoopError(fmt::format(
          "the chain below new backing '{}' of '{}' is longer than {} images; it is treated as "
          "a loop",
          shown, subject.path, kMaxLoopWalk));
    }
    Result<FileStat> st = StatPath(path);
    if (!st.ok()) {
      if (st.status().code() == Code::kNotFound && subject.future_path &&
          WouldName(path, *subject.future_path)) {
        return LoopError(fmt::format(
            "new backing '{}' of '{}' leads (chain index {}) to '{}', the name '{}' will have: "
            "that would be a backing chain loop",
            shown, subject.path, depth, path, *subject.future_path));
      }
      return Status::Ok();
    }
    if (subject.id && SameFile(st->id, *subject.id)) {
      if (depth == 1) {
        return LoopError(
            fmt::format("new backing '{}' is '{}' itself: that would be a backing chain loop",
                        shown, subject.path));
      }
      return LoopError(fmt::format(
          "new backing '{}' is backed by '{}' itself (through '{}', chain index {}): that would "
          "be a backing chain loop",
          shown, subject.path, path, depth));
    }
    auto key = std::make_pair(st->id.dev, st->id.ino);
    if (auto it = seen.find(key); it != seen.end()) {
      return LoopError(
          fmt::format("the chain below new backing '{}' of '{}' already loops: '{}' is '{}' again",
                      shown, subject.path, path, it->second));
    }
    seen.emplace(key, path);
    if (fmt == "raw") return Status::Ok();                                // raw has no backing
    if (!fmt.empty() && FindDriver(fmt) == nullptr) return Status::Ok();  // QEMU cannot open it
    Result<std::shared_ptr<const Inspection>> in = inspector.Inspect(path, fmt);
    if (!in.ok() || !(*in)->meta) return Status::Ok();
    const ImageMeta& meta = *(*in)->meta;
    if (!meta.backing || meta.backing->empty()) return Status::Ok();
    Result<BackingRef> ref = ClassifyBacking(*meta.backing, path);
    if (!ref.ok() || ref->resolved_path.empty()) return Status::Ok();  // network: not opened
    std::string next_format = meta.backing_format.value_or("");
    if (next_format.empty() && ref->network && !ref->network->format.empty()) {
      next_format = ref->network->format;  // json: {"driver": "qcow2", "file": ...}
    }
    path = ref->resolved_path;
    fmt = next_format;
  }
}

}  // namespace chainfs::core
