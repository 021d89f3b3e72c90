#include "core/write/volume_xml_parse.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <pugixml.hpp>

#include "core/util/escape.h"

namespace chainfs::core {
namespace {

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Parses an unsigned number in `base` (8 or 10), digits only.
Result<uint64_t> ParseUnsigned(std::string_view text, int base, std::string_view what) {
  text = Trim(text);
  if (text.empty()) return Error(Code::kInvalidArgument, "{} is empty", what);
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c >= '0' + base) {
      return Error(Code::kInvalidArgument, "{} '{}' is not a {} number", what, text,
                   base == 8 ? "octal" : "non-negative decimal");
    }
    uint64_t d = uint64_t(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / uint64_t(base)) {
      return Error(Code::kInvalidArgument, "{} '{}' is too large", what, text);
    }
    v = v * uint64_t(base) + d;
  }
  return v;
}

// Reads an element with an optional unit attribute, scaled to bytes.
Result<uint64_t> ParseScaled(const pugi::xml_node& node, std::string_view what) {
  Result<uint64_t> v = ParseUnsigned(node.child_value(), 10, what);
  if (!v.ok()) return v.status();
  Result<uint64_t> scaled = ScaleLibvirtUnit(*v, node.attribute("unit").value());
  if (!scaled.ok()) {
    return Error(Code::kInvalidArgument, "{}: {}", what, scaled.status().message());
  }
  return scaled;
}

// Reads a numeric owner or group; -1 means "not set", as in libvirt.
Result<std::optional<uint32_t>> ParseId(const pugi::xml_node& node, std::string_view what) {
  if (!node) return std::optional<uint32_t>();
  std::string_view text = Trim(node.child_value());
  if (text == "-1") return std::optional<uint32_t>();
  Result<uint64_t> v = ParseUnsigned(text, 10, what);
  if (!v.ok()) return v.status();
  if (*v >= std::numeric_limits<uint32_t>::max()) {
    return Error(Code::kInvalidArgument, "{} {} is out of range", what, *v);
  }
  return std::optional<uint32_t>(uint32_t(*v));
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool IsNameEnd(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '/' || c == '>';
}

// Where the document prefix `b` stops being a run of finished constructs:
// the start of its last unfinished markup construct (a tag, comment, CDATA
// section, processing instruction or DOCTYPE), else the start of its
// trailing text (b.size() when it ends right after a '>'). Sets `root` to
// the name of the first element tag (as far as it goes) and
// `root_complete` when that name is followed by anything.
size_t UnfinishedStart(std::string_view b, std::string* root, bool* root_complete) {
  size_t i = 0;
  size_t text_start = 0;
  bool root_seen = false;
  while (i < b.size()) {
    if (b[i] != '<') {
      ++i;
      continue;
    }
    const size_t start = i;
    std::string_view rest = b.substr(i);
    size_t end = std::string_view::npos;  // one past the construct's last byte
    auto find_after = [&](std::string_view closer, size_t from) {
      size_t at = b.find(closer, from);
      return at == std::string_view::npos ? at : at + closer.size();
    };
    if (StartsWith(rest, "<!--")) {
      end = find_after("-->", i + 4);
    } else if (StartsWith(rest, "<![CDATA[")) {
      end = find_after("]]>", i + 9);
    } else if (StartsWith(rest, "<?")) {
      end = find_after("?>", i + 2);
    } else if (rest.size() < 9 && (StartsWith("<!--", rest) || StartsWith("<![CDATA[", rest))) {
      return start;  // "<!-" or "<![CD": which construct is not known yet
    } else {
      // A tag or a DOCTYPE: up to the '>' outside quotes (and, for a
      // DOCTYPE, outside its internal subset).
      const bool doctype = StartsWith(rest, "<!");
      char quote = 0;
      int depth = 0;
      for (size_t k = i + 1; k < b.size(); ++k) {
        const char c = b[k];
        if (quote) {
          if (c == quote) quote = 0;
        } else if (c == '"' || c == '\'') {
          quote = c;
        } else if (doctype && c == '[') {
          ++depth;
        } else if (doctype && c == ']') {
          --depth;
        } else if (c == '>' && depth <= 0) {
          end = k + 1;
          break;
        }
      }
      if (!doctype && !root_seen && rest.size() > 1 && rest[1] != '/') {
        root_seen = true;
        size_t k = i + 1;
        while (k < b.size() && !IsNameEnd(b[k])) ++k;
        *root = std::string(b.substr(i + 1, k - i - 1));
        *root_complete = k < b.size();
      }
    }
    if (end == std::string_view::npos) return start;
    i = end;
    text_start = end;
  }
  return text_start;
}

}  // namespace

