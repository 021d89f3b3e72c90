#include "core/chain/backing_ref.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "core/util/escape.h"

namespace chainfs::core {
namespace {

// Protocols libvirt recognises in the "proto:rest" and URI forms.
constexpr std::array<std::string_view, 14> kProtocols = {
    "nbd", "rbd", "sheepdog", "gluster", "iscsi", "http", "https",
    "ftp", "ftps", "tftp",     "ssh",     "vxhs",  "nfs",  "iser"};

bool IsKnownProtocol(std::string_view p) {
  return std::find(kProtocols.begin(), kProtocols.end(), p) != kProtocols.end();
}

// Returns the scheme of "scheme://..." or "" when `s` is not such a URI.
std::string_view UriScheme(std::string_view s) {
  size_t sep = s.find("://");
  if (sep == std::string_view::npos || sep == 0) return {};
  std::string_view scheme = s.substr(0, sep);
  if (!std::isalpha(static_cast<unsigned char>(scheme[0]))) return {};
  for (char c : scheme) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return {};
  }
  return scheme;
}

std::string QueryParam(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    size_t eq = kv.find('=');
    if (eq != std::string_view::npos && kv.substr(0, eq) == key) return std::string(kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

Result<NetworkSource> ParseUri(std::string_view raw, std::string_view scheme) {
  NetworkSource n;
  size_t plus = scheme.find('+');
  n.protocol = std::string(scheme.substr(0, plus));
  if (plus != std::string_view::npos) n.transport = std::string(scheme.substr(plus + 1));
  std::string_view rest = raw.substr(scheme.size() + 3);
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return Error(Code::kInvalidArgument, "backing URI '{}' has an unterminated IPv6 address",
                   ShortToken(raw));
    }
    n.host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() == ':') n.port = std::string(authority.substr(1));
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    n.host = std::string(authority.substr(0, colon));
    n.port = std::string(authority.substr(colon + 1));
  } else {
    n.host = std::string(authority);
  }
  if (n.transport.empty()) n.transport = n.host.empty() ? "" : "tcp";
  n.socket = QueryParam(query, "socket");
  if (!n.socket.empty()) n.transport = "unix";
  // Libvirt's <source name=...>: the path without its leading slash.
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  n.name = std::string(path);
  if (n.protocol != "nbd" && n.protocol != "gluster" && n.protocol != "iscsi" &&
      n.protocol != "rbd" && n.protocol != "sheepdog") {
    n.name = std::string(path.empty() ? "" : "/") + std::string(path);
  }
  return n;
}

// Parses the older "proto:..." forms: nbd:unix:/sock[:exportname=X],
// nbd:host:port[:exportname=X], rbd:pool/image[:opts], sheepdog:vdi...
NetworkSource ParseProtocolForm(std::string_view raw, std::string_view proto) {
  NetworkSource n;
  n.protocol = std::string(proto);
  std::string_view rest = raw.substr(proto.size() + 1);
  if (proto == "nbd") {
    std::string_view exportname;
    if (size_t e = rest.find(":exportname="); e != std::string_view::npos) {
      exportname = rest.substr(e + 12);
      rest = rest.substr(0, e);
    }
    n.name = std::string(exportname);
    if (rest.substr(0, 5) == "unix:") {
      n.transport = "unix";
      n.socket = std::string(rest.substr(5));
    } else {
      n.transport = "tcp";
      size_t colon = rest.rfind(':');
      n.host = std::string(rest.substr(0, colon));
      if (colon != std::string_view::npos) n.port = std::string(rest.substr(colon + 1));
    }
  } else {
    size_t colon = rest.find(':');
    n.name = std::string(rest.substr(0, colon));
  }
  return n;
}

// Walks a json: pseudo-protocol object down to its protocol node. Accepts
// both the nested ({"file": {...}}) and the flattened ("file.driver") forms.
Json Unflatten(const Json& obj) {
  Json out = Json::MakeObject();
  for (const auto& [key, value] : obj.as_object()) {
    Json* node = &out;
    std::string_view k = key;
    size_t dot;
    while ((dot = k.find('.')) != std::string_view::npos) {
      std::string part(k.substr(0, dot));
      Json* existing = node->Find(part);
      node = (existing && existing->is_object()) ? existing : &node->Set(part, Json::MakeObject());
      k.remove_prefix(dot + 1);
    }
    node->Set(std::string(k), value.is_object() ? Unflatten(value) : value);
  }
  return out;
}

std::string JsonText(const Json* v) {
  if (!v) return {};
  if (v->is_string()) return v->as_string();
  if (v->is_number()) return fmt::format("{}", v->as_uint());
  return {};
}

