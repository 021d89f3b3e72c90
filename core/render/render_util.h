// Helpers shared by the renderers (private to core/render).
#pragma once

#include <pugixml.hpp>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/chain/chain.h"

namespace chainfs::core::render_internal {

// Formats a byte count as qemu-img does ("1 GiB", "1.5 MiB", "196 KiB",
// "0 B"): the largest binary unit whose value stays below 1000, printed
// with up to 3 significant digits.
std::string FormatSize(uint64_t bytes);

// Prints a document as libvirt does: 2-space indent, single-quoted
// attributes, no XML declaration, and empty elements as "<x/>" (pugixml
// writes "<x />"). First passes every name, attribute value and text of
// `doc` through XmlSafe, so the result is well-formed XML 1.0 whatever bytes
// an image (or a pool definition) put into it.
std::string SaveXml(pugi::xml_document& doc);

// Returns the path the backing of element `i` resolves to, as qemu's
// "full-backing-filename": element i+1's path when it exists, else the
// classified reference's resolved path, else the raw string. "" when the
// element records no backing.
std::string FullBackingFilename(const Chain& chain, size_t i);

// Returns true if libvirt's storage format enum knows `format` (what
// <format type=...> and <driver type=...> accept).
bool IsLibvirtFormat(std::string_view format);

// Returns the format shown for an element: the format in use, else the
// parsed metadata's, else "".
std::string ElementFormat(const ChainElement& element);

}  // namespace chainfs::core::render_internal
