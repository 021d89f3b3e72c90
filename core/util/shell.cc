#include "core/util/shell.h"

#include <cctype>

namespace chainfs::core {

std::string ShellQuote(std::string_view s) {
  bool safe = !s.empty();
  for (unsigned char c : s) {
    if (!std::isalnum(c) && std::string_view("-_./:=,+@%").find(char(c)) == std::string_view::npos) {
      safe = false;
      break;
    }
  }
  if (safe) return std::string(s);
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out += "'";
  return out;
}

}  // namespace chainfs::core
