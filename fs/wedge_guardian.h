// WedgeGuardian: a small process, forked by the daemon before its threads
// start, that frees the mount if the daemon is killed while one of its
// threads is blocked in the kernel on this mount.
//
// The daemon never sends an entry invalidation while a request on the
// directory is in flight (fs/dir_gate.h), but one window remains that the
// kernel's interface cannot close: a request the kernel has queued (holding
// the directory's lock) that the daemon has not read yet. An invalidation
// sent then waits for that request's reply. If the daemon is SIGKILLed in
// that moment, every thread exits but the blocked one, which sleeps
// uninterruptibly; /dev/fuse stays open and the mount is wedged for good.
//
// The guardian sees that state (the daemon's main thread has exited, another
// of its threads has not) and aborts the connection the way `umount -f`
// does: the queued request fails, the lock is released, the blocked write
// returns and the process ends. It does nothing else, holds no descriptor
// of the mount, and exits as soon as the daemon is gone.
#pragma once

#include <sys/types.h>

#include <string>

namespace chainfs::fs {

// Forks the guardian for the daemon (the calling process) mounted at
// `mountpoint`. Call while the process has a single thread. Returns its PID,
// or -1 (and logs nothing: the mount works without it) if fork failed.
pid_t StartWedgeGuardian(const std::string& mountpoint);

}  // namespace chainfs::fs
