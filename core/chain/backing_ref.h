// Classification of backing strings, as libvirt does it: local files
// (relative or absolute), `json:{...}` pseudo-protocol, URIs, and the older
// `proto:` forms (nbd:unix:..., nbd:host:port). Pure string work: nothing is
// opened here.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"
#include "core/util/json.h"

namespace chainfs::core {

enum class BackingKind {
  kRelative,  // a file name relative to the directory of the recording image
  kAbsolute,  // an absolute host path
  kJson,      // json:{...}
  kUri,       // scheme://...
  kProtocol,  // proto:... (nbd:unix:/sock, nbd:host:port, ...)
};

// Names the kind for reports ("relative", "absolute", ...).
const char* BackingKindName(BackingKind kind);

// A network source's parsed form (libvirt's <source protocol=...>).
struct NetworkSource {
  std::string protocol;   // "nbd", "gluster", "iscsi", "http", ...
  std::string transport;  // "tcp", "unix", "rdma" ("" when not given)
  std::string host;       // host name ("" for unix sockets)
  std::string port;       // as written ("" when not given)
  std::string socket;     // unix socket path
  std::string name;       // export / volume/path / target/lun / URL path
  std::string driver;     // for json: a "file" driver that is local ("" otherwise)
  std::string file;       // for json: with driver "file", the local filename
  std::string format;     // for json: the top driver if it is a format ("qcow2")
};

// A backing string as classified.
struct BackingRef {
  BackingKind kind = BackingKind::kRelative;
  std::string raw;            // exactly as recorded
  std::string resolved_path;  // for local files: absolute path (relative joined to the
                              // recording image's directory; not normalised)
  std::optional<NetworkSource> network;  // for network kinds
  bool IsLocal() const { return kind == BackingKind::kRelative || kind == BackingKind::kAbsolute; }
};

// Classifies `raw` as recorded by the image at `recording_image_path`
// (an absolute path). kInvalidArgument for an empty string or one whose
// json:/URI form cannot be parsed. A json: string whose file node is a
// plain local file is classified kJson with network->driver == "file" and
// resolved_path set to that file.
Result<BackingRef> ClassifyBacking(std::string_view raw, std::string_view recording_image_path);

// Returns the directory part of an absolute path ("/a/b/c" -> "/a/b").
std::string DirName(std::string_view path);
// Returns the last component of a path ("/a/b/c" -> "c").
std::string BaseName(std::string_view path);

}  // namespace chainfs::core
