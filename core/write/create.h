// Creating overlays: the operation behind `ln -s BACKING POOL/NEW` in the
// mount and `chainctl create -b BACKING [-F FMT] NEW` (DESIGN section 2).
//
// Thread-safety: safe to call concurrently if the inspector and the trust
// context are (ImageInspector is).
#pragma once

#include <optional>
#include <string>

#include "core/chain/inspector.h"
#include "core/chain/trust.h"
#include "core/format/qcow2/writer.h"
#include "core/status.h"

namespace chainfs::core {

// Creates `new_path` as a qcow2 v3 overlay (64 KiB clusters) of the image at
// `backing_resolved_path`, recording `backing_as_written` exactly as given
// (a relative string stays relative) and always a backing format: the given
// `backing_format`, else the one TrustedBackingFormat allows. The capacity is
// the backing's virtual size. Errors: kExists if `new_path` exists, kNotFound
// if the backing is missing, kPermissionDenied if its format cannot be
// trusted, kInvalidArgument for an unknown format name or a bad backing
// string, kCorrupt if the backing's header cannot be read in that format,
// LoopError (ELOOP) when the backing's chain ends at a missing file that
// `new_path` would be (CheckNoLoop); plus CreateQcow2's errors. Nothing is
// left behind on any error.
Status CreateOverlay(ImageInspector& inspector, const std::string& new_path,
                     const std::string& backing_as_written,
                     const std::string& backing_resolved_path,
                     std::optional<std::string> backing_format, const TrustContext& trust);

// Same, with the owner and mode of the new file given.
Status CreateOverlay(ImageInspector& inspector, const std::string& new_path,
                     const std::string& backing_as_written,
                     const std::string& backing_resolved_path,
                     std::optional<std::string> backing_format, const TrustContext& trust,
                     const NewFileOptions& file);

}  // namespace chainfs::core
