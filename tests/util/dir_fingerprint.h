// Fingerprints of every file in a folder, for the tests that prove a refused
// operation changed nothing on disk.
#pragma once

#include <map>
#include <string>

namespace chainfs::testutil {

// Returns name -> "size:FNV-1a of the bytes:mode" for every entry of `dir`
// (not recursive; symlinks are not followed for the mode, their targets are
// read). Empty if the folder cannot be read.
std::map<std::string, std::string> DirectoryFingerprint(const std::string& dir);

}  // namespace chainfs::testutil
