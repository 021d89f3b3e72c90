// Parsing a libvirt <volume> XML, as written to POOL/.create in the mount and
// as `virsh vol-create` accepts it, into what the writer needs.
//
// Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace chainfs::core {

// The parts of a <volume> the engine acts on. <allocation> is read for
// validity and otherwise ignored: volumes are never preallocated.
struct VolumeSpec {
  std::string name;                           // <name>, a plain file name
  std::optional<uint64_t> capacity;           // bytes; absent only with a backingStore
  std::string format = "raw";                 // <target><format type=...>: "raw" or "qcow2"
  std::optional<std::string> compat;          // "0.10" or "1.1" (qcow2 only)
  std::optional<uint64_t> cluster_size;       // bytes (qcow2 only)
  bool lazy_refcounts = false;                // <features><lazy_refcounts/>
  bool extended_l2 = false;                   // <features><extended_l2/>
  std::optional<std::string> backing_path;    // <backingStore><path>
  std::optional<std::string> backing_format;  // <backingStore><format type=...>
  std::optional<uint32_t> mode;               // <permissions><mode>, octal
  std::optional<uint32_t> owner;              // <permissions><owner>, numeric uid (-1 = unset)
  std::optional<uint32_t> group;              // <permissions><group>, numeric gid (-1 = unset)
};

// Scales `value` by a libvirt unit name (virsh's rules: "", b, byte, bytes
// = 1; k/KiB = 1024, KB = 1000; likewise M, G, T, P, E; case-insensitive).
// kInvalidArgument for an unknown unit or a result over 2^64-1.
Result<uint64_t> ScaleLibvirtUnit(uint64_t value, std::string_view unit);

// Parses a <volume> document. kInvalidArgument with a one-line reason for
// malformed XML, a missing or bad name, a bad number or unit, a format other
// than raw or qcow2, qcow2-only settings on raw, or a backing store on raw.
Result<VolumeSpec> ParseVolumeXml(std::string_view xml);

}  // namespace chainfs::core
