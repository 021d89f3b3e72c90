#include "core/domain/disk_chain.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <array>

#include "core/format/driver.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

constexpr size_t kMaxEchoedName = 256;
constexpr const char* kKbaseSuffix =
    " (See https://libvirt.org/kbase/backing_chains.html for troubleshooting)";
std::string Name(std::string_view s) { return ShortToken(s, kMaxEchoedName); }
std::string Token(std::string_view s) { return ShortToken(s); }

// Quotes an XML attribute value for a fix line (one line, single quotes).
std::string Attr(std::string_view s) {
  std::string out;
  for (char c : OneLine(XmlSafe(s))) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

// The <source> attribute naming a local element of storage type `type`.
const char* SourceAttr(std::string_view type) { return type == "block" ? "dev" : "file"; }

// Describes an element as an explicit <backingStore> would: its storage
// type, format and source.
std::string BackingElementXml(const ChainElement& e, std::string_view format,
                              std::string_view inner) {
  std::string type = e.stat && e.stat->IsBlockDevice() ? "block" : "file";
  return fmt::format("<backingStore type='{}'><format type='{}'/><source {}='{}'/>{}</backingStore>",
                     type, Attr(format), SourceAttr(type), Attr(e.path), inner);
}

// The domain fix for a chain whose element `upto` is the first that
// libvirt cannot detect on its own: the explicit <backingStore> elements
// 1..upto, to put in the <disk> with virsh edit. `formats[i]` is the format
// to declare for element i.
std::string DomainFixXml(const Chain& chain, size_t upto, const std::vector<std::string>& formats) {
  std::string inner;
  for (size_t i = upto; i >= 1; --i) {
    inner = BackingElementXml(chain.elements[i], formats[i], inner);
  }
  return inner;
}

// Adds the domain fix `xml` for domain `domain` to a problem's fixes and
// its line ("; or virsh edit ...").
void AddDomainFix(Problem& p, const std::string& domain, std::string xml) {
  std::string more = fmt::format(
      "or virsh edit {} and give the chain in its <disk>, after <source>: {}", domain, xml);
  p.fix = p.fix.empty() ? more : p.fix + "; " + more;
  p.fixes.push_back({FixKind::kDomainXml, std::move(xml)});
}

// Why libvirt does not follow the chain past a network element of
// `protocol` (DESIGN section 10).
std::string NetworkReason(std::string_view protocol) {
  if (protocol == "gluster") {
    return "libvirt reads gluster images only with its gluster storage backend, and chainfs "
           "does not read gluster";
  }
  if (protocol == "nbd") {
    return "libvirt does not read the metadata of images over nbd";
  }
  return fmt::format("libvirt does not read the metadata of images over {}", Token(protocol));
}

class DiskWalker {
 public:
  DiskWalker(ImageInspector& insp, const DiskDef& disk, const DiskContext& ctx)
      : insp_(insp), disk_(disk), ctx_(ctx) {}

  Chain Walk() {
    for (const std::string& error : disk_.errors) {
      Add(0, ProblemKind::kDomainDefinition,
          fmt::format("disk '{}' cannot be defined: {}", Name(disk_.target), error),
          "give every <backingStore> element its <format type=...>");
    }
    if (!disk_.top.HasLocation()) {
      // An empty removable drive (cdrom, floppy): nothing to resolve.
      ChainElement e;
      e.origin = ElementOrigin::kXml;
      e.source_type = disk_.top.type;
      e.format = disk_.top.format;
      chain_.elements.push_back(std::move(e));
      chain_.complete = chain_.problems.empty();
      return std::move(chain_);
    }
    // The top: its format is the driver type, raw when absent (a volume's
    // is its volume's), never probed.
    std::string top_format = disk_.top.format;
    if (top_format.empty() && disk_.top.type != "volume") top_format = "raw";
    if (!AddGiven(disk_.top, top_format, 0)) return std::move(chain_);
    for (size_t i = 0; i < disk_.backing.size(); ++i) {
      if (!AddGiven(disk_.backing[i], disk_.backing[i].format, int(i) + 1)) {
        return std::move(chain_);
      }
    }
    if (!disk_.errors.empty()) return std::move(chain_);
    ChainElement& last = chain_.elements.back();
    if (disk_.terminated) {
      AddHeaderProblems(last);
      chain_.complete = Healthy();
      return std::move(chain_);
    }
    if (last.network) {
      // libvirt cannot read it: the chain below is QEMU's business.
      if (FormatCanHaveBacking(last.format)) {
        const std::string protocol = last.ref && last.ref->network ? last.ref->network->protocol : "";
        Add(last.index, ProblemKind::kUnsupportedProtocol,
            fmt::format("backing chain of '{}' is not followed: {}, so QEMU opens whatever "
                        "backing the {} image records, unchecked",
                        Name(last.path), NetworkReason(protocol), Token(last.format)),
            fmt::format("give the chain in the domain XML: virsh edit {} and add <backingStore> "
                        "elements (or an empty <backingStore/> if it has none)",
                        ctx_.domain.empty() ? "DOMAIN" : ctx_.domain));
      } else {
        chain_.complete = Healthy();
      }
      return std::move(chain_);
    }
    // The image rules from the last given element: libvirt names it in
    // "Cannot access backing file ... of storage file ...".
    ResolveOptions options;
    options.locate = ctx_.locate;
    options.broken_parent = last.path;
    options.access_as = ctx_.access_as;
    const size_t given = chain_.elements.size();
    const bool healthy_before = Healthy();
    Chain walked = ContinueChain(insp_, std::move(chain_), options);
    chain_ = std::move(walked);
    if (!healthy_before) chain_.complete = false;
    for (Problem& p : chain_.problems) {
      // libvirt 9.0 ends this message with a pointer to its kbase.
      if (p.kind == ProblemKind::kMissingBackingFormat) p.message += kKbaseSuffix;
    }
    AddDomainFixes(given);
    return std::move(chain_);
  }

 private:
  bool Healthy() const {
    for (const Problem& p : chain_.problems) {
      if (!IsWarning(p.kind)) return false;
    }
    return true;
  }

  void Add(int index, ProblemKind kind, std::string message, std::string fix = {}) {
    chain_.problems.push_back(Problem{index, kind, std::move(message), std::move(fix)});
  }

  // Adds the header problems of an opened element the resolver will not see.
  void AddHeaderProblems(const ChainElement& e) {
    if (!e.stat || e.network) return;
    Result<std::shared_ptr<const Inspection>> in = insp_.Inspect(e.path, e.format);
    if (!in.ok()) return;
    if (!(*in)->parse_status.ok()) {
      Add(e.index, ProblemKind::kCorruptHeader,
          fmt::format("image '{}' cannot be read as {}: {}", Name(e.path), Token(e.format),
                      OneLine((*in)->parse_status.message())));
      return;
    }
    for (const std::string& p : (*in)->meta->problems) {
      Add(e.index, ProblemKind::kHeader, fmt::format("image '{}': {}", Name(e.path), OneLine(p)));
    }
  }

  // Adds the element given by `src` (the disk's source or an explicit
  // <backingStore>) at `index`, opened in `format`. Returns false when the
  // chain stops there.
  bool AddGiven(const DiskSource& src, const std::string& format, int index) {
    ChainElement e;
    e.index = index;
    e.origin = ElementOrigin::kXml;
    e.source_type = src.type;
    e.format = format;
    e.format_source = FormatSource::kMetadata;
    e.xml_index = src.index;
    if (src.type == "network") {
      e.network = true;
      e.path = src.Describe();
      BackingRef ref;
      ref.kind = BackingKind::kUri;
      ref.raw = e.path;
      ref.network = src.network;
      e.ref = std::move(ref);
      if (e.format.empty()) e.format = "raw";
      chain_.elements.push_back(std::move(e));
      return true;
    }
    if (src.type == "volume") {
      e.volume_ref = src.Describe();
      Result<std::string> path = ctx_.resolve_volume
                                     ? ctx_.resolve_volume(src.pool, src.volume)
                                     : Result<std::string>(Error(Code::kNotFound,
                                                                 "storage pool '{}' not found",
                                                                 src.pool));
      if (!path.ok()) {
        e.path = e.volume_ref;
        Add(index, ProblemKind::kMissingVolume, OneLine(path.status().message()),
            "define the pool and volume, or point the disk at a file");
        chain_.elements.push_back(std::move(e));
        return false;
      }
      e.path = *path;
    } else if (src.type == "file" || src.type == "block") {
      e.path = src.path;
    } else {
      e.path = src.Describe();
      Add(index, ProblemKind::kUnsupported,
          fmt::format("storage type '{}' of disk '{}' is not resolved by chainfs", Token(src.type),
                      Name(disk_.target)));
      chain_.elements.push_back(std::move(e));
      return false;
    }
    if (!e.format.empty() && !FindDriver(e.format)) {
      Add(index, ProblemKind::kUnknownFormat,
          fmt::format("unknown driver format value '{}'", Token(e.format)),
          "give a known format: raw, qcow2, ...");
      chain_.elements.push_back(std::move(e));
      return false;
    }
    Result<std::shared_ptr<const Inspection>> in = insp_.Inspect(e.path, e.format);
    if (!in.ok()) {
      std::string msg =
          index == 0
              ? fmt::format("Cannot access storage file '{}'", Name(e.path))
              : fmt::format("Cannot access backing file '{}' of storage file '{}'", Name(e.path),
                            Name(chain_.elements.front().path));
      if (!ctx_.access_as.empty()) msg += fmt::format(" (as {})", ctx_.access_as);
      msg += ": " + SystemErrorText(in.status());
      ProblemKind kind = in.status().code() == Code::kNotFound ? ProblemKind::kMissingBackingFile
                                                               : ProblemKind::kUnreadable;
      if (in.status().code() == Code::kUnsupported) kind = ProblemKind::kUnsupported;
      Add(index, kind, std::move(msg),
          index == 0 ? fmt::format("restore the image, or virsh edit {} and point <source> at it",
                                   ctx_.domain.empty() ? "DOMAIN" : ctx_.domain)
                     : fmt::format("restore the image, or virsh edit {} and fix the <backingStore>",
                                   ctx_.domain.empty() ? "DOMAIN" : ctx_.domain));
      chain_.elements.push_back(std::move(e));
      return false;
    }
    const Inspection& got = **in;
    e.stat = got.stat;
    if (e.format.empty()) e.format = got.format;  // a volume disk: its volume's format
    e.meta = got.meta;
    if (!(index == 0 && disk_.top.type == "volume" && disk_.top.format.empty())) {
      CheckGivenFormat(e, got.probed_format);
    }
    if (!got.parse_status.ok()) {
      Add(index, ProblemKind::kCorruptHeader,
          fmt::format("image '{}' cannot be read as {}: {}", Name(e.path), Token(e.format),
                      OneLine(got.parse_status.message())));
      chain_.elements.push_back(std::move(e));
      return false;
    }
    const bool last = size_t(index) == disk_.backing.size();
    if (!last) AddHeaderProblems(e);
    chain_.elements.push_back(std::move(e));
    return true;
  }

  // A format given in the XML that the file's bytes contradict: QEMU opens
  // it as given (libvirt never probes), which is what the guest sees.
  void CheckGivenFormat(const ChainElement& e, const std::string& probed) {
    if (probed.empty() || SameGuestView(e.format, probed)) return;
    const bool top = e.index == 0;
    std::string what = top ? (disk_.top.format.empty()
                                  ? std::string("no driver type (libvirt uses raw)")
                                  : fmt::format("driver type {}", Token(e.format)))
                           : fmt::format("<backingStore> format {}", Token(e.format));
    std::string meaning =
        e.format == "raw"
            ? fmt::format("the guest sees the {} file's own bytes (its header and tables), not "
                          "the disk it holds, and its backing chain is not used",
                          probed)
            : fmt::format("QEMU reads the file with the {} driver", Token(e.format));
    Add(e.index, ProblemKind::kFormatMismatch,
        fmt::format("format-mismatch: disk '{}' gives {} for '{}', whose header is {}: {}",
                    Name(disk_.target), what, Name(e.path), probed, meaning),
        fmt::format("if it is a {} image: virsh edit {} and set {} to {}; if the guest really "
                    "owns those bytes as {}, keep it",
                    probed, ctx_.domain.empty() ? "DOMAIN" : ctx_.domain,
                    top ? "<driver type>" : "its <format type>", probed, Token(e.format)));
  }

  // Adds the domain's side of the fix to what the image rules stopped at:
  // the explicit <backingStore> chain down to the element libvirt cannot
  // detect, with the format its bytes show.
  void AddDomainFixes(size_t given) {
    for (Problem& p : chain_.problems) {
      if (p.kind != ProblemKind::kMissingBackingFormat) continue;
      const size_t k = size_t(p.index);
      if (k >= chain_.elements.size() || k < given) continue;
      std::vector<std::string> formats(k + 1);
      bool known = true;
      for (size_t i = 1; i <= k; ++i) {
        formats[i] = chain_.elements[i].format;
        if (i == k || formats[i].empty()) {
          Result<std::shared_ptr<const Inspection>> in = insp_.Inspect(chain_.elements[i].path);
          if (in.ok()) formats[i] = (*in)->probed_format;
        }
        if (formats[i].empty()) known = false;
      }
      if (known) {
        AddDomainFix(p, ctx_.domain.empty() ? "DOMAIN" : ctx_.domain,
                     DomainFixXml(chain_, k, formats));
      }
    }
  }

  ImageInspector& insp_;
  const DiskDef& disk_;
  const DiskContext& ctx_;
  Chain chain_;
};

}  // namespace

