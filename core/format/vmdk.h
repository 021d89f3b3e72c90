// VMDK descriptor parsing, exposed for tests and for callers that want the
// extent list (the driver itself is MakeVmdkDriver() in all_drivers.h).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/util/json.h"

namespace chainfs::core {

// The most descriptor text the driver reads. QEMU reads less than 1 MiB
// too; a larger text descriptor is read up to this limit and reported.
inline constexpr uint64_t kVmdkMaxDescriptorBytes = 1 << 20;

// One extent line: `RW 204800 SPARSE "disk-s001.vmdk" [offset]`.
struct VmdkExtent {
  std::string access;    // "RW", "RDONLY"
  uint64_t sectors = 0;  // 512-byte sectors
  std::string type;      // "SPARSE", "FLAT", "VMFS", ...
  std::string filename;  // as written, relative to the descriptor's folder
  uint64_t offset = 0;   // FLAT/VMFS: first sector inside the extent file
};

// What a text descriptor says. Unknown keys (ddb.*) are ignored.
struct VmdkDescriptor {
  std::optional<uint32_t> cid;             // CID=hex
  std::optional<uint32_t> parent_cid;      // parentCID=hex
  std::string create_type;                 // createType="..." ("" if absent)
  std::optional<std::string> parent_hint;  // parentFileNameHint="..."
  std::vector<VmdkExtent> extents;         // RW and RDONLY extents, in order
  std::vector<std::string> problems;       // lines skipped as malformed, ...
};

// Parses descriptor text (at most kVmdkMaxDescriptorBytes are looked at).
// Malformed extent lines become `problems`; kCorrupt if the total size
// overflows or there are absurdly many extents.
Result<VmdkDescriptor> ParseVmdkDescriptor(std::string_view text);

// Scores `head` as a text descriptor the way QEMU probes one: comment lines
// and lines of spaces, then "version=1|2|3" -> 100; otherwise 0.
int ProbeVmdkDescriptor(std::span<const uint8_t> head);

// Returns `format_specific` with the vmdk extent file names spelled as
// qemu-img prints them for an image opened as `image_path`: the self
// extent of a sparse image (recorded as "") becomes `image_path`, a relative
// name is joined to the image's folder. Other values are returned as-is.
// The driver cannot do this itself because Parse never sees the path.
Json ResolveVmdkExtentNames(const Json& format_specific, std::string_view image_path);

}  // namespace chainfs::core
