// Escaping of strings read from images (backing strings, format names,
// descriptor fields) for the one-line texts they are printed into: problems,
// chain listings, the event log. A hostile image must never be able to forge
// a line or a control sequence in what chainfs prints.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace chainfs::core {

// Returns `bytes` with every control character (C0, DEL), every backslash
// and every byte that is not part of valid UTF-8 escaped C-style: "\n",
// "\r", "\t", "\\", otherwise "\xNN". Valid printable UTF-8 is kept as is.
// Thread-safe (pure).
std::string EscapeOneLine(std::string_view bytes);

// Returns EscapeOneLine of at most the first `max_bytes` bytes of `bytes`,
// followed by "..." when something was cut: what a problem message may echo
// of bytes read from a file. Never cuts inside a UTF-8 sequence.
std::string ShortToken(std::string_view bytes, size_t max_bytes = 32);

// Returns the length of the valid UTF-8 sequence starting at bytes[i], or 0
// if none starts there (overlong forms, surrogates and code points above
// U+10FFFF are invalid, as in RFC 3629).
size_t Utf8SequenceLength(std::string_view bytes, size_t i);

}  // namespace chainfs::core
