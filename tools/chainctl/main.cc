// chainctl: the chain engine on the command line (DESIGN section 7). Every
// document it prints comes from core's renderers, so it matches the mount.
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "core/chain/backing_ref.h"
#include "core/chain/inspector.h"
#include "core/data/chain_reader.h"
#include "core/chain/resolver.h"
#include "core/domain/domain_catalog.h"
#include "core/domain/domain_view.h"
#include "core/pool/catalog.h"
#include "core/render/domain_render.h"
#include "core/render/render.h"
#include "core/render/tree_render.h"
#include "core/util/escape.h"
#include "core/util/small_file.h"
#include "core/write/create.h"
#include "core/write/in_use.h"
#include "core/write/rebase.h"
#include "core/write/retarget.h"

namespace chainfs::tools {
namespace {

using core::Chain;

constexpr int kExitOk = 0;
constexpr int kExitProblems = 1;  // `check` found problems; create/rebase refused
constexpr int kExitError = 2;     // usage error or the image cannot be read
constexpr int kExitWarnings = 3;  // `check` found only warnings (the chain still works)

constexpr const char* kUsage =
    "Usage: chainctl [--pool-dir DIR] [--pool NAME=PATH]... [--domain-dir DIR] [--run-dir DIR]\n"
    "                COMMAND [ARGS]\n"
    "\n"
    "Inspect disk images and their backing chains the way libvirt resolves them.\n"
    "\n"
    "Commands:\n"
    "  info [--json] IMAGE      the whole chain, as qemu-img info --backing-chain\n"
    "  chain IMAGE              one line per element: index, format, path\n"
    "  check [--json] IMAGE     problems with their fixes; exit 0 healthy, 1 problems,\n"
    "                           3 warnings only\n"
    "  check --all [--json]     the same over every pool volume and domain disk,\n"
    "                           with a summary line; exits as the worst problem\n"
    "  xml volume|disk IMAGE    the volume as virsh vol-dumpxml, or a domain <disk>\n"
    "  pools                    pools, their paths and volume counts\n"
    "  map [--json] IMAGE       allocation by chain depth, as qemu-img map\n"
    "  cat IMAGE                the chain's guest-visible bytes to stdout\n"
    "  create -b BACKING [-F FMT] NEW\n"
    "                           make NEW a qcow2 v3 overlay of BACKING\n"
    "  rebase [-u] -b BACKING [-F FMT] IMAGE\n"
    "                           rebase IMAGE onto BACKING, copying what differs;\n"
    "                           -b \"\" flattens; -u only rewrites the pointer\n"
    "  domains                  every domain: name, state, disks (one line each)\n"
    "  domain [--json|--xml|--check] NAME|FILE.xml [TARGET]\n"
    "                           a domain disk's chain as libvirt resolves it at start\n"
    "  users IMAGE              the domain disks and volumes whose chain holds IMAGE\n"
    "  tree [--dot] [POOL]      the pools' chain forests as a text tree (= POOL/.tree),\n"
    "                           or as Graphviz DOT\n"
    "\n"
    "Options:\n"
    "  --pool-dir DIR     read libvirt pool definitions from DIR\n"
    "                     (default /etc/libvirt/storage)\n"
    "  --pool NAME=PATH   add an ad-hoc dir pool (repeatable)\n"
    "  --domain-dir DIR   read domain definitions from DIR (default /etc/libvirt/qemu\n"
    "                     when no pool option is given)\n"
    "  --run-dir DIR      read running domains' status files from DIR (default\n"
    "                     /run/libvirt/qemu with the default domain folder)\n"
    "  -h, --help         show this help\n"
    "  --version          show the version\n"
    "\n"
    "Exit status: 0 success, 1 problems found (check) or operation refused\n"
    "(create, rebase), 2 usage error or unreadable image, 3 only warnings (check).\n"
    "See chainctl(1).\n";

// The state every command shares: the pools (for phrasing fixes as file
// operations in the mount) and the inspector.
struct Context {
  core::PoolCatalog catalog;
  core::ImageInspector inspector;
  core::DomainSources domains;
  bool domains_named = false;  // --domain-dir or --run-dir given
};

int UsageError(const std::string& message) {
  std::fprintf(stderr, "chainctl: %s\nTry 'chainctl --help' for more information.\n",
               message.c_str());
  return kExitError;
}

// Makes `path` absolute against the working directory (no symlink resolution,
// like qemu-img, so that the names shown are the ones the user gave).
std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  std::vector<char> buf(4096);
  if (!::getcwd(buf.data(), buf.size())) return path;
  std::string cwd(buf.data());
  return cwd == "/" ? "/" + path : cwd + "/" + path;
}

// Resolves IMAGE's chain; reports an unreadable top image as an error.
bool ResolveTop(Context& ctx, const std::string& image, Chain* out) {
  std::string path = Absolute(image);
  core::Result<core::FileStat> st = core::StatPath(path);
  if (!st.ok()) {
    std::fprintf(stderr, "chainctl: %s\n", core::OneLine(st.status().message()).c_str());
    return false;
  }
  core::ResolveOptions opts;
  opts.locate = ctx.catalog.MakeLocator();
  *out = core::ResolveChain(ctx.inspector, path, opts);
  return true;
}

bool WriteOut(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    std::fprintf(stderr, "chainctl: write error: %s\n", std::strerror(errno));
    return false;
  }
  return true;
}

