// Quoting for commands that reports print for a user to paste into a shell.
#pragma once

#include <string>
#include <string_view>

namespace chainfs::core {

// Quotes `s` for a POSIX shell: unchanged when it holds only safe characters
// (letters, digits, and -_./:=,+@%), else in single quotes with ' as '\''.
std::string ShellQuote(std::string_view s);

}  // namespace chainfs::core
