// RunMount: everything `chainfs` does between parsing its arguments and
// exiting: load pools, mount, daemonize, serve, unmount.
#pragma once

#include "fs/options.h"

namespace chainfs::fs {

// Mounts and serves until unmounted (fusermount3 -u, umount, SIGTERM,
// SIGINT). Returns the process exit status: 0 after a clean unmount, 1 when
// the mount could not be set up (the reason is printed on stderr).
int RunMount(const MountOptions& options);

}  // namespace chainfs::fs
