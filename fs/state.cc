#include "fs/state.h"

#include <fmt/format.h>

namespace chainfs::fs {

const char* OpName(Op op) {
  switch (op) {
    case Op::kInit: return "init";
    case Op::kLookup: return "lookup";
    case Op::kForget: return "forget";
    case Op::kGetattr: return "getattr";
    case Op::kSetattr: return "setattr";
    case Op::kReadlink: return "readlink";
    case Op::kOpendir: return "opendir";
    case Op::kReaddir: return "readdir";
    case Op::kReleasedir: return "releasedir";
    case Op::kOpen: return "open";
    case Op::kRead: return "read";
    case Op::kRelease: return "release";
    case Op::kStatfs: return "statfs";
    case Op::kWrite: return "write";
    case Op::kSymlink: return "symlink";
    case Op::kRename: return "rename";
    case Op::kRmdir: return "rmdir";
    case Op::kMkdir: return "mkdir";
    case Op::kUnlink: return "unlink";
    case Op::kCreate: return "create";
    case Op::kFlush: return "flush";
    case Op::kLseek: return "lseek";
    case Op::kCount: break;
  }
  return "?";
}

FsState::FsState(MountConfig cfg, bool echo_log)
    : config(std::move(cfg)),
      log(echo_log),
      chains(inspector, catalog.MakeLocator()),
      tree(catalog, chains, log) {
  tree.set_stats_renderer([this] { return RenderStats(); });
  tree.set_metrics_renderer([this] {
    return core::RenderMetrics(tree.PoolMetrics(), tree.DomainMetrics(), StatFigures());
  });
  tree.set_domains(&domains, &inspector);
  tree.set_rebase_renderer([this](const std::string& image) { return rebases.Render(image); });
}

std::vector<core::StatFigure> FsState::StatFigures() const {
  core::InspectorStats is = inspector.stats();
  ChainCacheStats cs = chains.stats();
  std::vector<core::StatFigure> out = {
      {"inspector_cache_hits", is.hits, true},
      {"inspector_cache_misses", is.misses, true},
      {"probes", is.probes, true},
      {"chain_cache_hits", cs.hits, true},
      {"chain_cache_misses", cs.misses, true},
      {"chain_cache_entries", cs.entries, false},
      {"nodes", nodes.size(), false},
      {"kernel_cached_files", kcache.size(), false},
      {"kernel_cached_bytes", kcache.content_bytes(), false},
  };
  for (int i = 0; i < static_cast<int>(Op::kCount); ++i) {
    out.push_back({fmt::format("fuse_{}", OpName(static_cast<Op>(i))), ops_[i].load(), true});
  }
  out.push_back({"pushed_files", pushed_.load(), true});
  out.push_back({"push_misses", push_missed_.load(), true});
  out.push_back({"errors", errors_.load(), true});
  out.push_back({"log_events", log.total(), true});
  return out;
}

std::string FsState::RenderStats() const {
  std::string out;
  for (const core::StatFigure& f : StatFigures()) out += fmt::format("{} {}\n", f.name, f.value);
  return out;
}

}  // namespace chainfs::fs
