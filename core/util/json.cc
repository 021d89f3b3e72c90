#include "core/util/json.h"

#include <cmath>
#include <cstdlib>

namespace chainfs::core {

bool Json::is_number() const {
  return std::holds_alternative<int64_t>(v_) || std::holds_alternative<uint64_t>(v_) ||
         std::holds_alternative<double>(v_);
}

int64_t Json::as_int() const {
  if (auto* i = std::get_if<int64_t>(&v_)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v_)) return int64_t(*u);
  return int64_t(std::get<double>(v_));
}

uint64_t Json::as_uint() const {
  if (auto* u = std::get_if<uint64_t>(&v_)) return *u;
  if (auto* i = std::get_if<int64_t>(&v_)) return uint64_t(*i);
  return uint64_t(std::get<double>(v_));
}

double Json::as_double() const {
  if (auto* d = std::get_if<double>(&v_)) return *d;
  if (auto* u = std::get_if<uint64_t>(&v_)) return double(*u);
  return double(std::get<int64_t>(v_));
}

Json& Json::Set(std::string key, Json value) {
  Object& o = as_object();
  for (auto& [k, v] : o) {
    if (k == key) {
      v = std::move(value);
      return v;
    }
  }
  o.emplace_back(std::move(key), std::move(value));
  return o.back().second;
}

const Json* Json::Find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : as_object()) {
    if (k == key) return &v;
  }
  return nullptr;
}

bool Json::operator==(const Json& o) const {
  if (is_number() && o.is_number()) {
    bool self_float = std::holds_alternative<double>(v_);
    bool other_float = std::holds_alternative<double>(o.v_);
    if (self_float || other_float) return as_double() == o.as_double();
    bool self_neg = std::holds_alternative<int64_t>(v_) && std::get<int64_t>(v_) < 0;
    bool other_neg = std::holds_alternative<int64_t>(o.v_) && std::get<int64_t>(o.v_) < 0;
    if (self_neg != other_neg) return false;
    return self_neg ? as_int() == o.as_int() : as_uint() == o.as_uint();
  }
  return v_ == o.v_;
}

namespace {

// Decodes one character of `s` at `i` as qemu's mod_utf8_codepoint does:
// returns the code point, or -1 for an invalid sequence (a stray or missing
// continuation byte, 0xFE/0xFF, overlong forms other than C0 80, surrogates,
// noncharacters, beyond U+10FFFF), and advances `i` past the bytes it
// consumed (a broken sequence up to the first byte that does not continue it).
int32_t QemuCodepoint(std::string_view s, size_t& i) {
  static constexpr int32_t kMinCp[5] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
  unsigned byte = static_cast<unsigned char>(s[i++]);
  if (byte < 0x80) return int32_t(byte);
  if (byte >= 0xFE || (byte & 0x40) == 0) return -1;
  unsigned len = 0;
  unsigned mask = 0x80;
  for (; byte & mask; mask >>= 1) ++len;
  int32_t cp = int32_t(byte & (mask - 1));
  for (unsigned k = 1; k < len; ++k) {
    if (i >= s.size() || (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (static_cast<unsigned char>(s[i++]) & 0x3F);
  }
  if (cp > 0x10FFFF) return -1;
  if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return -1;
  if (cp >= 0xD800 && cp <= 0xDFFF) return -1;
  if (cp < kMinCp[len - 2] && !(cp == 0 && len == 2)) return -1;
  return cp;
}

}  // namespace

std::string JsonQuote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    int32_t cp = QemuCodepoint(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (cp < 0) cp = 0xFFFD;
        if (cp > 0xFFFF) {
          out += fmt::format("\\u{:04X}\\u{:04X}", 0xD800 + ((cp - 0x10000) >> 10),
                             0xDC00 + ((cp - 0x10000) & 0x3FF));
        } else if (cp < 0x20 || cp >= 0x7F) {
          out += fmt::format("\\u{:04X}", cp);
        } else {
          out.push_back(char(cp));
        }
    }
  }
  out.push_back('"');
  return out;
}

