#include "core/domain/domain_view.h"

namespace chainfs::core {

DiskContext MakeDiskContext(PoolCatalog& pools, const std::string& domain) {
  DiskContext ctx;
  ctx.domain = domain;
  ctx.locate = pools.MakeLocator();
  ctx.access_as = DefaultAccessAs();
  ctx.resolve_volume = [&pools](const std::string& pool,
                                const std::string& volume) -> Result<std::string> {
    std::optional<PoolDef> def = pools.FindPool(pool);
    if (!def) {
      return Error(Code::kNotFound, "Storage pool not found: no storage pool with matching name '{}'",
                   pool);
    }
    std::optional<VolumeEntry> v = pools.FindVolume(pool, volume);
    if (!v) {
      return Error(Code::kNotFound,
                   "Storage volume not found: no storage vol with matching name '{}'", volume);
    }
    return v->path;
  };
  return ctx;
}

const DiskDef* ShownDisk(const DomainEntry& entry, const std::string& target) {
  if (const DiskDef* live = entry.FindLiveDisk(target)) return live;
  return entry.FindDisk(target);
}

Chain ResolveShownDisk(ImageInspector& inspector, const DomainEntry& entry, const DiskDef& disk,
                       const DiskContext& context) {
  Chain chain = ResolveDiskChain(inspector, disk, context);
  if (entry.running() && entry.FindLiveDisk(disk.target) == &disk) {
    AddDrift(inspector, chain, context);
  }
  return chain;
}

std::vector<std::string> UsersOf(const std::vector<ChainOwner>& owners, uint64_t dev, uint64_t ino,
                                 const std::string& skip) {
  std::vector<std::string> out;
  for (const ChainOwner& o : owners) {
    if (!o.chain || o.name == skip) continue;
    for (const ChainElement& e : o.chain->elements) {
      if (e.stat && e.stat->id.dev == dev && e.stat->id.ino == ino) {
        out.push_back(o.name);
        break;
      }
    }
  }
  return out;
}

}  // namespace chainfs::core