int CmdInfo(Context& ctx, const std::vector<std::string>& args) {
  bool json = false;
  std::string image;
  for (const std::string& a : args) {
    if (a == "--json" || a == "--output=json") {
      json = true;
    } else if (!a.empty() && a[0] == '-' && a != "-") {
      return UsageError("info: unknown option '" + a + "'");
    } else if (image.empty()) {
      image = a;
    } else {
      return UsageError("info: too many arguments");
    }
  }
  if (image.empty()) return UsageError("info: missing IMAGE");
  Chain chain;
  if (!ResolveTop(ctx, image, &chain)) return kExitError;
  return WriteOut(json ? core::RenderInfoJson(chain) : core::RenderInfoText(chain)) ? kExitOk
                                                                                    : kExitError;
}

int CmdOneImage(Context& ctx, const std::string& name, const std::vector<std::string>& args,
                Chain* chain) {
  if (args.size() != 1) return UsageError(name + ": expected exactly one IMAGE");
  if (!args[0].empty() && args[0][0] == '-') return UsageError(name + ": unknown option '" + args[0] + "'");
  return ResolveTop(ctx, args[0], chain) ? kExitOk : kExitError;
}

int CmdChain(Context& ctx, const std::vector<std::string>& args) {
  Chain chain;
  if (int rc = CmdOneImage(ctx, "chain", args, &chain); rc != kExitOk) return rc;
  return WriteOut(core::RenderChainList(chain)) ? kExitOk : kExitError;
}

// The exit status of `check` for a set of problems: the worst one decides
// (in-use notes do not count).
int CheckExit(const std::vector<core::Problem>& problems) {
  int rc = kExitOk;
  for (const core::Problem& p : problems) {
    if (p.kind == core::ProblemKind::kInUse) continue;
    if (!core::IsWarning(p.kind)) return kExitProblems;
    rc = kExitWarnings;
  }
  return rc;
}

int CmdCheckAll(Context& ctx, bool json);

int CmdCheck(Context& ctx, const std::vector<std::string>& args) {
  bool json = false;
  bool all = false;
  std::vector<std::string> images;
  for (const std::string& a : args) {
    if (a == "--json" || a == "--output=json") {
      json = true;
    } else if (a == "--all") {
      all = true;
    } else {
      images.push_back(a);
    }
  }
  if (all) {
    if (!images.empty()) return UsageError("check: --all takes no IMAGE");
    return CmdCheckAll(ctx, json);
  }
  Chain chain;
  if (int rc = CmdOneImage(ctx, "check", images, &chain); rc != kExitOk) return rc;
  // As VOL/problems (.json): plus a note per element held for writing now.
  std::vector<int> held = core::ElementsHeldForWriting(chain);
  std::string out = json ? core::RenderProblemsJson(chain, held)
                         : core::RenderProblems(chain) + core::RenderInUse(chain, held);
  if (!WriteOut(out)) return kExitError;
  return CheckExit(chain.problems);
}

int CmdXml(Context& ctx, const std::vector<std::string>& args) {
  if (args.empty()) return UsageError("xml: expected 'volume' or 'disk'");
  std::string kind = args[0];
  if (kind != "volume" && kind != "disk") return UsageError("xml: unknown document '" + kind + "'");
  Chain chain;
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (int rc = CmdOneImage(ctx, "xml " + kind, rest, &chain); rc != kExitOk) return rc;
  if (!chain.elements.empty() && !chain.elements[0].meta) {
    std::fprintf(stderr, "chainctl: %s\n",
                 chain.problems.empty() ? "cannot read image" : chain.problems[0].message.c_str());
    return kExitError;
  }
  return WriteOut(kind == "volume" ? core::RenderVolumeXml(chain) : core::RenderDiskXml(chain))
             ? kExitOk
             : kExitError;
}

