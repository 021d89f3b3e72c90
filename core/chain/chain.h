// The resolved backing chain of one image: what every renderer and the mount
// consume. Immutable once built; shared as std::shared_ptr<const Chain>.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/chain/backing_ref.h"
#include "core/format/driver.h"
#include "core/io/file.h"

namespace chainfs::core {

// Where the format of a chain element came from.
enum class FormatSource {
  kProbed,    // probed from the file's own bytes (the top image; or a backing whose
              // format was not recorded and which has no backing of its own)
  kMetadata,  // recorded in the metadata of the image above it
};

// Where a chain element itself came from (domain disks, DESIGN section 8).
enum class ElementOrigin {
  kMetadata,  // named by the backing string of the image above it (or a pool volume)
  kXml,       // given in a domain's XML: the disk's <source> or a <backingStore>
};

// One element of a chain: index 0 is the image itself, 1 its backing, ...
struct ChainElement {
  int index = 0;
  std::string path;            // absolute host path; for network sources the raw string
  std::string backing_string;  // how the image above recorded it ("" for index 0)
  std::optional<BackingRef> ref;  // classification of backing_string (absent for index 0)
  bool network = false;        // a network source: shown, never opened
  std::string format;          // format in use ("" if it could not be determined)
  FormatSource format_source = FormatSource::kProbed;
  std::optional<FileStat> stat;                // absent when not opened
  std::shared_ptr<const ImageMeta> meta;       // null when not opened / not parsed
  // Domain disks only (DESIGN section 8); pool volumes keep the defaults.
  ElementOrigin origin = ElementOrigin::kMetadata;
  std::string source_type;         // libvirt's storage type: "file", "block", "network",
                                   // "volume" ("" = file or block, by the stat)
  std::string volume_ref;          // type "volume": "POOL/VOLUME" as the XML names it
  std::optional<int> xml_index;    // the index attribute a live XML gave the element
};

// Classifies a problem, so that callers can test for kinds without parsing
// text. Each kind has a stable code name for scripts (ProblemCode).
enum class ProblemKind {
  kMissingBackingFormat,  // libvirt's "format of backing image ... was not specified"
  kMissingBackingFile,    // "Cannot access backing file ..."
  kUnreadable,            // permission denied or I/O error opening an element
  kLoop,                  // the same (dev, ino) twice
  kTooDeep,               // more than kMaxChainDepth elements
  kCorruptHeader,         // the format driver could not parse the header
  kHeader,                // a fact that does not stop the walk nor the data: the header
                          // carries a problem (ImageMeta::problems)
  kFormatMismatch,        // also a warning: the recorded (or given) format disagrees with
                          // the probed one ("format-mismatch: ..."; the recorded one stays)
  kBadBackingString,      // a backing string that cannot be classified
  kUnknownFormat,         // a recorded backing format that is not a known format
  kUnsupported,           // e.g. a storage type chainfs does not resolve
  kUnsupportedProtocol,   // a network element whose chain is not followed
  kMissingVolume,         // a domain disk names a pool or volume that is not defined
  kDomainDefinition,      // a domain disk's definition is refused (libvirt's errors)
  kDrift,                 // a running domain's live chain differs from what its images
                          // record now
  kInUse,                 // a note, never in Chain::problems: a process holds an element
                          // open for writing (RenderInUse)
};

// The stable name of a problem kind ("missing-backing-format", ...), as
// problems.json and `chainctl check --json` give it (listed in chainctl(1)).
std::string_view ProblemCode(ProblemKind kind);
// True for the kinds that do not stop the chain nor its data (kHeader,
// kFormatMismatch, kDrift, kInUse): the domain starts, though maybe not as
// meant.
bool IsWarning(ProblemKind kind);

// What a fix is made of, for scripts: a command for a shell, a file
// operation in the mount (paths relative to the mount's root), or the XML
// to add to a domain's <disk>, after its <source>.
enum class FixKind { kFileOp, kCommand, kDomainXml };
// "file-op", "command", "domain-xml".
std::string_view FixKindName(FixKind kind);
struct Fix {
  FixKind kind = FixKind::kCommand;
  std::string text;  // one line; may hold upper-case placeholders (NEW-BACKING, FMT)
};

// The fixes as one line for people: "A, or B".
std::string JoinFixes(const std::vector<Fix>& fixes);

// One problem found while resolving: at chain index `index`.
struct Problem {
  int index = 0;
  ProblemKind kind = ProblemKind::kCorruptHeader;
  // One line, libvirt's wording where libvirt has one. Bytes read from a
  // file appear only as escaped tokens (ShortToken): no control character,
  // at most a few hundred bytes of any one name.
  std::string message;
  // One line for people: the fixes below, with the conditions that choose
  // between them, or advice where no command does it; may be empty. Names
  // with control characters are quoted as bash $'...' words.
  std::string fix;
  // The fixes a script can apply as written (after filling placeholders).
  std::vector<Fix> fixes = {};
};

// QEMU's and libvirt's limit on chain length.
inline constexpr int kMaxChainDepth = 200;

struct Chain {
  std::vector<ChainElement> elements;  // top first
  std::vector<Problem> problems;       // in index order
  bool complete = false;  // walked to an element with no backing, no problem stopped it
  bool healthy() const { return problems.empty(); }
};

}  // namespace chainfs::core
