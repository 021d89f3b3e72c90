// Escaping of strings read from images (backing strings, format names,
// descriptor fields) for the outputs they are printed into: one-line texts
// (problems, chain listings, info, the event log), one-value files, XML
// documents. A hostile image must never be able to forge a line or a control
// sequence in what chainfs prints, nor make a document ill-formed. JSON has
// its own quoting, qemu's (JsonQuote in core/util/json.h).
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

// Returns true if EscapeOneLine would change more than backslashes: `bytes`
// holds a control character (C0, DEL, C1) or is not valid UTF-8.
bool NeedsEscape(std::string_view bytes);

// Returns `bytes` unchanged when !NeedsEscape(bytes), else EscapeOneLine:
// for texts that may already hold escaped tokens (messages built with
// ShortToken), which must stay one line without their backslashes doubled.
std::string OneLine(std::string_view bytes);

// Returns the value of a one-value file ("backing", "backing_format",
// "path"): the bytes exactly as recorded when they hold no control character
// (C0, DEL, C1), so scripts get them unchanged, invalid UTF-8 included (a
// Latin-1 file name is a working backing file); else EscapeOneLine(bytes),
// so that the file still holds one line.
std::string OneValue(std::string_view bytes);

// Returns `bytes` as XML 1.0 character data: valid UTF-8 in which every
// invalid byte, every control character (C0 including TAB, LF and CR, DEL,
// C1) and U+FFFE/U+FFFF is replaced by U+FFFD. XML 1.0 cannot carry most C0
// characters at all, and libvirt's schemas (patterns built on '.') refuse
// LF and CR in paths and names; the replacement keeps every document
// well-formed and valid. Thread-safe (pure).
std::string XmlSafe(std::string_view bytes);

// Returns the length of the valid UTF-8 sequence starting at bytes[i], or 0
// if none starts there (overlong forms, surrogates and code points above
// U+10FFFF are invalid, as in RFC 3629).
size_t Utf8SequenceLength(std::string_view bytes, size_t i);

}  // namespace chainfs::core
