// The chain resolver: walks an image's backing chain with libvirt's rules
// (DESIGN section 3): format only from metadata, probing only images with no
// backing string of their own, depth 200, loops by (dev, ino), network
// sources shown but never opened, external data files never followed.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/chain/chain.h"
#include "core/chain/inspector.h"

namespace chainfs::core {

// Maps an absolute host path to "POOL/VOLUME" when the file is a volume of a
// known pool (used to phrase fixes as file operations in the mount).
using VolumeLocator = std::function<std::optional<std::string>(const std::string& path)>;

struct ResolveOptions {
  int max_depth = kMaxChainDepth;
  VolumeLocator locate;  // may be empty
};

// Resolves the chain of the image at `path` (made absolute by the caller).
// The top image's format is probed, as libvirt does for pool volumes.
// Never fails: everything that goes wrong becomes a Problem and the chain
// stops at the element concerned. Thread-safe if `inspector` is.
Chain ResolveChain(ImageInspector& inspector, const std::string& path,
                   const ResolveOptions& options = {});

}  // namespace chainfs::core
