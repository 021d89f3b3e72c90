// qcow2 header parsing (qemu docs/interop/qcow2.txt): the fixed header, the
// version 3 additional fields, and the header extensions, all bounds-checked
// against the file size. The struct is the shared description of a qcow2
// header for every piece of the engine that reads or rewrites one (driver,
// writer, data reader, test helpers).
//
// Thread-safety: everything here is a pure function of its inputs; a parsed
// Qcow2Header is a value type, safe to share when const.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/format/driver.h"
#include "core/io/reader.h"
#include "core/status.h"
#include "core/util/json.h"

namespace chainfs::core {

// --- On-disk constants ----------------------------------------------------

inline constexpr uint32_t kQcow2Magic = 0x514649fb;  // "QFI\xfb"
inline constexpr uint32_t kQcow2V2HeaderLength = 72;
inline constexpr uint32_t kQcow2V3MinHeaderLength = 104;
inline constexpr uint32_t kQcow2MinClusterBits = 9;   // 512 bytes
inline constexpr uint32_t kQcow2MaxClusterBits = 21;  // 2 MiB, qemu's limit
inline constexpr uint32_t kQcow2MaxBackingFileSize = 1023;
// qemu keeps the backing format in a 16-byte buffer, NUL included.
inline constexpr uint32_t kQcow2MaxBackingFormatSize = 15;
inline constexpr uint32_t kQcow2MaxRefcountOrder = 6;
inline constexpr uint64_t kQcow2MaxL1Bytes = 32ull << 20;       // qemu's limit
inline constexpr uint64_t kQcow2MaxRefTableBytes = 8ull << 20;  // qemu's limit
inline constexpr uint32_t kQcow2MaxBitmaps = 65535;
inline constexpr uint64_t kQcow2MaxBitmapDirectoryBytes = 1024ull * kQcow2MaxBitmaps;

// Byte offsets of the fixed header fields.
inline constexpr uint64_t kQcow2OffMagic = 0;
inline constexpr uint64_t kQcow2OffVersion = 4;
inline constexpr uint64_t kQcow2OffBackingFileOffset = 8;
inline constexpr uint64_t kQcow2OffBackingFileSize = 16;
inline constexpr uint64_t kQcow2OffClusterBits = 20;
inline constexpr uint64_t kQcow2OffSize = 24;
inline constexpr uint64_t kQcow2OffCryptMethod = 32;
inline constexpr uint64_t kQcow2OffL1Size = 36;
inline constexpr uint64_t kQcow2OffL1TableOffset = 40;
inline constexpr uint64_t kQcow2OffRefcountTableOffset = 48;
inline constexpr uint64_t kQcow2OffRefcountTableClusters = 56;
inline constexpr uint64_t kQcow2OffNbSnapshots = 60;
inline constexpr uint64_t kQcow2OffSnapshotsOffset = 64;
inline constexpr uint64_t kQcow2OffIncompatibleFeatures = 72;
inline constexpr uint64_t kQcow2OffCompatibleFeatures = 80;
inline constexpr uint64_t kQcow2OffAutoclearFeatures = 88;
inline constexpr uint64_t kQcow2OffRefcountOrder = 96;
inline constexpr uint64_t kQcow2OffHeaderLength = 100;
inline constexpr uint64_t kQcow2OffCompressionType = 104;

// Feature bits.
inline constexpr uint64_t kQcow2IncompatDirty = 1ull << 0;
inline constexpr uint64_t kQcow2IncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kQcow2IncompatDataFile = 1ull << 2;
inline constexpr uint64_t kQcow2IncompatCompression = 1ull << 3;
inline constexpr uint64_t kQcow2IncompatExtendedL2 = 1ull << 4;
inline constexpr uint64_t kQcow2IncompatKnownMask = 0x1f;
inline constexpr uint64_t kQcow2CompatLazyRefcounts = 1ull << 0;
inline constexpr uint64_t kQcow2AutoclearBitmaps = 1ull << 0;
inline constexpr uint64_t kQcow2AutoclearDataFileRaw = 1ull << 1;

// Header extension types.
inline constexpr uint32_t kQcow2ExtEnd = 0x00000000;
inline constexpr uint32_t kQcow2ExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kQcow2ExtFeatureTable = 0x6803f857;
inline constexpr uint32_t kQcow2ExtBitmaps = 0x23852875;
inline constexpr uint32_t kQcow2ExtCryptHeader = 0x0537be77;
inline constexpr uint32_t kQcow2ExtDataFile = 0x44415441;

// crypt_method values.
inline constexpr uint32_t kQcow2CryptNone = 0;
inline constexpr uint32_t kQcow2CryptAes = 1;
inline constexpr uint32_t kQcow2CryptLuks = 2;

// compression_type values.
inline constexpr uint8_t kQcow2CompressionZlib = 0;
inline constexpr uint8_t kQcow2CompressionZstd = 1;

// Size of one feature name table entry.
inline constexpr uint32_t kQcow2FeatureEntrySize = 48;

// --- Parsed structures ----------------------------------------------------

// One header extension as found on disk, in file order (unknown ones too),
// so a writer can rebuild the extension area byte for byte.
struct Qcow2Extension {
  uint32_t type = 0;
  uint64_t offset = 0;        // file offset of the 8-byte extension header
  std::vector<uint8_t> data;  // exactly `length` bytes, padding excluded
};

// One entry of the feature name table extension.
struct Qcow2FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;   // 0..63
  std::string name;  // NUL padding removed
};

