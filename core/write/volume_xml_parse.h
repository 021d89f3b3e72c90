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

// How far a <volume> document received in pieces (writes to POOL/.create)
// has come.
enum class XmlPrefixState {
  kIncomplete,  // may still become a document: wait for more bytes
  kComplete,    // a well-formed document with a root element: act on it
  kInvalid,     // can never become a <volume> document: refuse it now
};

// The verdict of ClassifyVolumeXmlPrefix.
struct XmlPrefix {
  XmlPrefixState state = XmlPrefixState::kIncomplete;
  std::string reason;  // one line (bytes echoed only as escaped short tokens)
};

// The largest <volume> document accepted (a real one is a few hundred
// bytes).
inline constexpr size_t kMaxVolumeXmlBytes = 1 << 20;

// Decides whether `bytes`, the start of a document written so far, can
// still become a <volume> document. kInvalid, with the reason, for: a first
// character (after an optional UTF-8 byte order mark and white space) that
// is not '<'; more than kMaxVolumeXmlBytes; a root element whose name is,
// or begins unlike, anything but "volume"; an XML error that the bytes
// already received cause (pugixml reports it before the last unfinished
// construct: a tag, comment, CDATA section, processing instruction, DOCTYPE
// or the trailing text). kComplete for a well-formed document with a root
// element (whose content ParseVolumeXml then checks); kIncomplete
// otherwise, with pugixml's complaint about the end as the reason. Pure.
XmlPrefix ClassifyVolumeXmlPrefix(std::string_view bytes);

}  // namespace chainfs::core
