// Json: a small JSON value with insertion-ordered objects, a writer that
// indents like qemu-img's --output=json, and a bounded parser (for
// `json:{...}` backing strings and for tests).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/status.h"

namespace chainfs::core {

// Holds null, bool, integer, double, string, array or object. Object keys
// keep their insertion order. A value type; not thread-safe to mutate.
class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool b) : v_(b) {}
  Json(int i) : v_(int64_t(i)) {}
  Json(int64_t i) : v_(i) {}
  Json(uint64_t u) : v_(u) {}
  Json(uint32_t u) : v_(uint64_t(u)) {}
  Json(double d) : v_(d) {}
  Json(const char* s) : v_(std::string(s)) {}
  Json(std::string s) : v_(std::move(s)) {}
  Json(std::string_view s) : v_(std::string(s)) {}
  Json(Array a) : v_(std::move(a)) {}
  Json(Object o) : v_(std::move(o)) {}

  static Json MakeObject() { return Json(Object{}); }
  static Json MakeArray() { return Json(Array{}); }

  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_number() const;
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  bool is_object() const { return std::holds_alternative<Object>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  // Returns the number as int64/uint64/double (converting as needed).
  int64_t as_int() const;
  uint64_t as_uint() const;
  double as_double() const;
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const Array& as_array() const { return std::get<Array>(v_); }
  Array& as_array() { return std::get<Array>(v_); }
  const Object& as_object() const { return std::get<Object>(v_); }
  Object& as_object() { return std::get<Object>(v_); }

  // Sets key (replacing an existing one, keeping its position). Object only.
  Json& Set(std::string key, Json value);
  // Appends to an array.
  void Push(Json value) { as_array().push_back(std::move(value)); }
  // Returns the member, or nullptr if absent or not an object.
  const Json* Find(std::string_view key) const;
  Json* Find(std::string_view key) {
    return const_cast<Json*>(static_cast<const Json*>(this)->Find(key));
  }

  // Serializes; indent > 0 pretty-prints with that many spaces per level.
  std::string Dump(int indent = 0) const;

  // Parses text; kInvalidArgument with position on error. Depth is capped
  // at 64 and input size at 1 MiB, so hostile input cannot exhaust memory.
  static Result<Json> Parse(std::string_view text);

  bool operator==(const Json& o) const;

 private:
  void DumpTo(std::string& out, int indent, int level) const;
  std::variant<std::monostate, bool, int64_t, uint64_t, double, std::string, Array, Object> v_;
};

// Escapes bytes as a JSON string literal, quotes included, exactly as qemu's
// JSON writer does (so info.json matches qemu-img byte for byte): ASCII
// control characters, DEL and every non-ASCII character as \uXXXX (upper
// case; surrogate pairs beyond the BMP), invalid UTF-8 as \uFFFD. The result
// is always strict JSON, whatever the bytes.
std::string JsonQuote(std::string_view s);

}  // namespace chainfs::core
