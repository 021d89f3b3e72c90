// The domains' view as both front ends show it: a disk's chain resolved
// against the pools, and who uses an image (DESIGN section 8).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/chain/inspector.h"
#include "core/domain/disk_chain.h"
#include "core/domain/domain_catalog.h"
#include "core/pool/catalog.h"

namespace chainfs::core {

// Builds the context of the disks of domain `domain`: volumes resolved
// through `pools`, fixes phrased with its locator. `pools` must outlive it.
DiskContext MakeDiskContext(PoolCatalog& pools, const std::string& domain);

// The disk a disk directory shows: the live XML's for a running domain
// (the chain QEMU opened), else the definition's. nullptr when none.
const DiskDef* ShownDisk(const DomainEntry& entry, const std::string& target);

// Resolves the disk `disk` of `entry` as ShownDisk chose it: the
// definition's chain, or the live chain with its drift.
Chain ResolveShownDisk(ImageInspector& inspector, const DomainEntry& entry, const DiskDef& disk,
                       const DiskContext& context);

// A chain and whom it belongs to, for UsersOf.
struct ChainOwner {
  std::string name;  // "DOMAIN/TARGET" or "POOL/VOLUME"
  std::shared_ptr<const Chain> chain;
};

// Returns the names of the owners whose chain holds the image of identity
// (dev, ino) at any depth (the top included for domain disks; `skip` names
// an owner left out: the volume itself). In the order given.
std::vector<std::string> UsersOf(const std::vector<ChainOwner>& owners, uint64_t dev, uint64_t ino,
                                 const std::string& skip = {});

}  // namespace chainfs::core