XmlPrefix ClassifyVolumeXmlPrefix(std::string_view bytes) {
  std::string_view b = bytes;
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (b.size() < kBom.size() && StartsWith(kBom, b)) {
    return {XmlPrefixState::kIncomplete, "no document yet"};
  }
  if (StartsWith(b, kBom)) b.remove_prefix(kBom.size());
  size_t first = b.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {XmlPrefixState::kIncomplete, "no document yet"};
  if (b[first] != '<') {
    return {XmlPrefixState::kInvalid,
            fmt::format("not a volume XML document: it starts with '{}', not '<'",
                        ShortToken(b.substr(first), 16))};
  }
  if (bytes.size() > kMaxVolumeXmlBytes) {
    return {XmlPrefixState::kInvalid,
            fmt::format("a volume XML document is at most {} bytes; this one has more",
                        kMaxVolumeXmlBytes)};
  }
  std::string root;
  bool root_complete = false;
  const size_t unfinished = UnfinishedStart(bytes, &root, &root_complete);
  if (!root.empty() || root_complete) {
    if (root_complete ? root != "volume" : !StartsWith("volume", root)) {
      return {XmlPrefixState::kInvalid,
              fmt::format("the root element is <{}{}>, not <volume>", ShortToken(root, 32),
                          root_complete ? "" : "...")};
    }
  }
  pugi::xml_document doc;
  pugi::xml_parse_result r = doc.load_buffer(bytes.data(), bytes.size(), pugi::parse_default);
  if (r) {
    if (doc.document_element()) return {XmlPrefixState::kComplete, ""};
    return {XmlPrefixState::kIncomplete, "no root element yet"};
  }
  const size_t offset = r.offset < 0 ? 0 : size_t(r.offset);
  std::string reason = fmt::format("{} at byte {} (near '{}')", r.description(), offset,
                                   ShortToken(bytes.substr(std::min(offset, bytes.size())), 16));
  // pugixml reports an error caused by the end of the bytes inside the last
  // unfinished construct (at most one byte before it, for the '>' that
  // closes the last tag); anything earlier is in bytes already received.
  if (offset + 1 >= unfinished) return {XmlPrefixState::kIncomplete, std::move(reason)};
  return {XmlPrefixState::kInvalid, "bad volume XML: " + reason};
}

Result<uint64_t> ScaleLibvirtUnit(uint64_t value, std::string_view unit) {
  uint64_t scale = 1;
  if (unit.empty() || IEquals(unit, "b") || IEquals(unit, "byte") || IEquals(unit, "bytes")) {
    scale = 1;
  } else {
    uint64_t base;
    std::string_view rest = unit.substr(1);
    if (rest.empty() || IEquals(rest, "iB")) {
      base = 1024;
    } else if (IEquals(rest, "B")) {
      base = 1000;
    } else {
      return Error(Code::kInvalidArgument, "unknown unit '{}'", unit);
    }
    int power;
    switch (std::tolower(static_cast<unsigned char>(unit[0]))) {
      case 'k':
        power = 1;
        break;
      case 'm':
        power = 2;
        break;
      case 'g':
        power = 3;
        break;
      case 't':
        power = 4;
        break;
      case 'p':
        power = 5;
        break;
      case 'e':
        power = 6;
        break;
      default:
        return Error(Code::kInvalidArgument, "unknown unit '{}'", unit);
    }
    for (int i = 0; i < power; ++i) scale *= base;
  }
  if (value != 0 && scale > std::numeric_limits<uint64_t>::max() / value) {
    return Error(Code::kInvalidArgument, "{} {} overflows 64 bits", value, unit);
  }
  return value * scale;
}

