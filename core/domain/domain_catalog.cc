#include "core/domain/domain_catalog.h"

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/util/small_file.h"

namespace chainfs::core {
namespace {

// The *.xml files of a folder, sorted; "" and one skipped line when it
// cannot be read.
std::vector<std::string> XmlFiles(const std::string& dir, std::vector<std::string>& skipped) {
  std::vector<std::string> files;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    int err = errno;
    skipped.push_back(fmt::format("{}: cannot open folder: {}", dir, std::strerror(err)));
    return files;
  }
  while (dirent* entry = ::readdir(d)) {
    std::string_view name = entry->d_name;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".xml" && name[0] != '.') {
      files.emplace_back(name);
    }
  }
  ::closedir(d);
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::string DomainEntry::State() const {
  if (!status) return "shut off";
  const std::string& s = status->state;
  if (s.empty() || s == "running") return "running";
  if (s == "shutoff") return "shut off";
  if (s == "pmsuspended") return "pmsuspended";
  return s;  // paused, shutdown, crashed, blocked: as virsh domstate names them
}

const DiskDef* DomainEntry::FindDisk(const std::string& target) const {
  for (const DiskDef& d : def.disks) {
    if (d.target == target) return &d;
  }
  return nullptr;
}

const DiskDef* DomainEntry::FindLiveDisk(const std::string& target) const {
  if (!status) return nullptr;
  for (const DiskDef& d : status->live.disks) {
    if (d.target == target) return &d;
  }
  return nullptr;
}

DomainSet LoadDomains(const DomainSources& sources) {
  DomainSet set;
  std::map<std::string, DomainEntry> entries;
  if (!sources.domain_dir.empty()) {
    for (const std::string& file : XmlFiles(sources.domain_dir, set.skipped)) {
      std::string path = sources.domain_dir + "/" + file;
      Result<std::string> text = ReadSmallFile(path, kMaxDomainXmlBytes);
      if (!text.ok()) {
        set.skipped.push_back(fmt::format("{}: {}", path, text.status().message()));
        continue;
      }
      Result<DomainDef> def = ParseDomainXml(*text, path);
      if (!def.ok()) {
        set.skipped.push_back(fmt::format("{}: {}", path, def.status().message()));
        continue;
      }
      if (entries.count(def->name)) {
        set.skipped.push_back(
            fmt::format("{}: domain '{}' is defined by an earlier file", path, def->name));
        continue;
      }
      std::string name = def->name;
      DomainEntry e;
      e.def = std::move(def).value();
      entries.emplace(name, std::move(e));
    }
  }
  if (!sources.run_dir.empty()) {
    for (const std::string& file : XmlFiles(sources.run_dir, set.skipped)) {
      std::string path = sources.run_dir + "/" + file;
      Result<std::string> text = ReadSmallFile(path, kMaxDomainXmlBytes);
      if (!text.ok()) {
        set.skipped.push_back(fmt::format("{}: {}", path, text.status().message()));
        continue;
      }
      Result<DomainStatus> status = ParseDomainStatus(*text, path);
      if (!status.ok()) {
        set.skipped.push_back(fmt::format("{}: {}", path, status.status().message()));
        continue;
      }
      std::string name = status->live.name;
      auto it = entries.find(name);
      if (it == entries.end()) {
        // A transient domain (virsh create): only its live definition exists.
        DomainEntry e;
        e.def = status->live;
        e.defined = false;
        it = entries.emplace(name, std::move(e)).first;
      }
      it->second.status = std::move(status).value();
    }
  }
  for (auto& [name, e] : entries) {
    set.domains.emplace(name, std::make_shared<const DomainEntry>(std::move(e)));
  }
  return set;
}

DomainSources ChooseDomainSources(bool pools_named, const std::optional<std::string>& domain_dir,
                                  const std::optional<std::string>& run_dir) {
  DomainSources s;
  bool default_dir = false;
  if (domain_dir) {
    s.domain_dir = *domain_dir;
  } else if (!pools_named) {
    s.domain_dir = kDefaultDomainDir;
    default_dir = true;
  }
  if (run_dir) {
    s.run_dir = *run_dir;
  } else if (default_dir) {
    s.run_dir = kDefaultRunDir;
  }
  return s;
}

Status CheckDomainSources(const std::optional<std::string>& domain_dir,
                          const std::optional<std::string>& run_dir) {
  for (const auto& [flag, dir] : {std::pair{"--domain-dir", domain_dir}, std::pair{"--run-dir", run_dir}}) {
    if (!dir || dir->empty()) continue;
    DIR* d = ::opendir(dir->c_str());
    if (!d) {
      int err = errno;
      return Error(Code::kNotFound, "{} {}: {}", flag, *dir, std::strerror(err));
    }
    ::closedir(d);
  }
  return Status::Ok();
}

void DomainCatalog::SetSources(DomainSources sources) {
  std::lock_guard<std::mutex> lock(mu_);
  sources_ = std::move(sources);
  set_.reset();
  stamp_.reset();
}

DomainSources DomainCatalog::sources() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sources_;
}

bool DomainCatalog::enabled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !sources_.domain_dir.empty() || !sources_.run_dir.empty();
}

DomainCatalog::Stamp DomainCatalog::TakeStamp(const DomainSources& sources) const {
  Stamp s;
  if (!sources.domain_dir.empty()) {
    if (Result<FileStat> st = StatPath(sources.domain_dir); st.ok()) s.domain_dir = st->id;
  }
  if (!sources.run_dir.empty()) {
    if (Result<FileStat> st = StatPath(sources.run_dir); st.ok()) s.run_dir = st->id;
  }
  return s;
}

std::shared_ptr<const DomainSet> DomainCatalog::Current() {
  DomainSources sources;
  {
    std::lock_guard<std::mutex> lock(mu_);
    sources = sources_;
  }
  // The stamp is taken before the folders are read: a change during the
  // read leaves a stale stamp, so the next use reads again.
  Stamp now = TakeStamp(sources);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (set_ && stamp_ && *stamp_ == now) return set_;
  }
  auto fresh = std::make_shared<DomainSet>(LoadDomains(sources));
  std::lock_guard<std::mutex> lock(mu_);
  fresh->generation = ++generation_;
  set_ = fresh;
  stamp_ = now;
  return set_;
}

std::shared_ptr<const DomainEntry> DomainCatalog::Find(const std::string& name) {
  std::shared_ptr<const DomainSet> set = Current();
  auto it = set->domains.find(name);
  return it == set->domains.end() ? nullptr : it->second;
}

void DomainCatalog::Invalidate() {
  std::lock_guard<std::mutex> lock(mu_);
  stamp_.reset();
}

}  // namespace chainfs::core