// The bitmaps extension (its fixed fields).
struct Qcow2BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t directory_size = 0;
  uint64_t directory_offset = 0;
};

// One entry of the bitmap directory.
struct Qcow2Bitmap {
  std::string name;
  uint64_t table_offset = 0;
  uint32_t table_size = 0;  // entries in the bitmap table
  uint32_t flags = 0;       // bit 0 in_use, bit 1 auto, bit 2 extra_data_compatible
  uint8_t type = 0;         // 1 = dirty tracking
  uint8_t granularity_bits = 0;
  uint32_t extra_data_size = 0;
  bool in_use() const { return flags & 1u; }
  bool is_auto() const { return flags & 2u; }
};

// The full disk encryption header pointer extension.
struct Qcow2CryptHeaderPointer {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// A parsed qcow2 header. Fields keep their on-disk names and meanings; for
// version 2 the version 3 fields hold the values the spec says to assume
// (no features, refcount_order 4, header_length 72, zlib).
struct Qcow2Header {
  uint32_t version = 0;              // 2 or 3
  uint64_t backing_file_offset = 0;  // 0: no backing file
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 0;  // 9..21
  uint64_t size = 0;          // virtual disk size field as stored (see Qcow2VirtualSize)
  uint32_t crypt_method = 0;  // kQcow2Crypt*
  uint32_t l1_size = 0;       // entries
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;  // refcount_bits = 1 << refcount_order
  uint32_t header_length = kQcow2V2HeaderLength;
  uint8_t compression_type = kQcow2CompressionZlib;

  // Backing file name exactly as recorded (up to any NUL, as qemu reads it);
  // nullopt when there is none or it is empty.
  std::optional<std::string> backing_file;
  // Parsed extensions (nullopt / empty when absent).
  std::optional<std::string> backing_format;               // 0xe2792aca
  std::vector<Qcow2FeatureName> feature_names;             // 0x6803f857
  std::optional<std::string> data_file;                    // 0x44415441
  std::optional<Qcow2CryptHeaderPointer> crypt_header;     // 0x0537be77
  std::optional<Qcow2BitmapsExtension> bitmaps_extension;  // 0x23852875
  // The bitmap directory, read only when the extension is present, the
  // autoclear bitmaps bit is set (otherwise qemu ignores the bitmaps) and the
  // directory is well-formed; a malformed one leaves this empty and adds a
  // problem.
  std::vector<Qcow2Bitmap> bitmaps;
  // Every extension in file order, known and unknown, end marker excluded.
  std::vector<Qcow2Extension> extensions;
  // File offset just past the extension area (past the end marker when there
  // is one): where a rewritten extension area may grow from.
  uint64_t extensions_end = 0;
  // Inconsistencies that qemu would refuse or warn about but that do not stop
  // the metadata from being read (unknown incompatible bits, corrupt bit,
  // misaligned or truncated tables...), one line each.
  std::vector<std::string> problems;

  // Returns 1 << cluster_bits.
  uint64_t cluster_size() const { return uint64_t{1} << cluster_bits; }
  // Returns 1 << refcount_order.
  uint32_t refcount_bits() const { return uint32_t{1} << refcount_order; }
  // Return single feature bits by name.
  bool dirty() const { return incompatible_features & kQcow2IncompatDirty; }
  bool corrupt() const { return incompatible_features & kQcow2IncompatCorrupt; }
  bool has_data_file() const { return incompatible_features & kQcow2IncompatDataFile; }
  bool extended_l2() const { return incompatible_features & kQcow2IncompatExtendedL2; }
  bool lazy_refcounts() const { return compatible_features & kQcow2CompatLazyRefcounts; }
  bool data_file_raw() const { return autoclear_features & kQcow2AutoclearDataFileRaw; }
  // Returns the incompatible bits this parser does not know.
  uint64_t unknown_incompatible_features() const {
    return incompatible_features & ~kQcow2IncompatKnownMask;
  }
  // Returns the name the feature name table gives a bit, or "" if none.
  std::string FeatureName(uint8_t type, uint8_t bit) const;
};

// --- Functions ------------------------------------------------------------

// Parses the header and its extensions through `r`. kCorrupt (one-line
// message) when the magic, version, cluster_bits, header_length, backing name
// location/size, extension area or compression type make no sense or lie past
// the end of the file; kUnsupported for a version other than 2 or 3.
// Softer inconsistencies go to Qcow2Header::problems.
Result<Qcow2Header> ParseQcow2Header(const Reader& r);

// Returns the guest-visible size of an image with header `h`: its size
// field rounded down to a multiple of 512, as qemu counts whole sectors
// (a stored 1000 is a 512-byte disk).
inline uint64_t Qcow2VirtualSize(const Qcow2Header& h) { return h.size & ~uint64_t{511}; }

// Builds the ImageMeta the driver reports (format "qcow2", sizes, backing,
// features, qemu-img's format-specific object). Reads the LUKS header
// through `r` for the "encrypt" object; a bad LUKS header becomes a problem.
ImageMeta Qcow2HeaderToMeta(const Qcow2Header& h, const Reader& r);

// Returns the qemu name of a compression type ("zlib", "zstd"), or "" if
// unknown.
const char* Qcow2CompressionName(uint8_t type);

// Encodes extensions (type, length, data, zero padding to 8 bytes each) and
// the 8-byte end marker: the bytes a writer puts at header_length.
std::vector<uint8_t> EncodeQcow2Extensions(const std::vector<Qcow2Extension>& extensions);

}  // namespace chainfs::core