int CmdPools(Context& ctx, const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError("pools: unexpected argument '" + args[0] + "'");
  std::string out;
  for (const core::PoolDef& pool : ctx.catalog.Pools()) {
    if (!pool.Browsable()) {
      out += fmt::format("{}\t{}\t-\tnot browsable (type {})\n", pool.name,
                         pool.target_path.empty() ? "-" : pool.target_path, pool.type);
      continue;
    }
    std::shared_ptr<const core::PoolScan> scan = ctx.catalog.Scan(pool.name);
    if (!scan || !scan->status.ok()) {
      out += fmt::format("{}\t{}\t-\t{}\n", pool.name, pool.target_path,
                         scan ? scan->status.message() : "cannot scan");
      continue;
    }
    out += fmt::format("{}\t{}\t{}\n", pool.name, pool.target_path, scan->volumes.size());
  }
  return WriteOut(out) ? kExitOk : kExitError;
}

// Opens a data reader over IMAGE's chain; prints why not on failure.
std::unique_ptr<core::ChainReader> OpenData(Context& ctx, const std::string& image) {
  Chain chain;
  if (!ResolveTop(ctx, image, &chain)) return nullptr;
  core::Result<std::unique_ptr<core::ChainReader>> reader = core::ChainReader::Open(chain);
  if (!reader.ok()) {
    std::fprintf(stderr, "chainctl: %s\n", core::EscapeOneLine(reader.status().message()).c_str());
    return nullptr;
  }
  return std::move(*reader);
}

int CmdMap(Context& ctx, const std::vector<std::string>& args) {
  bool json = false;
  std::vector<std::string> images;
  for (const std::string& a : args) {
    if (a == "--json" || a == "--output=json") {
      json = true;
    } else if (!a.empty() && a[0] == '-') {
      return UsageError("map: unknown option '" + a + "'");
    } else {
      images.push_back(a);
    }
  }
  if (images.size() != 1) return UsageError("map: expected exactly one IMAGE");
  std::unique_ptr<core::ChainReader> reader = OpenData(ctx, images[0]);
  if (!reader) return kExitError;
  // Printed as the extents are found (qemu-img map streams too): memory stays
  // bounded however many extents the image has.
  bool write_failed = false;
  core::Status s = core::StreamMapText(
      *reader, json ? core::MapFormat::kJson : core::MapFormat::kHuman, 0, reader->Size(),
      [&write_failed](std::string_view text) -> core::Status {
        if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size()) {
          write_failed = true;
          return core::Status::FromErrno(errno, "write to stdout");
        }
        return core::Status::Ok();
      });
  if (std::fflush(stdout) != 0 && s.ok()) {
    write_failed = true;
    s = core::Status::FromErrno(errno, "write to stdout");
  }
  if (!s.ok()) {
    const bool human_refused = !json && !write_failed && s.code() == core::Code::kUnsupported;
    std::fprintf(stderr, "chainctl: map: %s%s\n", core::EscapeOneLine(s.message()).c_str(),
                 human_refused ? " (use --json)" : "");
    return kExitError;
  }
  return kExitOk;
}

int CmdCat(Context& ctx, const std::vector<std::string>& args) {
  if (args.size() != 1 || (!args[0].empty() && args[0][0] == '-')) {
    return UsageError("cat: expected exactly one IMAGE");
  }
  if (::isatty(STDOUT_FILENO)) {
    std::fprintf(stderr, "chainctl: cat: refusing to write a disk image to a terminal; "
                         "redirect stdout\n");
    return kExitError;
  }
  std::unique_ptr<core::ChainReader> reader = OpenData(ctx, args[0]);
  if (!reader) return kExitError;
  core::Status s = reader->ReadStream(
      0, reader->Size(), [](uint64_t, std::span<const uint8_t> bytes) -> core::Status {
        const uint8_t* p = bytes.data();
        size_t left = bytes.size();
        while (left > 0) {
          ssize_t n = ::write(STDOUT_FILENO, p, left);
          if (n < 0) {
            int err = errno;
            if (err == EINTR) continue;
            return core::Status::FromErrno(err, "write to stdout");
          }
          p += n;
          left -= size_t(n);
        }
        return core::Status::Ok();
      });
  if (!s.ok()) {
    std::fprintf(stderr, "chainctl: cat: %s\n", core::EscapeOneLine(s.message()).c_str());
    return kExitError;
  }
  return kExitOk;
}

// Prints a refused operation's reason and returns its exit code.
int Refused(const std::string& op, const core::Status& s) {
  std::fprintf(stderr, "chainctl: %s: %s\n", op.c_str(), s.message().c_str());
  return kExitProblems;
}

// Parses "-b X", "-F X", "-u" style options of create and rebase.
struct WriteArgs {
  std::optional<std::string> backing;
  std::optional<std::string> format;
  bool unsafe = false;
  std::vector<std::string> positional;
};

