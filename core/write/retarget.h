// Metadata-only retargets: `echo PATH > VOL/backing` (= qemu-img rebase -u)
// and `echo FMT > VOL/backing_format` in the mount, `chainctl rebase -u`.
// Callers strip the trailing newline `echo` adds.
//
// Thread-safety: safe to call concurrently if the inspector and the trust
// context are; two updates of one image are serialised by its OFD lock.
#pragma once

#include <optional>
#include <string>

#include "core/chain/inspector.h"
#include "core/chain/trust.h"
#include "core/status.h"

namespace chainfs::core {

// Points the qcow2 image at `path` (absolute) to `new_backing`, recorded
// exactly as given; a relative string is resolved against the image's
// directory to check that the target exists. The backing format stays the
// recorded one while the new target probes as that format; when none is
// recorded, or the target probes as another format, it is determined with
// TrustedBackingFormat (kPermissionDenied if that refuses, the message
// saying how to declare it, phrased by Suggest). A network target keeps the
// recorded format (it cannot be probed). Errors: kInvalidArgument for an
// empty string ("use rebase") or a bad one, kNotFound if the target is
// missing, kBusy if the image is in use, kPermissionDenied if no format can
// be trusted, kUnsupported if the image is not qcow2 or the string is a
// network source without a recorded format, LoopError (ELOOP) if the new
// chain would reach the image again (CheckNoLoop); RewriteBacking's errors
// otherwise. Nothing changes on disk on any error.
Status Retarget(ImageInspector& inspector, const std::string& path, const std::string& new_backing,
                const TrustContext& trust);

// Same, recording `backing_format` instead of keeping or determining one
// (`chainctl rebase -u -F FMT`); kInvalidArgument for an unknown format.
// Network backing strings are accepted here, since the format is declared;
// the loop check walks the new chain with the declared format.
Status Retarget(ImageInspector& inspector, const std::string& path, const std::string& new_backing,
                const std::string& backing_format, const TrustContext& trust);

// Records `format` as the backing format of the qcow2 image at `path`,
// keeping its backing string. kInvalidArgument for a name that is not a
// known format, kUnsupported for an image without a backing string (there
// is nothing the format would describe) or one that is not qcow2, kBusy if
// in use.
Status SetBackingFormat(const std::string& path, const std::string& format);

}  // namespace chainfs::core