void Json::DumpTo(std::string& out, int indent, int level) const {
  auto newline = [&](int lvl) {
    if (indent > 0) {
      out.push_back('\n');
      out.append(size_t(indent * lvl), ' ');
    }
  };
  struct Visitor {
    const Json& self;
    std::string& out;
    int indent;
    int level;
    decltype(newline)& nl;
    void operator()(std::monostate) { out += "null"; }
    void operator()(bool b) { out += b ? "true" : "false"; }
    void operator()(int64_t i) { out += fmt::format("{}", i); }
    void operator()(uint64_t u) { out += fmt::format("{}", u); }
    void operator()(double d) {
      if (!std::isfinite(d)) {
        out += "null";
      } else {
        out += fmt::format("{}", d);
      }
    }
    void operator()(const std::string& s) { out += JsonQuote(s); }
    void operator()(const Array& a) {
      if (a.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out.push_back(',');
        nl(level + 1);
        a[i].DumpTo(out, indent, level + 1);
      }
      nl(level);
      out.push_back(']');
    }
    void operator()(const Object& o) {
      if (o.empty()) {
        out += "{}";
        return;
      }
      out.push_back('{');
      for (size_t i = 0; i < o.size(); ++i) {
        if (i) out.push_back(',');
        nl(level + 1);
        out += JsonQuote(o[i].first);
        out += indent > 0 ? ": " : ":";
        o[i].second.DumpTo(out, indent, level + 1);
      }
      nl(level);
      out.push_back('}');
    }
  };
  std::visit(Visitor{*this, out, indent, level, newline}, v_);
}

std::string Json::Dump(int indent) const {
  std::string out;
  DumpTo(out, indent, 0);
  return out;
}

namespace {

constexpr size_t kMaxJsonInput = 1 << 20;
constexpr int kMaxJsonDepth = 64;

class Parser {
 public:
  explicit Parser(std::string_view t) : t_(t) {}

  Result<Json> ParseDocument() {
    Result<Json> v = ParseValue(0);
    if (!v.ok()) return v;
    SkipWs();
    if (pos_ != t_.size()) return Fail("trailing characters");
    return v;
  }

