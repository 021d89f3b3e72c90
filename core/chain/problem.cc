// Stable names of problem and fix kinds (problems.json, chainctl check --json).
#include "core/chain/chain.h"

namespace chainfs::core {

std::string_view ProblemCode(ProblemKind kind) {
  switch (kind) {
    case ProblemKind::kMissingBackingFormat: return "missing-backing-format";
    case ProblemKind::kMissingBackingFile: return "missing-file";
    case ProblemKind::kUnreadable: return "unreadable";
    case ProblemKind::kLoop: return "loop";
    case ProblemKind::kTooDeep: return "depth";
    case ProblemKind::kCorruptHeader: return "corrupt-header";
    case ProblemKind::kHeader: return "header";
    case ProblemKind::kFormatMismatch: return "format-mismatch";
    case ProblemKind::kBadBackingString: return "bad-backing-string";
    case ProblemKind::kUnknownFormat: return "unknown-format";
    case ProblemKind::kUnsupported: return "unsupported";
    case ProblemKind::kUnsupportedProtocol: return "unsupported-protocol";
    case ProblemKind::kMissingVolume: return "missing-volume";
    case ProblemKind::kDomainDefinition: return "domain-definition";
    case ProblemKind::kDrift: return "drift";
    case ProblemKind::kInUse: return "in-use";
  }
  return "unknown";
}

bool IsWarning(ProblemKind kind) {
  return kind == ProblemKind::kHeader || kind == ProblemKind::kFormatMismatch ||
         kind == ProblemKind::kDrift || kind == ProblemKind::kInUse;
}

std::string_view FixKindName(FixKind kind) {
  switch (kind) {
    case FixKind::kFileOp: return "file-op";
    case FixKind::kCommand: return "command";
    case FixKind::kDomainXml: return "domain-xml";
  }
  return "command";
}

std::string JoinFixes(const std::vector<Fix>& fixes) {
  std::string out;
  for (const Fix& f : fixes) {
    if (!out.empty()) out += ", or ";
    out += f.text;
  }
  return out;
}

}  // namespace chainfs::core
