// The trust rule for writing a backing format that was not read from
// metadata (DESIGN section 3, "Trust"): used by `ln -s`, retargets and
// `chainctl create` without -F.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"

namespace chainfs::core {

struct TrustContext {
  // Returns the format some other known image records for the file at this
  // absolute path, if any (scans the mounted pools).
  std::function<std::optional<std::string>(const std::string& path)> recorded_format;
  // Returns true if the absolute path is a volume of a mounted pool.
  std::function<bool(const std::string& path)> in_pool;
};

// Decides the backing format to record for `backing_path`, in the order of
// DESIGN section 3: a format another image records for it; the probed format
// if raw or the probed image has no backing; the probed format if the probed
// image's whole chain is declared in metadata and every element is a pool
// volume. Otherwise kPermissionDenied with a message saying how to declare the
// format explicitly. kNotFound if the file is missing.
Result<std::string> TrustedBackingFormat(ImageInspector& inspector, const std::string& backing_path,
                                         const TrustContext& context);

}  // namespace chainfs::core