bool ParseWriteArgs(const std::string& cmd, const std::vector<std::string>& args, bool allow_u,
                    WriteArgs* out, int* rc) {
  for (size_t k = 0; k < args.size(); ++k) {
    const std::string& a = args[k];
    auto take = [&](std::optional<std::string>* slot) {
      if (a.size() > 2) {
        *slot = a.substr(2);
        return true;
      }
      if (k + 1 >= args.size()) return false;
      *slot = args[++k];
      return true;
    };
    if (a.rfind("-b", 0) == 0) {
      if (!take(&out->backing)) {
        *rc = UsageError(cmd + ": -b needs a value");
        return false;
      }
    } else if (a.rfind("-F", 0) == 0) {
      if (!take(&out->format)) {
        *rc = UsageError(cmd + ": -F needs a value");
        return false;
      }
    } else if (a == "-u" && allow_u) {
      out->unsafe = true;
    } else if (!a.empty() && a[0] == '-' && a != "-") {
      *rc = UsageError(cmd + ": unknown option '" + a + "'");
      return false;
    } else {
      out->positional.push_back(a);
    }
  }
  return true;
}

int CmdCreate(Context& ctx, const std::vector<std::string>& args) {
  WriteArgs w;
  int rc = 0;
  if (!ParseWriteArgs("create", args, false, &w, &rc)) return rc;
  if (!w.backing) return UsageError("create: missing -b BACKING");
  if (w.positional.size() != 1) return UsageError("create: expected exactly one NEW image");
  std::string new_path = Absolute(w.positional[0]);
  // The backing string is recorded as given; a relative one is relative to
  // the new image's directory, as qemu-img create -b does.
  core::Result<core::BackingRef> ref = core::ClassifyBacking(*w.backing, new_path);
  if (!ref.ok()) return Refused("create", ref.status());
  if (!ref->IsLocal()) {
    return Refused("create", core::Status(core::Code::kInvalidArgument,
                                          "create takes a file as backing; for network storage "
                                          "use chainctl rebase -u -F FMT"));
  }
  core::TrustContext trust = ctx.catalog.MakeTrustContext(ctx.inspector);
  core::Status s = core::CreateOverlay(ctx.inspector, new_path, *w.backing, ref->resolved_path,
                                       w.format, trust);
  if (!s.ok()) return Refused("create", s);
  return kExitOk;
}

int CmdRebase(Context& ctx, const std::vector<std::string>& args) {
  WriteArgs w;
  int rc = 0;
  if (!ParseWriteArgs("rebase", args, true, &w, &rc)) return rc;
  if (!w.backing) return UsageError("rebase: missing -b BACKING");
  if (w.positional.size() != 1) return UsageError("rebase: expected exactly one IMAGE");
  std::string path = Absolute(w.positional[0]);
  core::TrustContext trust = ctx.catalog.MakeTrustContext(ctx.inspector);
  if (!w.unsafe) {
    // A progress bar on a terminal, as qemu-img -p does; nothing otherwise.
    bool tty = ::isatty(STDERR_FILENO);
    int last_percent = -1;
    core::ProgressFn progress = [&](uint64_t done, uint64_t total) {
      if (!tty) return;
      int percent = total ? int(done * 100 / total) : 100;
      if (percent == last_percent) return;
      last_percent = percent;
      int bar = percent / 4;
      std::fprintf(stderr, "\r    (%3d.00/100%%) [%-25s]", percent, std::string(size_t(bar), '#').c_str());
      std::fflush(stderr);
    };
    std::optional<std::string> target;
    if (!w.backing->empty()) target = *w.backing;
    core::Status s = core::SafeRebase(ctx.inspector, path, target, w.format, trust, progress);
    if (tty && last_percent >= 0) std::fputc('\n', stderr);
    if (!s.ok()) return Refused("rebase", s);
    return kExitOk;
  }
  core::Status s = w.format ? core::Retarget(ctx.inspector, path, *w.backing, *w.format, trust)
                            : core::Retarget(ctx.inspector, path, *w.backing, trust);
  if (!s.ok()) return Refused("rebase", s);
  return kExitOk;
}

// Prints the lines a domain folder load skipped, when the user named it.
void ReportSkipped(const Context& ctx, const core::DomainSet& set) {
  if (!ctx.domains_named) return;
  for (const std::string& line : set.skipped) {
    std::fprintf(stderr, "chainctl: skipped %s\n", core::OneLine(line).c_str());
  }
}

