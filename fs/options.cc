#include "fs/options.h"

#include <cerrno>
#include <cstdlib>

namespace chainfs::fs {

namespace {

using core::Code;
using core::Error;

// Splits a -o list on commas.
std::vector<std::string> SplitOptions(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) out.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

core::Status TakeOption(const std::string& opt, MountOptions& o) {
  auto value_of = [&](const char* name) -> const char* {
    size_t n = std::char_traits<char>::length(name);
    return opt.compare(0, n, name) == 0 ? opt.c_str() + n : nullptr;
  };
  if (const char* v = value_of("pool_dir=")) {
    if (!*v) return Error(Code::kInvalidArgument, "pool_dir= needs a folder");
    o.sources.pool_dir = v;
  } else if (const char* v = value_of("pool=")) {
    o.sources.pool_specs.emplace_back(v);
  } else if (const char* v = value_of("domain_dir=")) {
    if (!*v) return Error(Code::kInvalidArgument, "domain_dir= needs a folder");
    o.domain_dir = v;
  } else if (const char* v = value_of("run_dir=")) {
    if (!*v) return Error(Code::kInvalidArgument, "run_dir= needs a folder");
    o.run_dir = v;
  } else if (const char* v = value_of("cache_timeout=")) {
    char* end = nullptr;
    errno = 0;
    double t = std::strtod(v, &end);
    if (!*v || *end || errno != 0 || !(t >= 0.0) || t > 86400.0) {
      return Error(Code::kInvalidArgument, "cache_timeout= needs seconds between 0 and 86400");
    }
    o.cache_timeout = t;
  } else {
    // ro stays in the daemon: a kernel read-only mount would refuse changes
    // before they reach chainfs, so they could not be logged (DESIGN 2).
    if (opt == "ro" || opt == "rw") {
      o.read_only = opt == "ro";
      return core::Status::Ok();
    }
    // default_permissions is always on; fsname/subtype are ours.
    if (opt == "default_permissions" || opt.rfind("fsname=", 0) == 0 ||
        opt.rfind("subtype=", 0) == 0) {
      return core::Status::Ok();
    }
    o.fuse_options.push_back(opt);
  }
  return core::Status::Ok();
}

}  // namespace

const char* MountUsage() {
  return "Usage: chainfs [OPTIONS] MOUNTPOINT\n"
         "       chainfs --demo [OPTIONS] MOUNTPOINT\n"
         "       chainfs SOURCE MOUNTPOINT -o OPTIONS     (as run by mount.fuse3)\n"
         "\n"
         "Shows libvirt storage pools and the backing chains of their images.\n"
         "\n"
         "Options:\n"
         "  --pool-dir DIR        read pool definitions from DIR (default\n"
         "                        /etc/libvirt/storage, read when no --pool is given)\n"
         "  --pool NAME=PATH      add an ad-hoc dir pool (repeatable)\n"
         "  --domain-dir DIR      read domain definitions from DIR for MOUNT/.domains\n"
         "                        (default /etc/libvirt/qemu, read when no pool option\n"
         "                        is given)\n"
         "  --run-dir DIR         read running domains' status files from DIR (default\n"
         "                        /run/libvirt/qemu with the default domain folder)\n"
         "  --demo                make a sample pool in a temporary folder and mount it\n"
         "  -o OPT[,OPT...]       mount options: ro, allow_other, pool_dir=DIR,\n"
         "                        pool=NAME=PATH, domain_dir=DIR, run_dir=DIR,\n"
         "                        cache_timeout=SECONDS, and libfuse's\n"
         "  -f                    stay in the foreground\n"
         "  -d                    debug: foreground, print every FUSE request\n"
         "  -h, --help            show this help\n"
         "  -V, --version         show the version\n"
         "\n"
         "Unmount with 'fusermount3 -u MOUNTPOINT' or SIGTERM. See chainfs(1).\n";
}

core::Result<MountOptions> ParseMountOptions(const std::vector<std::string>& args) {
  MountOptions o;
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& flag) -> core::Result<std::string> {
      if (a.size() > flag.size() && a.compare(0, flag.size() + 1, flag + "=") == 0) {
        return a.substr(flag.size() + 1);
      }
      if (i + 1 >= args.size()) return Error(Code::kInvalidArgument, "{} needs a value", flag);
      return args[++i];
    };
    if (a == "-h" || a == "--help") {
      o.help = true;
    } else if (a == "-V" || a == "--version") {
      o.version = true;
    } else if (a == "-f") {
      o.foreground = true;
    } else if (a == "-d" || a == "--debug") {
      o.debug = true;
      o.foreground = true;
    } else if (a == "--demo") {
      o.demo = true;
    } else if (a == "--pool-dir" || a.rfind("--pool-dir=", 0) == 0) {
      auto v = value("--pool-dir");
      if (!v.ok()) return v.status();
      o.sources.pool_dir = *v;
    } else if (a == "--domain-dir" || a.rfind("--domain-dir=", 0) == 0) {
      auto v = value("--domain-dir");
      if (!v.ok()) return v.status();
      o.domain_dir = *v;
    } else if (a == "--run-dir" || a.rfind("--run-dir=", 0) == 0) {
      auto v = value("--run-dir");
      if (!v.ok()) return v.status();
      o.run_dir = *v;
    } else if (a == "--pool" || a.rfind("--pool=", 0) == 0) {
      auto v = value("--pool");
      if (!v.ok()) return v.status();
      o.sources.pool_specs.push_back(*v);
    } else if (a == "-o" || (a.size() > 2 && a.compare(0, 2, "-o") == 0)) {
      std::string list;
      if (a == "-o") {
        if (i + 1 >= args.size()) return Error(Code::kInvalidArgument, "-o needs options");
        list = args[++i];
      } else {
        list = a.substr(2);
      }
      for (const std::string& opt : SplitOptions(list)) CHAINFS_RETURN_IF_ERROR(TakeOption(opt, o));
    } else if (a == "--") {
      positional.insert(positional.end(), args.begin() + long(i) + 1, args.end());
      break;
    } else if (!a.empty() && a[0] == '-') {
      return Error(Code::kInvalidArgument, "unknown option '{}'", a);
    } else {
      positional.push_back(a);
    }
  }
  if (o.help || o.version) return o;
  if (positional.size() == 1) {
    o.mountpoint = positional[0];
  } else if (positional.size() == 2) {
    o.source = positional[0];
    o.mountpoint = positional[1];
  } else if (positional.empty()) {
    return Error(Code::kInvalidArgument, "missing MOUNTPOINT");
  } else {
    return Error(Code::kInvalidArgument, "too many arguments");
  }
  return o;
}

}  // namespace chainfs::fs
