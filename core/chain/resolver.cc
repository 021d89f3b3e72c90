#include "core/chain/resolver.h"

#include <map>
#include <utility>

#include "core/util/shell.h"

namespace chainfs::core {
namespace {

// Builds the fix for a backing reference recorded by `recorder`: the file
// operation in the mount (when the recorder is a pool volume) and the
// equivalent qemu-img command.
std::string RetargetFix(const ResolveOptions& opts, const ChainElement& recorder,
                        std::string_view mount_file, std::string_view value,
                        const std::string& qemu_img) {
  std::optional<std::string> vol;
  if (opts.locate) vol = opts.locate(recorder.path);
  if (!vol) return qemu_img;
  return fmt::format("echo {} > {}/{}, or {}", ShellQuote(value), ShellQuote(*vol), mount_file,
                     qemu_img);
}

std::string RebaseCommand(const ChainElement& recorder, std::string_view backing_format,
                          std::string_view backing) {
  return fmt::format("qemu-img rebase -u -f {} -F {} -b {} {}", recorder.format, backing_format,
                     ShellQuote(backing), ShellQuote(recorder.path));
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
                fmt::format("Cannot access storage file '{}': {}", top, in.status().message()), ""};
      chain_.elements.push_back(std::move(e));
      chain_.problems.push_back(std::move(p));
      return std::move(chain_);
    }
    Continue(std::move(e), **in);
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

  void AddProblem(int index, ProblemKind kind, std::string message, std::string fix = {}) {
    chain_.problems.push_back(Problem{index, kind, std::move(message), std::move(fix)});
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
        std::string fix = RetargetFix(opts_, parent, "backing", "NEW-BACKING",
                                      RebaseCommand(parent, "FMT", "NEW-BACKING"));
        AddProblem(index, ProblemKind::kLoop,
                   fmt::format("backing chain loop: backing file '{}' of image '{}' is image '{}' "
                               "(chain index {}) again",
                               e.backing_string, parent.path, earlier.path, seen->second),
                   std::move(fix));
        e.format.clear();
        chain_.elements.push_back(std::move(e));
        return;
      }
      seen_[key] = index;
      if (!in->parse_status.ok()) {
        AddProblem(index, ProblemKind::kCorruptHeader,
                   fmt::format("image '{}' cannot be read as {}: {}", e.path, in->format,
                               in->parse_status.message()));
        chain_.elements.push_back(std::move(e));
        return;
      }
      e.meta = in->meta;
      for (const std::string& p : in->meta->problems) {
        AddProblem(index, ProblemKind::kHeader, fmt::format("image '{}': {}", e.path, p));
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
                               chain_.elements.front().path, opts_.max_depth),
                   "shorten the chain: qemu-img commit an overlay into its backing, or rebase "
                   "a volume onto a deeper element");
        return;
      }
      Result<BackingRef> ref = ClassifyBacking(next.backing_string, self.path);
      if (!ref.ok()) {
        AddProblem(index, ProblemKind::kBadBackingString,
                   fmt::format("backing string of image '{}' cannot be used: {}", self.path,
                               ref.status().message()),
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
                     fmt::format("image '{}' records unknown backing format '{}'", self.path,
                                 *recorded),
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
        std::string msg = fmt::format("Cannot access backing file '{}' of storage file '{}'",
                                      next.path, self.path);
        if (s.code() != Code::kNotFound) msg += fmt::format(" ({})", s.message());
        AddProblem(next.index, KindOf(s), std::move(msg),
                   RetargetFix(opts_, self, "backing", "NEW-BACKING",
                               RebaseCommand(self, recorded.value_or("FMT"), "NEW-BACKING")));
        chain_.elements.push_back(std::move(next));
        return;
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
                                 next.backing_string, self.path),
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

}  // namespace chainfs::core