int CmdDomains(Context& ctx, const std::vector<std::string>& args) {
  if (!args.empty()) return UsageError("domains: unexpected argument '" + args[0] + "'");
  core::DomainSet set = core::LoadDomains(ctx.domains);
  ReportSkipped(ctx, set);
  std::string out;
  for (const auto& [name, entry] : set.domains) out += core::RenderDomainLine(*entry);
  return WriteOut(out) ? kExitOk : kExitError;
}

// Every disk chain of every domain and every volume chain of every pool,
// for `users`.
std::vector<core::ChainOwner> AllOwners(Context& ctx, const core::DomainSet& set) {
  std::vector<core::ChainOwner> owners;
  for (const auto& [name, entry] : set.domains) {
    core::DiskContext dctx = core::MakeDiskContext(ctx.catalog, name);
    for (const core::DiskDef& d : entry->def.disks) {
      const core::DiskDef* shown = core::ShownDisk(*entry, d.target);
      owners.push_back({name + "/" + d.target,
                        std::make_shared<const Chain>(
                            core::ResolveShownDisk(ctx.inspector, *entry, *shown, dctx))});
    }
  }
  core::ResolveOptions opts;
  opts.locate = ctx.catalog.MakeLocator();
  for (const core::PoolDef& pool : ctx.catalog.Pools()) {
    std::shared_ptr<const core::PoolScan> scan = ctx.catalog.Scan(pool.name);
    if (!scan) continue;
    for (const core::VolumeEntry& v : scan->volumes) {
      owners.push_back({pool.name + "/" + v.name,
                        std::make_shared<const Chain>(core::ResolveChain(ctx.inspector, v.path, opts))});
    }
  }
  return owners;
}

int CmdUsers(Context& ctx, const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("users: expected exactly one IMAGE");
  if (!args[0].empty() && args[0][0] == '-') return UsageError("users: unknown option '" + args[0] + "'");
  std::string path = Absolute(args[0]);
  core::Result<core::FileStat> st = core::StatPath(path);
  if (!st.ok()) {
    std::fprintf(stderr, "chainctl: %s\n", core::OneLine(st.status().message()).c_str());
    return kExitError;
  }
  core::DomainSet set = core::LoadDomains(ctx.domains);
  ReportSkipped(ctx, set);
  std::optional<std::string> self = ctx.catalog.Locate(path);
  std::vector<std::string> users =
      core::UsersOf(AllOwners(ctx, set), st->id.dev, st->id.ino, self.value_or(""));
  return WriteOut(core::RenderUsers(users)) ? kExitOk : kExitError;
}

