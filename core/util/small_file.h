// Reading the small definition files chainfs loads (pool and domain XML).
#pragma once

#include <cstddef>
#include <string>

#include "core/status.h"

namespace chainfs::core {

// Reads a regular file of at most `max_bytes`. kInvalidArgument when it is
// not a regular file or is larger; the errno's status when it cannot be
// opened or read. Never blocks on a FIFO (O_NONBLOCK, then the type check).
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes);

}  // namespace chainfs::core