Result<VolumeSpec> ParseVolumeXml(std::string_view xml) {
  pugi::xml_document doc;
  pugi::xml_parse_result pr = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default);
  if (!pr) {
    return Error(Code::kInvalidArgument, "bad volume XML: {} at offset {}", pr.description(),
                 pr.offset);
  }
  pugi::xml_node vol = doc.document_element();
  if (std::string_view(vol.name()) != "volume") {
    return Error(Code::kInvalidArgument, "bad volume XML: root element is <{}>, not <volume>",
                 ShortToken(vol.name(), 32));
  }
  if (pugi::xml_attribute type = vol.attribute("type");
      type && std::string_view(type.value()) != "file") {
    return Error(Code::kInvalidArgument, "volume type '{}' is not supported (only 'file')",
                 type.value());
  }

  VolumeSpec spec;
  pugi::xml_node name = vol.child("name");
  if (!name) return Error(Code::kInvalidArgument, "volume XML has no <name>");
  spec.name = std::string(Trim(name.child_value()));
  if (spec.name.empty() || spec.name == "." || spec.name == "..") {
    return Error(Code::kInvalidArgument, "volume name '{}' is not a file name", spec.name);
  }
  for (char c : spec.name) {
    if (c == '/' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Error(Code::kInvalidArgument,
                   "volume name must not contain '/' or control characters");
    }
  }

  if (pugi::xml_node cap = vol.child("capacity")) {
    Result<uint64_t> v = ParseScaled(cap, "capacity");
    if (!v.ok()) return v.status();
    spec.capacity = *v;
  }
  if (pugi::xml_node alloc = vol.child("allocation")) {
    Result<uint64_t> v = ParseScaled(alloc, "allocation");  // validated, not used
    if (!v.ok()) return v.status();
  }

  pugi::xml_node target = vol.child("target");
  if (pugi::xml_node fmt = target.child("format")) {
    spec.format = fmt.attribute("type").value();
    if (spec.format != "raw" && spec.format != "qcow2") {
      return Error(Code::kInvalidArgument, "volume format '{}' is not supported (raw or qcow2)",
                   spec.format);
    }
  }
  const bool qcow2 = spec.format == "qcow2";
  if (pugi::xml_node compat = target.child("compat")) {
    std::string c(Trim(compat.child_value()));
    if (c != "0.10" && c != "1.1") {
      return Error(Code::kInvalidArgument, "compat '{}' is not 0.10 or 1.1", c);
    }
    if (!qcow2) return Error(Code::kInvalidArgument, "<compat> applies to qcow2 volumes only");
    spec.compat = c;
  }
  if (pugi::xml_node cs = target.child("clusterSize")) {
    if (!qcow2) return Error(Code::kInvalidArgument, "<clusterSize> applies to qcow2 volumes only");
    Result<uint64_t> v = ParseScaled(cs, "clusterSize");
    if (!v.ok()) return v.status();
    if (*v < 512 || *v > (2u << 20) || (*v & (*v - 1)) != 0) {
      return Error(Code::kInvalidArgument,
                   "clusterSize {} must be a power of two between 512 and 2M", *v);
    }
    spec.cluster_size = *v;
  }
  if (pugi::xml_node features = target.child("features")) {
    for (pugi::xml_node f : features.children()) {
      if (f.type() != pugi::node_element) continue;
      std::string_view n = f.name();
      if (n == "lazy_refcounts") {
        spec.lazy_refcounts = true;
      } else if (n == "extended_l2") {
        spec.extended_l2 = true;
      } else {
        return Error(Code::kInvalidArgument, "unknown volume feature <{}>", n);
      }
    }
    if ((spec.lazy_refcounts || spec.extended_l2) && !qcow2) {
      return Error(Code::kInvalidArgument, "volume features apply to qcow2 volumes only");
    }
    if ((spec.lazy_refcounts || spec.extended_l2) && spec.compat == "0.10") {
      return Error(Code::kInvalidArgument, "volume features need compat 1.1");
    }
  }
  if (pugi::xml_node perms = target.child("permissions")) {
    if (pugi::xml_node mode = perms.child("mode")) {
      Result<uint64_t> m = ParseUnsigned(mode.child_value(), 8, "permissions mode");
      if (!m.ok()) return m.status();
      if (*m > 07777) {
        return Error(Code::kInvalidArgument, "permissions mode {:o} is out of range", *m);
      }
      spec.mode = uint32_t(*m);
    }
    Result<std::optional<uint32_t>> owner = ParseId(perms.child("owner"), "owner");
    if (!owner.ok()) return owner.status();
    spec.owner = *owner;
    Result<std::optional<uint32_t>> group = ParseId(perms.child("group"), "group");
    if (!group.ok()) return group.status();
    spec.group = *group;
  }

  if (pugi::xml_node bs = vol.child("backingStore")) {
    std::string path(Trim(bs.child("path").child_value()));
    if (path.empty()) return Error(Code::kInvalidArgument, "<backingStore> has no <path>");
    if (!qcow2) return Error(Code::kInvalidArgument, "a raw volume cannot have a backingStore");
    spec.backing_path = path;
    if (pugi::xml_node fmt = bs.child("format")) {
      std::string f = fmt.attribute("type").value();
      if (f.empty()) return Error(Code::kInvalidArgument, "<backingStore><format> has no type");
      spec.backing_format = f;
    }
  }
  if (!spec.capacity && !spec.backing_path) {
    return Error(Code::kInvalidArgument, "volume XML has no <capacity>");
  }
  return spec;
}

}  // namespace chainfs::core