bool FormatCanHaveBacking(std::string_view format) {
  static constexpr std::array<std::string_view, 6> kFormats = {"qcow2", "qcow", "qed",
                                                               "vmdk",  "cow",  "vhdx"};
  for (std::string_view f : kFormats) {
    if (f == format) return true;
  }
  return false;
}

Chain ResolveDiskChain(ImageInspector& inspector, const DiskDef& disk, const DiskContext& context) {
  return DiskWalker(inspector, disk, context).Walk();
}

void AddDrift(ImageInspector& inspector, Chain& live, const DiskContext& context) {
  (void)inspector;
  const std::string domain = context.domain.empty() ? "DOMAIN" : context.domain;
  // An element of the live chain that cannot be opened now was there when
  // QEMU opened it: it was removed or renamed under the running domain.
  for (Problem& p : live.problems) {
    if (p.kind != ProblemKind::kMissingBackingFile) continue;
    const std::string path = size_t(p.index) < live.elements.size()
                                 ? live.elements[size_t(p.index)].path
                                 : std::string();
    p.kind = ProblemKind::kDrift;
    p.message = fmt::format(
        "drift: image '{}' of running domain '{}' was removed or renamed since the domain "
        "started; QEMU still holds it open, but the next start cannot find it",
        Name(path), Name(context.domain));
    p.fix = fmt::format("put the image back under its name before the next start of {}", domain);
  }
  for (size_t i = 0; i < live.elements.size(); ++i) {
    const ChainElement& e = live.elements[i];
    if (e.network || !e.meta || !FormatCanHaveBacking(e.format)) continue;
    const bool has_next = i + 1 < live.elements.size();
    if (!has_next && !live.complete) continue;  // the live chain stopped here
    const std::optional<std::string>& recorded = e.meta->backing;
    const bool records = recorded && !recorded->empty();
    std::string running_on =
        has_next ? fmt::format("'{}' ({})", Name(live.elements[i + 1].path),
                               Token(live.elements[i + 1].format))
                 : std::string("no backing");
    std::string records_now = "no backing";
    bool differs = false;
    if (records) {
      Result<BackingRef> ref = ClassifyBacking(*recorded, e.path);
      std::string path = ref.ok() && ref->IsLocal() ? ref->resolved_path : *recorded;
      std::string format = e.meta->backing_format.value_or("");
      records_now = fmt::format("'{}' ({})", Name(path),
                                format.empty() ? std::string("no format") : Token(format));
      if (!has_next) {
        differs = true;
      } else {
        const ChainElement& n = live.elements[i + 1];
        bool same_file = path == n.path;
        if (!same_file && ref.ok() && ref->IsLocal() && n.stat) {
          Result<FileStat> st = StatPath(ref->resolved_path);
          same_file = st.ok() && st->id.dev == n.stat->id.dev && st->id.ino == n.stat->id.ino;
        }
        differs = !same_file || (!format.empty() && !SameGuestView(format, n.format));
      }
    } else {
      differs = has_next;
    }
    if (!differs) continue;
    live.problems.push_back(Problem{
        int(i), ProblemKind::kDrift,
        fmt::format("drift: image '{}' now records backing {}, but running domain '{}' was "
                    "started on {}: the next start uses what the image records",
                    Name(e.path), records_now, Name(context.domain), running_on),
        fmt::format("if the change was not meant, set the backing back before the next start "
                    "of {}",
                    domain)});
  }
  std::stable_sort(live.problems.begin(), live.problems.end(),
                   [](const Problem& a, const Problem& b) { return a.index < b.index; });
}

std::string DefaultAccessAs() {
  if (struct passwd* pw = ::getpwnam("libvirt-qemu")) {
    return fmt::format("uid:{}, gid:{}", pw->pw_uid, pw->pw_gid);
  }
  return "uid:0, gid:0";
}

}  // namespace chainfs::core
