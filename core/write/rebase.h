// The data-preserving rebase (DESIGN section 2, `echo PATH > VOL/rebase`,
// `chainctl rebase -b PATH IMAGE`) and flatten (`echo "" > VOL/rebase`), as
// `qemu-img rebase` in safe mode does them.
//
// For every range the image does not allocate itself, the old chain's
// content (what its backings provide) is compared with the new backing's
// content; where they differ, the old content is copied into the image
// (a zero cluster where the old content is zeros, on v3). The unit is the
// cluster, or the subcluster on extended L2 images, whose unallocated
// subclusters inside allocated clusters are compared and copied too. Ranges the image
// allocates itself are never touched. Then the backing pointer is rewritten
// (one pwrite + fsync). Data strictly precedes the pointer change, and the
// copy goes through Qcow2Writer's crash-safe order, so a crash at any point
// leaves the guest-visible content unchanged and `qemu-img check` reports at
// worst leaked clusters. Running the rebase again after a crash finishes it.
//
// Thread-safety: safe to call concurrently on different images if the
// inspector and the trust context are; a second rebase of the same image
// meanwhile fails with kBusy (OFD locks).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "core/chain/inspector.h"
#include "core/chain/trust.h"
#include "core/format/qcow2/allocator.h"
#include "core/status.h"

namespace chainfs::core {

// Receives progress: guest bytes examined so far and the guest size. Called
// on the thread that called SafeRebase: at the start (0), regularly while
// copying (at least every 64 MiB of guest data), and with bytes_done ==
// bytes_total once every copy is on disk, before the backing pointer
// changes.
using ProgressFn = std::function<void(uint64_t bytes_done, uint64_t bytes_total)>;

// Tuning of SafeRebase (tests and benchmarks; defaults suit everyone else).
struct RebaseOptions {
  // Guest bytes compared per step (rounded to whole clusters of the image).
  uint64_t chunk_bytes = 4ull << 20;
  // How the copied clusters are written (sync between phases, batch size).
  Qcow2WriterOptions writer;
};

// Rebases the qcow2 image at `image_path` (absolute) onto `new_backing`
// (recorded exactly as given; a relative string is resolved against the
// image's directory), or flattens it onto nothing when `new_backing` is
// nullopt or empty. The backing format recorded is `new_backing_format`
// when given (it must be a known format), else the one TrustedBackingFormat
// allows for the new backing.
//
// Errors (nothing is changed on disk by any of them):
//   kNotFound          the image or the new backing is missing
//   kBusy              the image is in use (QEMU image locks)
//   kIo (errno EIO)    the old chain cannot be read (missing or broken
//                      backing, unreadable data)
//   kPermissionDenied  the new backing's format cannot be trusted
//   kInvalidArgument   bad backing string or format name, a format given
//                      for a flatten, a new backing whose chain contains
//                      the image itself
//   kUnsupported       the image is not qcow2 or is not writable by
//                      Qcow2Writer (encrypted, snapshots, data file...),
//                      the new backing is a network source or its declared
//                      format does not match its content
// A failure while copying (kIo, kNoSpace) leaves the old backing pointer and
// a guest-visible content that is unchanged.
Status SafeRebase(ImageInspector& inspector, const std::string& image_path,
                  std::optional<std::string> new_backing,
                  std::optional<std::string> new_backing_format, const TrustContext& trust,
                  ProgressFn progress = {});

// Same, with tuning.
Status SafeRebase(ImageInspector& inspector, const std::string& image_path,
                  std::optional<std::string> new_backing,
                  std::optional<std::string> new_backing_format, const TrustContext& trust,
                  ProgressFn progress, const RebaseOptions& options);

}  // namespace chainfs::core
