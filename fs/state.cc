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
  tree.set_domains(&domains, &inspector);
  tree.set_rebase_renderer([this](const std::string& image) { return rebases.Render(image); });
}

std::string FsState::RenderStats() const {
  core::InspectorStats is = inspector.stats();
  ChainCacheStats cs = chains.stats();
  std::string out;
  out += fmt::format("inspector_cache_hits {}\n", is.hits);
  out += fmt::format("inspector_cache_misses {}\n", is.misses);
  out += fmt::format("probes {}\n", is.probes);
  out += fmt::format("chain_cache_hits {}\n", cs.hits);
  out += fmt::format("chain_cache_misses {}\n", cs.misses);
  out += fmt::format("chain_cache_entries {}\n", cs.entries);
  out += fmt::format("nodes {}\n", nodes.size());
  out += fmt::format("kernel_cached_files {}\n", kcache.size());
  out += fmt::format("kernel_cached_bytes {}\n", kcache.content_bytes());
  for (int i = 0; i < static_cast<int>(Op::kCount); ++i) {
    out += fmt::format("fuse_{} {}\n", OpName(static_cast<Op>(i)), ops_[i].load());
  }
  out += fmt::format("pushed_files {}\n", pushed_.load());
  out += fmt::format("push_misses {}\n", push_missed_.load());
  out += fmt::format("errors {}\n", errors_.load());
  out += fmt::format("log_events {}\n", log.total());
  return out;
}

}  // namespace chainfs::fs
