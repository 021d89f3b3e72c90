#include "core/chain/trust.h"

#include "core/util/shell.h"

namespace chainfs::core {

std::string ChainctlSuggestion(const SuggestionArgs& args) {
  const std::string image = args.image.empty() ? "NEW" : ShellQuote(args.image);
  const std::string backing = ShellQuote(args.backing);
  switch (args.what) {
    case Suggestion::kDeclareFormatForCreate:
      return fmt::format("chainctl create -F FMT -b {} {}", backing, image);
    case Suggestion::kDeclareFormatForRetarget:
      return fmt::format("chainctl rebase -u -F FMT -b {} {}", backing, image);
    case Suggestion::kDeclareFormatForRebase:
      return fmt::format("chainctl rebase -F FMT -b {} {}", backing, image);
    case Suggestion::kRetargetInstead:
      return fmt::format("chainctl rebase -u -b {} {} (metadata only, when it holds the same data)",
                         backing, image);
    case Suggestion::kFlattenInstead:
      return fmt::format("chainctl rebase -b '' {}", image);
  }
  return {};
}

std::string Suggest(const TrustContext& context, const SuggestionArgs& args) {
  if (context.suggest) return context.suggest(args);
  return ChainctlSuggestion(args);
}

Result<std::string> TrustedBackingFormat(ImageInspector& inspector, const std::string& backing_path,
                                         const TrustContext& context) {
  SuggestionArgs declare;
  declare.what = Suggestion::kDeclareFormatForCreate;
  declare.backing = backing_path;
  return TrustedBackingFormat(inspector, backing_path, context, declare);
}

Result<std::string> TrustedBackingFormat(ImageInspector& inspector, const std::string& backing_path,
                                         const TrustContext& context,
                                         const SuggestionArgs& declare) {
  // 1. Another image already records a format for this very file.
  if (context.recorded_format) {
    if (std::optional<std::string> f = context.recorded_format(backing_path); f && FindDriver(*f)) {
      return *f;
    }
  }
  Result<std::shared_ptr<const Inspection>> in = inspector.Inspect(backing_path);
  if (!in.ok()) return in.status();
  const Inspection& probed = **in;
  if (!probed.parse_status.ok()) {
    return Error(Code::kPermissionDenied,
                 "backing '{}' looks like {} but its header cannot be read ({}); declare the "
                 "format explicitly: {}",
                 backing_path, probed.format, probed.parse_status.message(),
                 Suggest(context, declare));
  }
  // 2. Raw, or an image with no backing of its own: probing cannot be steered
  //    by a guest into another file.
  bool has_backing = probed.meta->backing && !probed.meta->backing->empty();
  if (probed.format == "raw" || !has_backing) return probed.format;
  // 3. The probed image's whole chain is declared in metadata and every
  //    element of it is a volume of a mounted pool.
  Chain chain = ResolveChain(inspector, backing_path);
  bool trusted = chain.healthy() && chain.complete && context.in_pool;
  for (const ChainElement& e : chain.elements) {
    if (!trusted) break;
    if (e.network || !context.in_pool(e.path)) trusted = false;
    if (e.index > 0 && e.format_source != FormatSource::kMetadata) trusted = false;
  }
  if (trusted) return probed.format;
  return Error(Code::kPermissionDenied,
               "backing '{}' probes as {} with a backing file of its own whose chain is not "
               "declared within the known pools, so its format may not be guessed; declare the "
               "format explicitly: {}",
               backing_path, probed.format, Suggest(context, declare));
}

}  // namespace chainfs::core