Result<NetworkSource> ParseJsonSource(std::string_view raw) {
  Result<Json> parsed = Json::Parse(raw.substr(5));
  if (!parsed.ok()) {
    return Error(Code::kInvalidArgument, "backing string '{}' is not valid json: {}",
                 ShortToken(raw), parsed.status().message());
  }
  if (!parsed->is_object()) {
    return Error(Code::kInvalidArgument, "backing string '{}': json: must hold an object",
                 ShortToken(raw));
  }
  Json root = Unflatten(*parsed);
  const Json* node = &root;
  NetworkSource n;
  // Descend through format layers ({"driver":"qcow2","file":{...}}).
  for (int depth = 0; depth < 8; ++depth) {
    const Json* file = node->Find("file");
    std::string driver = JsonText(node->Find("driver"));
    if (file && file->is_object()) {
      if (n.format.empty() && !driver.empty()) n.format = driver;
      node = file;
      continue;
    }
    break;
  }
  n.driver = JsonText(node->Find("driver"));
  if (n.driver.empty()) {
    return Error(Code::kInvalidArgument, "backing string '{}': json: names no driver",
                 ShortToken(raw));
  }
  n.protocol = n.driver;
  if (n.driver == "file" || n.driver == "host_device") {
    n.file = JsonText(node->Find("filename"));
    n.protocol.clear();
    return n;
  }
  if (const Json* server = node->Find("server")) {
    const Json* s = server;
    if (server->is_array() && !server->as_array().empty()) s = &server->as_array()[0];
    n.transport = JsonText(s->Find("type"));
    if (n.transport == "inet") n.transport = "tcp";
    n.host = JsonText(s->Find("host"));
    n.port = JsonText(s->Find("port"));
    n.socket = JsonText(s->Find("path"));
  } else {
    n.host = JsonText(node->Find("host"));
    n.port = JsonText(node->Find("port"));
    n.socket = JsonText(node->Find("path"));
  }
  if (n.driver == "nbd") {
    n.name = JsonText(node->Find("export"));
  } else if (n.driver == "gluster") {
    n.name = JsonText(node->Find("volume")) + JsonText(node->Find("path"));
  } else if (n.driver == "iscsi") {
    n.name = JsonText(node->Find("target")) + "/" + JsonText(node->Find("lun"));
    if (n.host.empty()) n.host = JsonText(node->Find("portal"));
  } else if (n.driver == "rbd") {
    n.name = JsonText(node->Find("pool")) + "/" + JsonText(node->Find("image"));
  } else {
    n.name = JsonText(node->Find("url"));
  }
  return n;
}

}  // namespace

const char* BackingKindName(BackingKind kind) {
  switch (kind) {
    case BackingKind::kRelative: return "relative";
    case BackingKind::kAbsolute: return "absolute";
    case BackingKind::kJson: return "json";
    case BackingKind::kUri: return "uri";
    case BackingKind::kProtocol: return "protocol";
  }
  return "unknown";
}

std::string DirName(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

std::string BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

Result<BackingRef> ClassifyBacking(std::string_view raw, std::string_view recording_image_path) {
  if (raw.empty()) return Error(Code::kInvalidArgument, "empty backing string");
  if (raw.find('\0') != std::string_view::npos) {
    return Error(Code::kInvalidArgument, "backing string contains a NUL byte");
  }
  BackingRef ref;
  ref.raw = std::string(raw);
  if (raw.substr(0, 5) == "json:") {
    Result<NetworkSource> n = ParseJsonSource(raw);
    if (!n.ok()) return n.status();
    ref.kind = BackingKind::kJson;
    if (!n->file.empty()) {
      ref.resolved_path = n->file[0] == '/'
                              ? n->file
                              : DirName(recording_image_path) + "/" + n->file;
    }
    ref.network = std::move(*n);
    return ref;
  }
  if (std::string_view scheme = UriScheme(raw); !scheme.empty()) {
    Result<NetworkSource> n = ParseUri(raw, scheme);
    if (!n.ok()) return n.status();
    ref.kind = BackingKind::kUri;
    ref.network = std::move(*n);
    return ref;
  }
  if (size_t colon = raw.find(':'); colon != std::string_view::npos) {
    std::string_view proto = raw.substr(0, colon);
    if (proto.find('/') == std::string_view::npos && IsKnownProtocol(proto)) {
      ref.kind = BackingKind::kProtocol;
      ref.network = ParseProtocolForm(raw, proto);
      return ref;
    }
  }
  if (raw.front() == '/') {
    ref.kind = BackingKind::kAbsolute;
    ref.resolved_path = ref.raw;
  } else {
    ref.kind = BackingKind::kRelative;
    std::string dir = DirName(recording_image_path);
    ref.resolved_path = (dir == "/" ? "" : dir) + "/" + ref.raw;
  }
  return ref;
}

}  // namespace chainfs::core
