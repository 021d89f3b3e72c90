// The chainfs command line (DESIGN section 7), including the form
// mount.fuse3 uses for fstab lines: `chainfs SOURCE MOUNTPOINT -o OPTS`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/pool/catalog.h"
#include "core/status.h"

namespace chainfs::fs {

struct MountOptions {
  core::PoolSources sources;
  std::optional<std::string> domain_dir;  // --domain-dir (DESIGN section 8)
  std::optional<std::string> run_dir;     // --run-dir
  std::string mountpoint;
  std::string source;             // mount.fuse3's SOURCE: accepted and ignored
  bool foreground = false;        // -f (and -d)
  bool debug = false;             // -d
  bool read_only = false;         // -o ro
  bool demo = false;              // --demo
  bool help = false;              // -h, --help
  bool version = false;           // -V, --version
  double cache_timeout = 3600.0;  // -o cache_timeout=SECONDS (MountConfig::kDefaultCacheTimeout)
  std::vector<std::string> fuse_options;  // -o items handed to libfuse
};

// Parses argv. kInvalidArgument with a one-line message on a usage error.
core::Result<MountOptions> ParseMountOptions(const std::vector<std::string>& args);

// Returns the --help text.
const char* MountUsage();

}  // namespace chainfs::fs
