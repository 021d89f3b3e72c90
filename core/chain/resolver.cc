#include "core/chain/resolver.h"

#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "core/util/escape.h"
#include "core/util/shell.h"

namespace chainfs::core {
namespace {

// How much of a name read from an image (a backing string, a path built
// from one) a problem line may echo: real paths fit, a hostile string does
// not fill the line. Format names and other tokens get ShortToken's default.
constexpr size_t kMaxEchoedName = 256;

// Returns a name for a problem message: escaped, at most kMaxEchoedName bytes.
std::string Name(std::string_view s) { return ShortToken(s, kMaxEchoedName); }

// Returns a format name read from an image for a problem message.
std::string Token(std::string_view s) { return ShortToken(s); }

// Returns a text that is not ours (a driver's or the OS's message, which may
// quote bytes) as one line: escaped when it holds control characters.
std::string Foreign(std::string_view s) { return OneLine(s); }

// Quotes `s` as one word of a command the user may paste: a POSIX shell word
// when it is printable, bash's $'...' with C escapes when it holds control
// characters or invalid UTF-8 (still one line, still the same bytes), and
// `placeholder` when it is longer than a problem line may echo.
std::string ShellWord(std::string_view s, std::string_view placeholder) {
  if (s.size() > kMaxEchoedName) return std::string(placeholder);
  if (!NeedsEscape(s)) return ShellQuote(s);
  std::string out = "$'";
  for (char c : EscapeOneLine(s)) {
    if (c == '\'') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}


// Builds the fixes for a backing reference recorded by `recorder`: the file
// operation in the mount (when the recorder is a pool volume) and the
// equivalent qemu-img command.
std::vector<Fix> RetargetFix(const ResolveOptions& opts, const ChainElement& recorder,
                             std::string_view mount_file, std::string_view value,
                             const std::string& qemu_img) {
  std::vector<Fix> fixes;
  std::optional<std::string> vol;
  if (opts.locate) vol = opts.locate(recorder.path);
  if (vol) {
    fixes.push_back({FixKind::kFileOp, fmt::format("echo {} > {}/{}", ShellWord(value, "VALUE"),
                                                   ShellWord(*vol, "POOL/VOLUME"), mount_file)});
  }
  fixes.push_back({FixKind::kCommand, qemu_img});
  return fixes;
}

std::string RebaseCommand(const ChainElement& recorder, std::string_view backing_format,
                          std::string_view backing) {
  return fmt::format("qemu-img rebase -u -f {} -F {} -b {} {}",
                     ShellWord(recorder.format.empty() ? "FMT" : recorder.format, "FMT"),
                     ShellWord(backing_format, "FMT"), ShellWord(backing, "BACKING"),
                     ShellWord(recorder.path, "IMAGE"));
}

class Walker {
 public:
  Walker(ImageInspector& insp, const ResolveOptions& opts) : insp_(insp), opts_(opts) {}

  Chain Walk(const std::string& top) {
    ChainElement e;
    e.index = 0;
    e.path = top;
    e.format_source = FormatSource::kProbed;
    Result<std::shared_ptr<const Inspection>> in = insp_.Inspect(top);
    if (!in.ok()) {
      Problem p{0, KindOf(in.status()),
                fmt::format("Cannot access storage file '{}': {}", Name(top),
                            Foreign(in.status().message())),
                ""};
      chain_.elements.push_back(std::move(e));
      chain_.problems.push_back(std::move(p));
      return std::move(chain_);
    }
    Continue(std::move(e), **in);
    return std::move(chain_);
  }

  Chain Resume(Chain start) {
    if (start.elements.empty() || !start.elements.back().stat) return start;
    ChainElement last = start.elements.back();
    Result<std::shared_ptr<const Inspection>> in = insp_.Inspect(last.path, last.format);
    if (!in.ok() || !((*in)->stat.id == last.stat->id)) return start;
    chain_ = std::move(start);
    chain_.elements.pop_back();
    chain_.complete = false;
    for (const ChainElement& e : chain_.elements) {
      if (e.stat) seen_.emplace(std::make_pair(e.stat->id.dev, e.stat->id.ino), e.index);
    }
    Continue(std::move(last), **in);
    return std::move(chain_);
  }

 private:
  static ProblemKind KindOf(const Status& s) {
    switch (s.code()) {
      case Code::kNotFound: return ProblemKind::kMissingBackingFile;
      case Code::kUnsupported: return ProblemKind::kUnsupported;
      default: return ProblemKind::kUnreadable;
    }
  }

  void AddProblem(int index, ProblemKind kind, std::string message, std::string advice = {}) {
    chain_.problems.push_back(Problem{index, kind, std::move(message), std::move(advice)});
  }
  void AddProblem(int index, ProblemKind kind, std::string message, std::vector<Fix> fixes) {
    std::string line = JoinFixes(fixes);
    chain_.problems.push_back(
        Problem{index, kind, std::move(message), std::move(line), std::move(fixes)});
  }

  // Adds element `e`, opened as `in`, then follows its backing reference.
  void Continue(ChainElement e, const Inspection& first) {
    const Inspection* in = &first;
    std::shared_ptr<const Inspection> hold;
    for (;;) {
      e.stat = in->stat;
      e.format = in->format;
      const int index = e.index;
      auto key = std::make_pair(in->stat.id.dev, in->stat.id.ino);
      if (auto seen = seen_.find(key); seen != seen_.end()) {
        const ChainElement& parent = chain_.elements.back();
        const ChainElement& earlier = chain_.elements[size_t(seen->second)];
        std::vector<Fix> fix = RetargetFix(opts_, parent, "backing", "NEW-BACKING",
                                      RebaseCommand(parent, "FMT", "NEW-BACKING"));
        AddProblem(index, ProblemKind::kLoop,
                   fmt::format("backing chain loop: backing file '{}' of image '{}' is image '{}' "
                               "(chain index {}) again",
                               Name(e.backing_string), Name(parent.path), Name(earlier.path),
                               seen->second),
                   std::move(fix));
        e.format.clear();
        chain_.elements.push_back(std::move(e));
        return;
      }
      seen_[key] = index;
      if (!in->parse_status.ok()) {
        AddProblem(index, ProblemKind::kCorruptHeader,
                   fmt::format("image '{}' cannot be read as {}: {}", Name(e.path),
                               Token(in->format), Foreign(in->parse_status.message())));
        chain_.elements.push_back(std::move(e));
        return;
      }
      e.meta = in->meta;
      for (const std::string& p : in->meta->problems) {
        AddProblem(index, ProblemKind::kHeader,
                   fmt::format("image '{}': {}", Name(e.path), Foreign(p)));
      }
      chain_.elements.push_back(e);
      const ChainElement& self = chain_.elements.back();
      if (!self.meta->backing || self.meta->backing->empty()) {
        chain_.complete = true;
        return;
      }
      // The next element.
      ChainElement next;
      next.index = index + 1;
      next.backing_string = *self.meta->backing;
      if (next.index >= opts_.max_depth) {
        AddProblem(next.index, ProblemKind::kTooDeep,
                   fmt::format("backing chain of image '{}' is deeper than {} images, QEMU's and "
                               "libvirt's limit",
                               Name(chain_.elements.front().path), opts_.max_depth),
                   "shorten the chain: qemu-img commit an overlay into its backing, or rebase "
                   "a volume onto a deeper element");
        return;
      }
      Result<BackingRef> ref = ClassifyBacking(next.backing_string, self.path);
      if (!ref.ok()) {
        AddProblem(index, ProblemKind::kBadBackingString,
                   fmt::format("backing string of image '{}' cannot be used: {}", Name(self.path),
                               Foreign(ref.status().message())),
                   RetargetFix(opts_, self, "backing", "NEW-BACKING",
                               RebaseCommand(self, "FMT", "NEW-BACKING")));
        return;
      }
      next.ref = *ref;
      const std::optional<std::string>& recorded = self.meta->backing_format;
      if (ref->kind != BackingKind::kRelative && ref->kind != BackingKind::kAbsolute) {
        // Network storage (and json: pseudo-protocol strings): shown, never opened.
        next.network = true;
        next.path = next.backing_string;
        next.format = recorded.value_or(ref->network ? ref->network->format : "");
        next.format_source = FormatSource::kMetadata;
        chain_.elements.push_back(std::move(next));
        return;
      }
      next.path = ref->resolved_path;
      if (recorded && !recorded->empty()) {
        next.format_source = FormatSource::kMetadata;
        if (!FindDriver(*recorded)) {
          AddProblem(index, ProblemKind::kUnknownFormat,
                     fmt::format("image '{}' records unknown backing format '{}'",
                                 Name(self.path), Token(*recorded)),
                     RetargetFix(opts_, self, "backing_format", "FMT",
                                 RebaseCommand(self, "FMT", next.backing_string)));
          chain_.elements.push_back(std::move(next));
          return;
        }
      } else {
        next.format_source = FormatSource::kProbed;
      }
      Result<std::shared_ptr<const Inspection>> nin =
          insp_.Inspect(next.path, next.format_source == FormatSource::kMetadata ? *recorded : "");
      if (!nin.ok()) {
        Status s = nin.status();
        const std::string& parent = opts_.broken_parent.empty() ? self.path : opts_.broken_parent;
        std::string msg = fmt::format("Cannot access backing file '{}' of storage file '{}'",
                                      Name(next.path), Name(parent));
        if (!opts_.access_as.empty()) {
          msg += fmt::format(" (as {}): {}", opts_.access_as, SystemErrorText(s));
        } else if (s.code() != Code::kNotFound) {
          msg += fmt::format(" ({})", Foreign(s.message()));
        }
        const bool known = recorded && FindDriver(*recorded);
        AddProblem(next.index, KindOf(s), std::move(msg),
                   RetargetFix(opts_, self, "backing", "NEW-BACKING",
                               RebaseCommand(self, known ? *recorded : "FMT", "NEW-BACKING")));
        chain_.elements.push_back(std::move(next));
        return;
      }
      if (next.format_source == FormatSource::kMetadata) {
        CheckRecordedFormat(self, next, *recorded, (*nin)->probed_format);
      }
      if (next.format_source == FormatSource::kProbed) {
        // libvirt's rule: probing is safe only for an image that has no
        // backing of its own; otherwise a guest could point the host at any file.
        const Inspection& probed = **nin;
        bool has_backing = probed.meta && probed.meta->backing && !probed.meta->backing->empty();
        if (!probed.meta || has_backing) {
          std::string fmt_name = probed.format;
          AddProblem(next.index, ProblemKind::kMissingBackingFormat,
                     fmt::format("format of backing image '{}' of image '{}' was not specified in "
                                 "the image metadata",
                                 Name(next.backing_string), Name(self.path)),
                     RetargetFix(opts_, self, "backing_format", fmt_name,
                                 RebaseCommand(self, fmt_name, next.backing_string)));
          next.stat = probed.stat;
          chain_.elements.push_back(std::move(next));
          return;
        }
      }
      hold = std::move(*nin);
      in = hold.get();
      e = std::move(next);
    }
  }

  // Adds a format-mismatch problem when the format `recorder` records for
  // its backing `next` disagrees with what the backing's bytes probe as.
  // Only a warning (DESIGN section 3): the recorded format stays the one in
  // use, and nothing of the probed result is followed.
  void CheckRecordedFormat(const ChainElement& recorder, const ChainElement& next,
                           const std::string& recorded, const std::string& probed) {
    if (probed.empty() || SameGuestView(recorded, probed)) return;
    std::string meaning;
    if (recorded == "raw") {
      meaning = fmt::format("a guest sees the {} file's own bytes (its header and tables), not "
                            "the disk image it holds",
                            probed);
    } else if (probed == "raw") {
      meaning = fmt::format("the file does not start with a {} header, so it cannot be read as {}",
                            recorded, recorded);
    } else {
      meaning = fmt::format("the file is read with the {} driver, not as the {} image it looks like",
                            recorded, probed);
    }
    std::string keep =
        recorded == "raw"
            ? fmt::format("if it is a raw guest disk that happens to hold a {} header, keep raw",
                          probed)
            : fmt::format("if it really is {}, keep it", recorded);
    std::vector<Fix> fixes = RetargetFix(opts_, recorder, "backing_format", probed,
                                         RebaseCommand(recorder, probed, next.backing_string));
    std::string line = fmt::format("if it is a {} image: {}; {}", probed, JoinFixes(fixes), keep);
    chain_.problems.push_back(Problem{
        next.index, ProblemKind::kFormatMismatch,
               fmt::format("format-mismatch: image '{}' records backing format {} for '{}', but "
                           "the backing file's header is {}: it is used as {}, as recorded; {}",
                           Name(recorder.path), Token(recorded), Name(next.path), probed,
                           Token(recorded), meaning),
               std::move(line), std::move(fixes)});
  }

  ImageInspector& insp_;
  const ResolveOptions& opts_;
  Chain chain_;
  std::map<std::pair<uint64_t, uint64_t>, int> seen_;
};

}  // namespace

Chain ResolveChain(ImageInspector& inspector, const std::string& path,
                   const ResolveOptions& options) {
  return Walker(inspector, options).Walk(path);
}

Chain ContinueChain(ImageInspector& inspector, Chain start, const ResolveOptions& options) {
  return Walker(inspector, options).Resume(std::move(start));
}

bool SameGuestView(std::string_view recorded, std::string_view probed) {
  auto plain = [](std::string_view f) { return f == "raw" || f == "iso"; };
  return recorded == probed || (plain(recorded) && plain(probed));
}

std::string SystemErrorText(const Status& status) {
  int err = status.sys_errno();
  if (err == 0) {
    switch (status.code()) {
      case Code::kNotFound: err = ENOENT; break;
      case Code::kPermissionDenied: err = EACCES; break;
      case Code::kUnsupported: err = ENOTSUP; break;
      default: err = EIO; break;
    }
  }
  return std::strerror(err);
}

}  // namespace chainfs::core