 private:
  Status Fail(std::string_view what) {
    return Error(Code::kInvalidArgument, "JSON: {} at offset {}", what, pos_);
  }
  void SkipWs() {
    while (pos_ < t_.size() &&
           (t_[pos_] == ' ' || t_[pos_] == '\t' || t_[pos_] == '\n' || t_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(std::string_view lit) {
    if (t_.substr(pos_, lit.size()) == lit) {
      pos_ += lit.size();
      return true;
    }
    return false;
  }

  Result<Json> ParseValue(int depth) {
    if (depth >= kMaxJsonDepth) return Fail("nesting too deep");
    SkipWs();
    if (pos_ >= t_.size()) return Fail("unexpected end");
    char c = t_[pos_];
    if (c == '{') return ParseObject(depth);
    if (c == '[') return ParseArray(depth);
    if (c == '"') {
      Result<std::string> s = ParseString();
      if (!s.ok()) return s.status();
      return Json(std::move(*s));
    }
    if (Consume("true")) return Json(true);
    if (Consume("false")) return Json(false);
    if (Consume("null")) return Json(nullptr);
    return ParseNumber();
  }

  Result<Json> ParseObject(int depth) {
    ++pos_;
    Json obj = Json::MakeObject();
    SkipWs();
    if (pos_ < t_.size() && t_[pos_] == '}') {
      ++pos_;
      return obj;
    }
    for (;;) {
      SkipWs();
      if (pos_ >= t_.size() || t_[pos_] != '"') return Fail("expected a string key");
      Result<std::string> key = ParseString();
      if (!key.ok()) return key.status();
      SkipWs();
      if (pos_ >= t_.size() || t_[pos_] != ':') return Fail("expected ':'");
      ++pos_;
      Result<Json> v = ParseValue(depth + 1);
      if (!v.ok()) return v;
      obj.Set(std::move(*key), std::move(*v));
      SkipWs();
      if (pos_ < t_.size() && t_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < t_.size() && t_[pos_] == '}') {
        ++pos_;
        return obj;
      }
      return Fail("expected ',' or '}'");
    }
  }

  Result<Json> ParseArray(int depth) {
    ++pos_;
    Json arr = Json::MakeArray();
    SkipWs();
    if (pos_ < t_.size() && t_[pos_] == ']') {
      ++pos_;
      return arr;
    }
    for (;;) {
      Result<Json> v = ParseValue(depth + 1);
      if (!v.ok()) return v;
      arr.Push(std::move(*v));
      SkipWs();
      if (pos_ < t_.size() && t_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < t_.size() && t_[pos_] == ']') {
        ++pos_;
        return arr;
      }
      return Fail("expected ',' or ']'");
    }
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(char(cp));
    } else if (cp < 0x800) {
      out.push_back(char(0xc0 | (cp >> 6)));
      out.push_back(char(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out.push_back(char(0xe0 | (cp >> 12)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(char(0x80 | (cp & 0x3f)));
    } else {
      out.push_back(char(0xf0 | (cp >> 18)));
      out.push_back(char(0x80 | ((cp >> 12) & 0x3f)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(char(0x80 | (cp & 0x3f)));
    }
  }

  Result<uint32_t> ParseHex4() {
    if (pos_ + 4 > t_.size()) return Fail("short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = t_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= uint32_t(h - '0');
      else if (h >= 'a' && h <= 'f') v |= uint32_t(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= uint32_t(h - 'A' + 10);
      else return Fail("bad hex digit");
    }
    return v;
  }

  Result<std::string> ParseString() {
    ++pos_;  // opening quote
    std::string out;
    while (pos_ < t_.size()) {
      char c = t_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("control character in string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= t_.size()) break;
      char e = t_[pos_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          Result<uint32_t> cp = ParseHex4();
          if (!cp.ok()) return cp.status();
          uint32_t v = *cp;
          if (v >= 0xd800 && v < 0xdc00 && Consume("\\u")) {
            Result<uint32_t> lo = ParseHex4();
            if (!lo.ok()) return lo.status();
            if (*lo >= 0xdc00 && *lo < 0xe000) v = 0x10000 + ((v - 0xd800) << 10) + (*lo - 0xdc00);
          }
          AppendUtf8(out, v);
          break;
        }
        default: return Fail("bad escape");
      }
    }
    return Fail("unterminated string");
  }

  Result<Json> ParseNumber() {
    size_t start = pos_;
    if (pos_ < t_.size() && t_[pos_] == '-') ++pos_;
    bool is_float = false;
    while (pos_ < t_.size()) {
      char c = t_[pos_];
      if (c >= '0' && c <= '9') {
        ++pos_;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        is_float = true;
        ++pos_;
      } else {
        break;
      }
    }
    if (pos_ == start || (pos_ == start + 1 && t_[start] == '-')) return Fail("unexpected character");
    std::string num(t_.substr(start, pos_ - start));
    errno = 0;
    char* end = nullptr;
    if (!is_float) {
      if (num[0] == '-') {
        long long v = std::strtoll(num.c_str(), &end, 10);
        if (errno == 0 && end && *end == '\0') return Json(int64_t(v));
      } else {
        unsigned long long v = std::strtoull(num.c_str(), &end, 10);
        if (errno == 0 && end && *end == '\0') return Json(uint64_t(v));
      }
    }
    errno = 0;
    double d = std::strtod(num.c_str(), &end);
    if (!end || *end != '\0') return Fail("bad number");
    return Json(d);
  }

  std::string_view t_;
  size_t pos_ = 0;
};

}  // namespace

Result<Json> Json::Parse(std::string_view text) {
  if (text.size() > kMaxJsonInput) {
    return Error(Code::kInvalidArgument, "JSON: input of {} bytes is larger than 1 MiB", text.size());
  }
  return Parser(text).ParseDocument();
}

}  // namespace chainfs::core
