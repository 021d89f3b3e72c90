// qcow2 crafting helpers for tests: build headers and whole small images in
// memory (valid or deliberately broken), and rewrite the header of a real
// qemu-img-made image in ways modern qemu-img refuses to (no backing format,
// a backing string pointing nowhere or into a loop).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/format/qcow2/header.h"
#include "core/status.h"

namespace chainfs::testutil {

// What CraftQcow2Header / CraftQcow2Image put into an image. The defaults
// make a healthy empty 64 MiB v3 image with 64 KiB clusters.
struct CraftOptions {
  uint32_t version = 3;
  uint64_t size = 64ull << 20;  // virtual size
  uint32_t cluster_bits = 16;
  std::optional<std::string> backing;         // written after the extensions
  std::optional<std::string> backing_format;  // 0xe2792aca extension
  std::optional<std::string> data_file;       // 0x44415441 extension (set the bit yourself)
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t crypt_method = 0;
  // 0 means the natural length: 72 for v2, 112 for v3 (with compression_type).
  uint32_t header_length = 0;
  uint8_t compression_type = 0;  // written at byte 104 when header_length > 104
  // Adds a feature name table naming the five known incompatible bits,
  // lazy refcounts and the two autoclear bits, plus these extra entries.
  bool feature_table = false;
  std::vector<core::Qcow2FeatureName> extra_feature_names;
  // Raw extensions appended after the ones above (type and data; offset unused).
  std::vector<core::Qcow2Extension> extra_extensions;
};

// Builds just the header area: header, extensions, end marker and backing
// string, with no padding and no tables (so refcount/L1 offsets point past
// its end). For parser tests that truncate or corrupt header bytes.
std::vector<uint8_t> CraftQcow2Header(const CraftOptions& opts);

// Builds a complete, consistent image (header cluster, refcount table and
// blocks, empty L1 table) that `qemu-img check` accepts, every guest cluster
// unallocated. The header area must fit in the first cluster.
std::vector<uint8_t> CraftQcow2Image(const CraftOptions& opts);

// Writes bytes to `path` (created or truncated, mode 0644).
core::Status WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes);

// Writes CraftQcow2Image(opts) to `path`.
core::Status WriteCraftedQcow2(const std::string& path, const CraftOptions& opts);

// Rewrites the header extension area of an existing qcow2 file so the
// backing format extension is gone while every other extension and the
// backing string stay (the string moves up to follow the end marker). One
// pwrite + fsync. kInvalidArgument if the image records no backing format;
// errors of ParseQcow2Header otherwise.
core::Status StripBackingFormat(const std::string& path);

// Rewrites the backing string (and the backing format extension: replaced
// by `format`, or removed when nullopt) of an existing qcow2 file; an empty
// `backing` removes the backing reference. Handles only strings that fit in
// the first cluster after the extensions (kNoSpace otherwise) and at most
// 1023 bytes (kInvalidArgument). One pwrite + fsync.
core::Status SetBackingString(const std::string& path, const std::string& backing,
                              const std::optional<std::string>& format);

// --- Guest clusters of an image held in memory (for readers' tests) --------
// These edit a CraftQcow2Image (or any qcow2 image in memory with an L1
// table) without touching refcounts: what they make reads as intended, but
// `qemu-img check` reports the new clusters as unreferenced.

// Appends a zeroed, cluster-aligned L2 table, points L1 entry `l1_index` at
// it (with the copied flag) and returns its host offset.
uint64_t CraftAppendL2Table(std::vector<uint8_t>& image, uint64_t l1_index);
// Appends one cluster filled with `fill` and returns its host offset.
uint64_t CraftAppendCluster(std::vector<uint8_t>& image, uint8_t fill);
// Sets the standard (8-byte) entry `index` of the L2 table at `l2_offset`.
void CraftSetL2Entry(std::vector<uint8_t>& image, uint64_t l2_offset, uint64_t index,
                     uint64_t entry);

// --- Whole images with chosen guest clusters --------------------------------

// What one guest cluster of CraftQcow2WithClusters is.
enum class CraftCluster {
  kUnallocated,  // no L2 entry: the backing (or zeros) shows through
  kData,         // a data cluster filled with CraftDataByte(index)
  kZero,         // the zero flag without a host cluster (version 3 only)
};

// Returns the byte that fills the data cluster of guest cluster `index`.
inline uint8_t CraftDataByte(uint64_t index) { return uint8_t(1 + index % 251); }

// Builds a complete, consistent image (standard L2 entries; refcounts right,
// so `qemu-img check` is clean) whose guest cluster i is kind(i), L2 tables
// and data clusters after the L1 table in guest order. `kind` is called
// twice per cluster and must answer the same both times. Aborts for
// extended L2 or a zero cluster in version 2.
std::vector<uint8_t> CraftQcow2WithClusters(const CraftOptions& opts,
                                           const std::function<CraftCluster(uint64_t)>& kind);

// --- L2 entries of an image file ------------------------------------------

// Returns the standard (8-byte) L2 entry that maps guest cluster `cluster`
// of the qcow2 file at `path`. kNotFound if no L2 table covers it.
core::Result<uint64_t> ReadL2Entry(const std::string& path, uint64_t cluster);
// Overwrites that entry with `entry` (one pwrite + fsync): e.g. a zero flag
// qemu-img never writes into a version 2 image. kNotFound as ReadL2Entry.
core::Status WriteL2Entry(const std::string& path, uint64_t cluster, uint64_t entry);

}  // namespace chainfs::testutil
