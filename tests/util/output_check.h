// Checks that a document chainfs printed is what it claims to be: JSON that
// strict parsers accept, XML that libvirt's schemas accept.
#pragma once

#include <string>

namespace chainfs::testutil {

// libvirt's RelaxNG schemas (package libvirt0).
inline constexpr const char* kLibvirtSchemas = "/usr/share/libvirt/schemas/";

// Returns "" if `json` parses with jq and with Python's json module, else
// which parser refused it and why.
std::string StrictJsonComplaint(const std::string& json);

// Returns "" if `xml` is well-formed and valid against `schema` (a file name
// in kLibvirtSchemas, e.g. "storagevol.rng"), else the xmllint complaint.
std::string XmlComplaint(const std::string& xml, const std::string& schema);

// Wraps a <disk> element in the smallest domain libvirt's domain.rng takes.
std::string WrapDisk(const std::string& disk);

}  // namespace chainfs::testutil
