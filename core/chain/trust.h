// The trust rule for writing a backing format that was not read from
// metadata (DESIGN section 3, "Trust"): used by `ln -s`, retargets and
// `chainctl create` without -F. Also how a refusal of a write phrases its
// fix, since each front end (chainctl, the mount) has its own terms.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/chain/inspector.h"
#include "core/chain/resolver.h"

namespace chainfs::core {

// What a refused write suggests doing instead.
enum class Suggestion {
  kDeclareFormatForCreate,    // create the overlay with an explicit backing format
  kDeclareFormatForRetarget,  // retarget (metadata only) with an explicit backing format
  kDeclareFormatForRebase,    // rebase (safe) with an explicit backing format
  kRetargetInstead,           // a metadata-only retarget (a safe rebase cannot compare)
  kFlattenInstead,            // a flatten (a retarget onto nothing would drop data)
};

// The facts a suggestion is phrased with.
struct SuggestionArgs {
  Suggestion what = Suggestion::kDeclareFormatForCreate;
  std::string image;    // absolute host path of the image changed or created
  std::string backing;  // the new backing as the user gave it
};

// Phrases a suggestion as a command or file operation of one front end.
using Suggester = std::function<std::string(const SuggestionArgs& args)>;

struct TrustContext {
  // Returns the format some other known image records for the file at this
  // absolute path, if any (scans the mounted pools).
  std::function<std::optional<std::string>(const std::string& path)> recorded_format;
  // Returns true if the absolute path is a volume of a mounted pool.
  std::function<bool(const std::string& path)> in_pool;
  // Phrases the fixes of refusals; empty: chainctl's commands
  // (ChainctlSuggestion). The mount sets its own file operations.
  Suggester suggest;
};

// Returns chainctl's (and so qemu-img's) form of a suggestion, e.g.
// "chainctl create -F FMT -b BACKING NEW". Pure.
std::string ChainctlSuggestion(const SuggestionArgs& args);

// Returns `context.suggest(args)`, or ChainctlSuggestion(args) without one.
std::string Suggest(const TrustContext& context, const SuggestionArgs& args);

// Decides the backing format to record for `backing_path`, in the order of
// DESIGN section 3: a format another image records for it; the probed format
// if raw or the probed image has no backing; the probed format if the probed
// image's whole chain is declared in metadata and every element is a pool
// volume. Otherwise kPermissionDenied with a message saying how to declare the
// format explicitly, phrased by Suggest for `declare` (whose `what` says
// which write asks). kNotFound if the file is missing.
Result<std::string> TrustedBackingFormat(ImageInspector& inspector, const std::string& backing_path,
                                         const TrustContext& context,
                                         const SuggestionArgs& declare);

// Same, for a new overlay (Suggestion::kDeclareFormatForCreate of an image
// not named yet).
Result<std::string> TrustedBackingFormat(ImageInspector& inspector, const std::string& backing_path,
                                         const TrustContext& context);

}  // namespace chainfs::core
