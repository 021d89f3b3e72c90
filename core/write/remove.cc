#include "core/write/remove.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/chain/backing_ref.h"
#include "core/chain/resolver.h"
#include "core/write/in_use.h"

namespace chainfs::core {
namespace {

// Quotes the items of a list for a message, at most kMaxDependentsNamed,
// then "and N more".
std::string NameList(const std::vector<std::string>& items) {
  std::string out;
  const size_t shown = std::min(items.size(), kMaxDependentsNamed);
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  if (items.size() > shown) out += fmt::format(" and {} more", items.size() - shown);
  return out;
}

}  // namespace

std::string DependentsReason(const std::string& path, const std::vector<Dependent>& direct,
                             const std::vector<ChainUser>& users) {
  std::vector<std::string> named;
  for (const Dependent& d : direct) named.push_back(fmt::format("'{}' (its overlay)", d.path));
  for (const ChainUser& u : users) {
    bool is_direct = false;
    for (const Dependent& d : direct) is_direct = is_direct || d.path == u.volume;
    if (!is_direct) {
      named.push_back(fmt::format("'{}' (chain index {}, below '{}')", u.volume, u.index, u.above));
    }
  }
  if (named.empty()) return {};
  return fmt::format("'{}' is used as a backing by {} volume(s): {}; remove or rebase them first",
                     path, named.size(), NameList(named));
}

Result<std::vector<Dependent>> FindDependents(ImageInspector& inspector,
                                              const std::string& image_path,
                                              const std::vector<std::string>& candidates) {
  Result<FileStat> image = StatPath(image_path);
  if (!image.ok()) return image.status();
  std::vector<Dependent> out;
  for (const std::string& candidate : candidates) {
    Result<std::shared_ptr<const Inspection>> in = inspector.Inspect(candidate);
    if (!in.ok()) continue;
    const Inspection& ins = **in;
    if (SameFile(ins.stat.id, image->id)) continue;
    if (!ins.meta || !ins.meta->backing || ins.meta->backing->empty()) continue;
    Result<BackingRef> ref = ClassifyBacking(*ins.meta->backing, candidate);
    if (!ref.ok() || ref->resolved_path.empty()) continue;
    Result<FileStat> target = StatPath(ref->resolved_path);
    if (!target.ok() || !SameFile(target->id, image->id)) continue;
    Dependent d;
    d.path = candidate;
    d.backing = *ins.meta->backing;
    d.backing_format = ins.meta->backing_format;
    d.format = ins.format;
    d.local = ref->IsLocal();
    d.stat = ins.stat;
    out.push_back(std::move(d));
  }
  return out;
}

Result<std::vector<ChainUser>> FindChainUsers(ImageInspector& inspector,
                                              const std::string& image_path,
                                              const std::vector<std::string>& candidates) {
  Result<FileStat> image = StatPath(image_path);
  if (!image.ok()) return image.status();
  std::vector<ChainUser> out;
  for (const std::string& candidate : candidates) {
    Result<FileStat> top = StatPath(candidate);
    if (!top.ok() || SameFile(top->id, image->id)) continue;
    Chain chain = ResolveChain(inspector, candidate);
    for (size_t i = 1; i < chain.elements.size(); ++i) {
      const ChainElement& e = chain.elements[i];
      if (e.network || !e.stat || !SameFile(e.stat->id, image->id)) continue;
      ChainUser u;
      u.volume = candidate;
      u.index = int(i);
      u.above = chain.elements[i - 1].path;
      if (chain.elements[i - 1].stat) u.above_id = chain.elements[i - 1].stat->id;
      out.push_back(std::move(u));
      break;
    }
  }
  return out;
}

Status RemoveImage(ImageInspector& inspector, const std::string& path,
                   const std::vector<std::string>& candidates) {
  Result<FileStat> st = StatPath(path);
  if (!st.ok()) return st.status();
  CHAINFS_RETURN_IF_ERROR(CheckNotInUse(path));
  // Direct dependents first: their chain may stop early (e.g. an unrecorded
  // backing format) and still break when the file goes. Then the chains
  // that reach the image further down.
  Result<std::vector<Dependent>> direct = FindDependents(inspector, path, candidates);
  if (!direct.ok()) return direct.status();
  Result<std::vector<ChainUser>> users = FindChainUsers(inspector, path, candidates);
  if (!users.ok()) return users.status();
  std::string reason = DependentsReason(path, *direct, *users);
  if (!reason.empty()) return Status(Code::kBusy, std::move(reason));
  if (::unlink(path.c_str()) != 0) {
    return Status::FromErrno(errno, fmt::format("unlink {}", path));
  }
  std::string dir = DirName(path);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    int rc = ::fsync(dfd);
    int e = errno;
    ::close(dfd);
    if (rc != 0) return Status::FromErrno(e, fmt::format("fsync directory {}", dir));
  }
  inspector.Clear();
  return Status::Ok();
}

}  // namespace chainfs::core
