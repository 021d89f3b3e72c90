// The chain resolver: walks an image's backing chain with libvirt's rules
// (DESIGN section 3): format only from metadata, probing only images with no
// backing string of their own, depth 200, loops by (dev, ino), network
// sources shown but never opened, external data files never followed.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/chain/chain.h"
#include "core/chain/inspector.h"

namespace chainfs::core {

// Maps an absolute host path to "POOL/VOLUME" when the file is a volume of a
// known pool (used to phrase fixes as file operations in the mount).
using VolumeLocator = std::function<std::optional<std::string>(const std::string& path)>;

struct ResolveOptions {
  int max_depth = kMaxChainDepth;
  VolumeLocator locate;  // may be empty
  // libvirt's wording for a domain disk (DESIGN section 8), which differs
  // from the pools': when set, a backing file that cannot be accessed is
  // reported "of storage file '<broken_parent>'" (libvirt names the image
  // its detection started from, not the image recording the name) and
  // followed by " (as <access_as>): <strerror>".
  std::string broken_parent;
  std::string access_as;  // "uid:N, gid:N"
};

// Resolves the chain of the image at `path` (made absolute by the caller).
// The top image's format is probed, as libvirt does for pool volumes.
// Never fails: everything that goes wrong becomes a Problem and the chain
// stops at the element concerned. Thread-safe if `inspector` is.
Chain ResolveChain(ImageInspector& inspector, const std::string& path,
                   const ResolveOptions& options = {});

// Continues `start` by the same image rules from its last element, which
// must have been opened (stat set) in the format it names; the elements
// before it are taken as given (a domain's explicit <backingStore> chain)
// and only count for loop detection. Returns `start` unchanged when its
// last element cannot be reopened as before.
Chain ContinueChain(ImageInspector& inspector, Chain start, const ResolveOptions& options = {});

// Returns true if reading a file as `recorded` gives the guest the same
// bytes as reading it as `probed`: equal names, or iso (which qemu opens as
// raw) against raw.
bool SameGuestView(std::string_view recorded, std::string_view probed);

// Returns strerror's text for the errno a Status stands for ("No such file
// or directory"), as libvirt's system errors end.
std::string SystemErrorText(const Status& status);

}  // namespace chainfs::core