// "1 volume", "2 volumes".
std::string Count(size_t n, std::string_view one, std::string_view many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

// One chain `check --all` looked at: its owner as the mount names it
// ("POOL/VOLUME", ".domains/DOMAIN/TARGET") and what `problems` shows.
struct Checked {
  std::string owner;
  Chain chain;
  std::vector<core::Problem> problems;
};

int CmdCheckAll(Context& ctx, bool json) {
  core::DomainSet set = core::LoadDomains(ctx.domains);
  ReportSkipped(ctx, set);
  std::vector<Checked> checked;
  size_t pools = 0, volumes = 0, disks = 0;
  bool unreadable_pool = false;
  core::ResolveOptions opts;
  opts.locate = ctx.catalog.MakeLocator();
  for (const core::PoolDef& pool : ctx.catalog.Pools()) {
    if (!pool.Browsable()) continue;
    std::shared_ptr<const core::PoolScan> scan = ctx.catalog.Scan(pool.name);
    if (!scan || !scan->status.ok()) {
      std::fprintf(stderr, "chainctl: pool '%s': %s\n", core::OneLine(pool.name).c_str(),
                   scan ? core::OneLine(scan->status.message()).c_str() : "cannot scan");
      unreadable_pool = true;
      continue;
    }
    ++pools;
    for (const core::VolumeEntry& v : scan->volumes) {
      ++volumes;
      Checked c{pool.name + "/" + v.name, core::ResolveChain(ctx.inspector, v.path, opts), {}};
      c.problems = c.chain.problems;
      for (core::Problem& p : core::InUseProblems(c.chain, core::ElementsHeldForWriting(c.chain))) {
        c.problems.push_back(std::move(p));
      }
      checked.push_back(std::move(c));
    }
  }
  for (const auto& [name, entry] : set.domains) {
    core::DiskContext dctx = core::MakeDiskContext(ctx.catalog, name);
    for (const core::DiskDef& d : entry->def.disks) {
      ++disks;
      const core::DiskDef* shown = core::ShownDisk(*entry, d.target);
      Checked c{".domains/" + name + "/" + d.target,
                core::ResolveShownDisk(ctx.inspector, *entry, *shown, dctx), {}};
      c.problems = c.chain.problems;
      checked.push_back(std::move(c));
    }
  }
  // The summary: what was looked at, then the problems by code.
  std::map<std::string, size_t> by_code;
  size_t problems = 0, chains = 0;
  std::vector<core::Problem> every;
  for (const Checked& c : checked) {
    if (!c.problems.empty()) ++chains;
    for (const core::Problem& p : c.problems) {
      ++by_code[std::string(core::ProblemCode(p.kind))];
      ++problems;
      every.push_back(p);
    }
  }
  std::vector<std::pair<std::string, size_t>> codes(by_code.begin(), by_code.end());
  std::stable_sort(codes.begin(), codes.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string summary =
      fmt::format("checked {} in {} and {} of {}: ", Count(volumes, "volume", "volumes"),
                  Count(pools, "pool", "pools"), Count(disks, "disk", "disks"),
                  Count(set.domains.size(), "domain", "domains"));
  if (problems == 0) {
    summary += "no problems";
  } else {
    summary += fmt::format("{} in {} (", Count(problems, "problem", "problems"),
                           Count(chains, "chain", "chains"));
    for (size_t k = 0; k < codes.size(); ++k) {
      summary += fmt::format("{}{} {}", k ? ", " : "", codes[k].first, codes[k].second);
    }
    summary += ")";
  }
  int rc = CheckExit(every);
  if (rc == kExitOk && unreadable_pool) rc = kExitError;
  std::string out;
  if (json) {
    core::Json doc = core::Json::MakeObject();
    core::Json looked = core::Json::MakeObject();
    looked.Set("pools", uint64_t(pools));
    looked.Set("volumes", uint64_t(volumes));
    looked.Set("domains", uint64_t(set.domains.size()));
    looked.Set("disks", uint64_t(disks));
    doc.Set("checked", std::move(looked));
    core::Json list = core::Json::MakeArray();
    for (const Checked& c : checked) {
      core::Json items = core::ProblemsJson(c.chain, c.problems);
      for (core::Json& item : items.as_array()) {
        core::Json o = core::Json::MakeObject();
        o.Set("owner", c.owner);
        for (auto& [key, value] : item.as_object()) o.Set(key, std::move(value));
        list.Push(std::move(o));
      }
    }
    doc.Set("problems", std::move(list));
    core::Json counts = core::Json::MakeObject();
    for (const auto& [code, n] : codes) counts.Set(code, uint64_t(n));
    doc.Set("counts", std::move(counts));
    doc.Set("summary", summary);
    doc.Set("exit", rc);
    out = doc.Dump(4) + "\n";
  } else {
    for (const Checked& c : checked) {
      std::string text = core::RenderProblemLines(c.problems);
      for (size_t pos = 0; pos < text.size();) {
        size_t nl = text.find('\n', pos);
        out += core::OneLine(c.owner) + " " + text.substr(pos, nl - pos) + "\n";
        pos = nl + 1;
      }
    }
    out += summary + "\n";
  }
  if (!WriteOut(out)) return kExitError;
  return rc;
}

int CmdTree(Context& ctx, const std::vector<std::string>& args) {
  bool dot = false;
  std::optional<std::string> only;
  for (const std::string& a : args) {
    if (a == "--dot") {
      dot = true;
    } else if (!a.empty() && a[0] == '-') {
      return UsageError("tree: unknown option '" + a + "'");
    } else if (!only) {
      only = a;
    } else {
      return UsageError("tree: expected at most one POOL");
    }
  }
  core::ResolveOptions opts;
  opts.locate = ctx.catalog.MakeLocator();
  std::vector<core::TreePool> pools;
  for (const core::PoolDef& pool : ctx.catalog.Pools()) {
    if (!pool.Browsable() || (only && pool.name != *only)) continue;
    std::shared_ptr<const core::PoolScan> scan = ctx.catalog.Scan(pool.name);
    if (!scan || !scan->status.ok()) {
      std::fprintf(stderr, "chainctl: pool '%s': %s\n", core::OneLine(pool.name).c_str(),
                   scan ? core::OneLine(scan->status.message()).c_str() : "cannot scan");
      continue;
    }
    core::TreePool tp;
    tp.name = pool.name;
    for (const core::VolumeEntry& v : scan->volumes) {
      tp.volumes.push_back(
          {v.name, std::make_shared<const Chain>(core::ResolveChain(ctx.inspector, v.path, opts))});
    }
    std::sort(tp.volumes.begin(), tp.volumes.end(),
              [](const core::TreeVolume& a, const core::TreeVolume& b) { return a.name < b.name; });
    pools.push_back(std::move(tp));
  }
  if (only && pools.empty()) {
    std::fprintf(stderr, "chainctl: no browsable pool '%s'\n", core::OneLine(*only).c_str());
    return kExitError;
  }
  std::string out;
  if (dot) {
    out = core::RenderTreeDot(pools);
  } else {
    for (size_t k = 0; k < pools.size(); ++k) {
      // One pool: exactly POOL/.tree. Several: each under its name.
      if (!only) out += (k ? "\n" : "") + fmt::format("[{}]\n", core::OneLine(pools[k].name));
      out += core::RenderPoolTree(pools[k]);
    }
  }
  return WriteOut(out) ? kExitOk : kExitError;
}

int CmdDomain(Context& ctx, const std::vector<std::string>& args) {
  std::string mode = "info";
  std::vector<std::string> positional;
  for (const std::string& a : args) {
    if (a == "--json" || a == "--output=json") {
      mode = "json";
    } else if (a == "--xml") {
      mode = "xml";
    } else if (a == "--check") {
      mode = "check";
    } else if (!a.empty() && a[0] == '-') {
      return UsageError("domain: unknown option '" + a + "'");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.empty() || positional.size() > 2) {
    return UsageError("domain: expected NAME or FILE.xml, and optionally a TARGET");
  }
  const std::string& which = positional[0];
  std::shared_ptr<const core::DomainEntry> entry;
  const bool is_file = which.find('/') != std::string::npos ||
                       (which.size() > 4 && which.substr(which.size() - 4) == ".xml");
  if (is_file) {
    core::Result<std::string> text = core::ReadSmallFile(which, core::kMaxDomainXmlBytes);
    if (!text.ok()) {
      std::fprintf(stderr, "chainctl: %s: %s\n", core::OneLine(which).c_str(),
                   core::OneLine(text.status().message()).c_str());
      return kExitError;
    }
    core::Result<core::DomainDef> def = core::ParseDomainXml(*text, Absolute(which));
    if (!def.ok()) {
      std::fprintf(stderr, "chainctl: %s: %s\n", core::OneLine(which).c_str(),
                   core::OneLine(def.status().message()).c_str());
      return kExitError;
    }
    core::DomainEntry e;
    e.def = std::move(def).value();
    entry = std::make_shared<const core::DomainEntry>(std::move(e));
  } else {
    core::DomainSet set = core::LoadDomains(ctx.domains);
    ReportSkipped(ctx, set);
    auto it = set.domains.find(which);
    if (it == set.domains.end()) {
      std::fprintf(stderr, "chainctl: no domain '%s' in %s\n", core::OneLine(which).c_str(),
                   ctx.domains.domain_dir.empty() ? "(no domain folder)"
                                                  : ctx.domains.domain_dir.c_str());
      return kExitError;
    }
    entry = it->second;
  }
  std::vector<const core::DiskDef*> disks;
  for (const core::DiskDef& d : entry->def.disks) {
    if (positional.size() == 2 && d.target != positional[1]) continue;
    disks.push_back(core::ShownDisk(*entry, d.target));
  }
  if (disks.empty()) {
    if (positional.size() == 2) {
      std::fprintf(stderr, "chainctl: domain '%s' has no disk '%s'\n",
                   core::OneLine(entry->def.name).c_str(), core::OneLine(positional[1]).c_str());
      return kExitError;
    }
    return kExitOk;
  }
  const bool one = positional.size() == 2;
  core::DiskContext dctx = core::MakeDiskContext(ctx.catalog, entry->def.name);
  std::string out;
  bool healthy = true;
  core::Json all = core::Json::MakeObject();
  std::map<std::string, Chain> chains;
  for (const core::DiskDef& d : entry->def.disks) {
    const core::DiskDef* shown = core::ShownDisk(*entry, d.target);
    chains.emplace(d.target, core::ResolveShownDisk(ctx.inspector, *entry, *shown, dctx));
  }
  for (size_t k = 0; k < disks.size(); ++k) {
    const core::DiskDef& disk = *disks[k];
    const Chain& chain = chains.at(disk.target);
    healthy = healthy && chain.healthy();
    if (mode == "xml") {
      out += core::RenderDomainDiskXml(disk, chain);
    } else if (mode == "json") {
      if (one) {
        out = core::RenderInfoJson(chain);
      } else {
        all.Set(disk.target, core::InfoJson(chain));
      }
    } else if (mode == "check") {
      std::string text = core::RenderProblems(chain);
      if (one) {
        out += text;
      } else {
        size_t pos = 0;
        while (pos < text.size()) {
          size_t nl = text.find('\n', pos);
          if (nl == std::string::npos) nl = text.size();
          out += disk.target + " " + text.substr(pos, nl - pos) + "\n";
          pos = nl + 1;
        }
      }
    } else {
      if (!one) out += (k ? "\n" : "") + fmt::format("[{}]\n", disk.target);
      out += core::RenderInfoText(chain);
    }
  }
  if (mode == "json" && !one) out = all.Dump(4) + "\n";
  if (!WriteOut(out)) return kExitError;
  if (mode == "check" && !healthy) return kExitProblems;
  return kExitOk;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  core::PoolSources sources;
  std::optional<std::string> domain_dir, run_dir;
  size_t i = 0;
  // Global options come before the command; `pools` also takes --pool-dir after it.
  auto take_global = [&](std::vector<std::string>& list, size_t& k, std::string* error) -> bool {
    const std::string& a = list[k];
    auto value = [&](const std::string& flag) -> std::optional<std::string> {
      if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
      if (a == flag) {
        if (k + 1 >= list.size()) {
          *error = flag + " needs a value";
          return std::nullopt;
        }
        return list[++k];
      }
      return std::nullopt;
    };
    if (a.rfind("--domain-dir", 0) == 0) {
      if (auto v = value("--domain-dir")) {
        domain_dir = *v;
        return true;
      }
    } else if (a.rfind("--run-dir", 0) == 0) {
      if (auto v = value("--run-dir")) {
        run_dir = *v;
        return true;
      }
    } else if (a.rfind("--pool-dir", 0) == 0) {
      if (auto v = value("--pool-dir")) {
        sources.pool_dir = *v;
        return true;
      }
    } else if (a.rfind("--pool", 0) == 0) {
      if (auto v = value("--pool")) {
        sources.pool_specs.push_back(*v);
        return true;
      }
    }
    return false;
  };
  std::string error;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (a == "--version") {
      std::printf("chainctl %s\n", CHAINFS_VERSION);
      return kExitOk;
    }
    if (take_global(args, i, &error)) continue;
    if (!error.empty()) return UsageError(error);
    if (!a.empty() && a[0] == '-') return UsageError("unknown option '" + a + "'");
    break;
  }
  if (i >= args.size()) return UsageError("missing COMMAND");
  std::string command = args[i];
  std::vector<std::string> rest;
  for (size_t k = i + 1; k < args.size(); ++k) {
    if (args[k] == "-h" || args[k] == "--help") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (take_global(args, k, &error)) continue;
    if (!error.empty()) return UsageError(error);
    rest.push_back(args[k]);
  }

  Context ctx;
  // What the user named must be readable: a typo must not silently drop a
  // pool (and with it the volume names, trust and fixes it gives).
  core::Status named = core::PoolCatalog::CheckExplicitSources(sources);
  if (!named.ok()) {
    std::fprintf(stderr, "chainctl: %s\n", named.message().c_str());
    return 2;
  }
  core::Result<core::PoolLoad> load = core::PoolCatalog::LoadPools(sources);
  if (!load.ok()) return UsageError(load.status().message());
  // A missing default pool folder is normal on a host without libvirt; say
  // nothing unless the user named the folder.
  if (sources.pool_dir || command == "pools") {
    for (const std::string& line : load->skipped) std::fprintf(stderr, "chainctl: skipped %s\n", line.c_str());
  }
  ctx.catalog.SetPools(std::move(load->pools));
  core::Status domains_named = core::CheckDomainSources(domain_dir, run_dir);
  if (!domains_named.ok()) {
    std::fprintf(stderr, "chainctl: %s\n", domains_named.message().c_str());
    return 2;
  }
  ctx.domains = core::ChooseDomainSources(sources.pool_dir || !sources.pool_specs.empty(),
                                          domain_dir, run_dir);
  ctx.domains_named = domain_dir || run_dir;

  if (command == "info") return CmdInfo(ctx, rest);
  if (command == "chain") return CmdChain(ctx, rest);
  if (command == "check") return CmdCheck(ctx, rest);
  if (command == "xml") return CmdXml(ctx, rest);
  if (command == "pools") return CmdPools(ctx, rest);
  if (command == "map") return CmdMap(ctx, rest);
  if (command == "cat") return CmdCat(ctx, rest);
  if (command == "create") return CmdCreate(ctx, rest);
  if (command == "rebase") return CmdRebase(ctx, rest);
  if (command == "domains") return CmdDomains(ctx, rest);
  if (command == "domain") return CmdDomain(ctx, rest);
  if (command == "users") return CmdUsers(ctx, rest);
  if (command == "tree") return CmdTree(ctx, rest);
  return UsageError("unknown command '" + command + "'");
}

}  // namespace
}  // namespace chainfs::tools

int main(int argc, char** argv) {
  try {
    return chainfs::tools::Main(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "chainctl: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chainctl: %s\n", e.what());
  }
  return 2;
}
