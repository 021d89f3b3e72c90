// The format driver interface: one driver per image format, each behind the
// same table (like QEMU's BlockDriver). Drivers only *report* backing
// references; the chain resolver decides what to open.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/io/reader.h"
#include "core/status.h"
#include "core/util/json.h"

namespace chainfs::core {

// How many leading bytes probing looks at: enough for an ISO 9660 volume
// descriptor at 32769 (libvirt reads the same amount).
inline constexpr size_t kProbeBytes = 0x8200;

// Where an image keeps its block tables and data, for the data path
// (core/data): filled by the drivers whose formats map guest bytes through a
// table (qed, vdi, vpc, vhdx, a vmdk sparse extent, qcow). Offsets are bytes
// in the image file, as recorded: the reader checks every one against the
// file size before use. Fields a format has no use for stay 0.
struct BlockLayout {
  uint64_t table_offset = 0;   // qed/qcow L1, vdi block map, vpc/vhdx BAT, vmdk grain directory
  uint64_t table_entries = 0;  // entries of that table
  uint64_t block_bytes = 0;    // guest bytes one lowest-level entry maps
  uint64_t l2_entries = 0;     // entries per second-level table (qed, qcow L2, vmdk grain table)
  uint64_t data_offset = 0;    // vdi: offset_data; qed: header bytes (no cluster lies before)
  uint32_t type = 0;           // vdi image type (1 dynamic, 2 static); vpc disk type (2, 3, 4)
  uint32_t sector_size = 0;    // vhdx logical sector size
  uint32_t flags = 0;          // vmdk sparse header flags
  bool has_parent = false;     // vhdx: a differencing image
  bool log_pending = false;    // vhdx: the current header names an active log
  bool compressed = false;     // vmdk: grains are deflate-compressed (streamOptimized)
};

// Metadata of one image file, as read from its own header. Immutable once
// built; shared as std::shared_ptr<const ImageMeta>.
struct ImageMeta {
  std::string format;             // driver name: "qcow2", "raw", ...
  uint64_t virtual_size = 0;      // guest-visible bytes
  std::optional<uint64_t> cluster_size;
  bool encrypted = false;
  std::string encryption_format;  // "aes", "luks" when encrypted
  std::optional<std::string> backing;         // backing string exactly as recorded
  std::optional<std::string> backing_format;  // backing format as recorded
  bool dirty = false;                         // qemu-img's dirty-flag
  std::optional<std::string> data_file;       // qcow2 external data file
  // For volume.xml (as libvirt reports them).
  std::optional<std::string> compat;          // "0.10", "1.1"
  std::vector<std::string> features;          // "lazy_refcounts", "extended_l2"
  // qemu-img's "format-specific" object ({"type":..., "data":{...}}), or null.
  Json format_specific;
  // Header facts that make the image unusable or suspicious, one line each
  // (unknown incompatible bits, corrupt bit, ...). Shown in `problems`.
  std::vector<std::string> problems;
  // Host bytes allocated by the other files this image's data lives in
  // (the extent files of a vmdk descriptor), which qemu-img adds to the
  // image's own allocation in its "actual-size"; 0 for one-file formats.
  // Measured when the metadata was built (FormatDriver::AttachPath).
  uint64_t external_allocation = 0;
  // Table locations for reading the data (see BlockLayout); absent for
  // formats read without one (raw, qcow2, which parses its own header).
  std::optional<BlockLayout> layout;
};

// Returns qemu-img's "actual-size" of an image whose own file has
// `own_allocation` bytes allocated (st_blocks * 512): that plus the
// allocation of its extent files. `meta` may be null (not parsed).
inline uint64_t QemuActualSize(uint64_t own_allocation, const ImageMeta* meta) {
  return own_allocation + (meta ? meta->external_allocation : 0);
}

// Returns the virtual size qemu reports for a raw file of `file_size`
// bytes: the size rounded up to a multiple of 512 (whole sectors).
inline uint64_t RawVirtualSize(uint64_t file_size) {
  return file_size > UINT64_MAX - 511 ? UINT64_MAX & ~uint64_t{511}
                                      : (file_size + 511) & ~uint64_t{511};
}

// One image format. Implementations are stateless and thread-safe.
class FormatDriver {
 public:
  virtual ~FormatDriver() = default;
  // Returns the format's name as qemu and libvirt spell it ("qcow2").
  virtual std::string_view Name() const = 0;
  // Scores how surely `head` (the first min(kProbeBytes, file_size) bytes)
  // is this format: 0 = not it, 100 = certain. Never reads past head.
  virtual int Probe(std::span<const uint8_t> head, uint64_t file_size) const = 0;
  // Parses the image's metadata through `r`. Every offset and length read
  // from the image is bounds-checked; bad headers give kCorrupt or
  // kUnsupported with a one-line message, never a crash.
  virtual Result<ImageMeta> Parse(const Reader& r) const = 0;
  // Completes path-dependent fields of `meta` for an image opened as
  // `image_path` (Parse never sees paths; this may stat, never open, the
  // files the metadata names). Default: nothing to do.
  virtual void AttachPath(ImageMeta& /*meta*/, std::string_view /*image_path*/) const {}
};

// Returns every registered driver, raw last.
const std::vector<const FormatDriver*>& AllDrivers();
// Returns the driver for `name`, or nullptr if the name is not a known format.
const FormatDriver* FindDriver(std::string_view name);
// Returns the driver whose Probe scores highest for `r` (raw if none match).
// Reads at most kProbeBytes. Errors only if reading fails.
Result<const FormatDriver*> ProbeFormat(const Reader& r);

}  // namespace chainfs::core
