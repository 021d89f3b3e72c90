// The qcow2 (and raw) writer: creates new images from scratch with our own
// code, and rewrites the backing string / backing format of an existing
// qcow2 image in place (what `qemu-img rebase -u` does).
//
// Crash safety (DESIGN section 2): a new image is written into an unnamed
// (O_TMPFILE) or hidden temporary file in the target directory, fsync'ed,
// then linked into place without ever replacing an existing name; the
// directory is fsync'ed afterwards. On any failure the temporary file is
// removed, so no partial image is ever visible. A header rewrite builds the
// complete new header cluster in memory and writes it with one pwrite
// followed by fsync; every byte outside the header area stays as it was.
//
// Thread-safety: every function here is safe to call concurrently on
// different paths; concurrent rewrites of the same image are serialised by
// the OFD lock taken for the update (the loser gets kBusy).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/format/qcow2/header.h"
#include "core/status.h"

namespace chainfs::core {

inline constexpr uint64_t kQcow2DefaultClusterSize = 64 * 1024;
// qemu writes the feature name table only for clusters larger than 4 KiB,
// leaving small header clusters to the backing string (qemu 7.2 behaviour).
inline constexpr uint64_t kQcow2FeatureTableMinCluster = 8192;
// extended_l2 needs clusters of at least 16 KiB (qemu's rule).
inline constexpr uint64_t kQcow2ExtendedL2MinCluster = 16384;

// Owner and mode of a file the writer creates.
struct NewFileOptions {
  uint32_t mode = 0644;         // applied with fchmod, so the umask does not apply
  std::optional<uint32_t> uid;  // fchown when set (needs privilege for other users)
  std::optional<uint32_t> gid;
  // Tests turn this off to exercise the named temporary file path that is
  // used where O_TMPFILE is unsupported.
  bool allow_o_tmpfile = true;
};

// What CreateQcow2 makes.
struct Qcow2CreateOptions {
  uint64_t size = 0;                                 // virtual size; rounded up to 512 as qemu does
  uint32_t version = 3;                              // 2 = compat 0.10, 3 = compat 1.1
  uint64_t cluster_size = kQcow2DefaultClusterSize;  // power of two, 512..2M
  bool lazy_refcounts = false;                       // v3 only
  bool extended_l2 = false;                          // v3 only, cluster_size >= 16K
  std::optional<std::string> backing;                // recorded exactly as given
  std::optional<std::string> backing_format;         // needs `backing`
  NewFileOptions file;
};

// One run of non-zero bytes of a planned image; everything else is a hole.
struct ImageExtent {
  uint64_t offset = 0;
  std::vector<uint8_t> bytes;
};

// The complete contents of a new image: extents plus the file length.
struct ImagePlan {
  std::vector<ImageExtent> extents;
  uint64_t file_size = 0;
};

// Fills a freshly created, empty file through its descriptor.
using FillFunction = std::function<Status(int fd)>;

// Checks a backing string qemu can record: 1..1023 bytes, no NUL.
// kInvalidArgument otherwise.
Status ValidateBackingString(std::string_view backing);
// Checks a backing format name qemu can record: 1..15 bytes of [a-z0-9_-.].
// kInvalidArgument otherwise. (Whether the name is a known format is the
// caller's policy.)
Status ValidateBackingFormatName(std::string_view format);

// Checks options for CreateQcow2; kInvalidArgument with the reason.
Status ValidateQcow2CreateOptions(const Qcow2CreateOptions& opts);

// Plans a new qcow2 image laid out as qemu-img lays it out: header cluster,
// refcount table, refcount block(s), L1 table sized for the virtual size,
// refcount 1 for every used cluster. Pure; kInvalidArgument for bad options.
Result<ImagePlan> PlanQcow2Image(const Qcow2CreateOptions& opts);

// Creates `path` and fills it with `fill`, crash-safely (see top of file).
// kExists if `path` exists (it is never overwritten), kNotFound if its
// directory is missing, kNoSpace on ENOSPC; errors of `fill` are returned
// as they are. No temporary file remains on any error.
Status CreateFileAtomically(const std::string& path, const NewFileOptions& opts,
                            const FillFunction& fill);

// Creates a new qcow2 image at `path` (see CreateFileAtomically for errors).
Status CreateQcow2(const std::string& path, const Qcow2CreateOptions& opts);

// Creates a sparse raw image of `size` bytes at `path` (ftruncate).
Status CreateRaw(const std::string& path, uint64_t size, const NewFileOptions& opts = {});

// Builds the new header area of an image whose parsed header is `h` and whose
// first header_length bytes are `fixed` (unknown trailing header fields are
// kept): the fixed header with the backing fields updated, the extensions of
// `h` in their order with the backing format extension replaced, inserted
// first or removed, the end marker and the backing string. If the result does
// not fit in the first cluster the feature name table (informational only)
// is left out; if it still does not fit: kNoSpace, as qemu's ENOSPC "No space
// left in the file header" (qemu never moves the header area out of cluster 0,
// because it would not open such an image). Pure.
Result<std::vector<uint8_t>> BuildQcow2HeaderArea(const Qcow2Header& h,
                                                  std::span<const uint8_t> fixed,
                                                  const std::optional<std::string>& backing,
                                                  const std::optional<std::string>& backing_format);

// Sets or clears (nullopt or "") the backing string and the backing format
// extension (nullopt = removed) of the qcow2 image at `path`, keeping every
// other extension. kBusy if the image is in use (QEMU image locks, see
// core/write/in_use.h), kInvalidArgument for a bad string or format name or a
// format without a string, kUnsupported for a file that is not qcow2 or has
// incompatible features we do not know, kCorrupt for a header that cannot be
// parsed or an image marked corrupt, kNoSpace when the header area cannot
// hold the string. Nothing changes on disk on any error.
Status RewriteBacking(const std::string& path, std::optional<std::string> backing,
                      std::optional<std::string> backing_format);

// Sets the backing format extension, keeping the backing string; errors as
// RewriteBacking, plus kInvalidArgument when the image has no backing string.
Status RewriteBackingFormat(const std::string& path, const std::string& backing_format);

}  // namespace chainfs::core
