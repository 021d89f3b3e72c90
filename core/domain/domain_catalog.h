// DomainCatalog: the domains chainfs shows (DESIGN section 8): definitions
// from the domain folder, live state from the run folder's status files.
// Cached, and revalidated on every use by re-stating both folders, which
// libvirt changes whenever it defines, undefines, starts or stops a domain
// (it writes each file anew and renames it into place), so a change shows
// on the next access.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/domain/domain_def.h"
#include "core/io/file.h"

namespace chainfs::core {

inline constexpr const char* kDefaultDomainDir = "/etc/libvirt/qemu";
inline constexpr const char* kDefaultRunDir = "/run/libvirt/qemu";

// Where the domains come from ("" = not read).
struct DomainSources {
  std::string domain_dir;
  std::string run_dir;
};

// One domain: its definition and, while it runs, its status file.
struct DomainEntry {
  DomainDef def;                       // the definition (for a transient domain, the live one)
  std::optional<DomainStatus> status;  // set while a status file exists
  bool defined = true;                 // false for a transient domain (status file only)
  // "running" or "shut off" (libvirt's other states as it names them).
  std::string State() const;
  bool running() const { return status.has_value(); }
  // Returns the disk `target` of the definition, or nullptr.
  const DiskDef* FindDisk(const std::string& target) const;
  // Returns the same disk as the live XML has it, or nullptr.
  const DiskDef* FindLiveDisk(const std::string& target) const;
};

// One load of both folders. Immutable once built.
struct DomainSet {
  std::map<std::string, std::shared_ptr<const DomainEntry>> domains;  // by name
  std::vector<std::string> skipped;  // "file: reason", one per file not used
  uint64_t generation = 0;           // bumps with every reload
};

// Thread-safe; lock order: mu_ only, never held while reading the folders.
class DomainCatalog {
 public:
  DomainCatalog() = default;
  DomainCatalog(const DomainCatalog&) = delete;
  DomainCatalog& operator=(const DomainCatalog&) = delete;

  // Sets the folders and drops the cached load.
  void SetSources(DomainSources sources);
  DomainSources sources() const;
  // Returns true if any folder is set.
  bool enabled() const;
  // Returns the current set, reloading it when a folder changed (or after
  // Invalidate). Never fails: an unreadable folder or file is a skipped line.
  std::shared_ptr<const DomainSet> Current();
  // Returns one domain of Current(), or nullptr.
  std::shared_ptr<const DomainEntry> Find(const std::string& name);
  // Forces the next Current() to reread (SIGHUP).
  void Invalidate();

 private:
  struct Stamp {
    std::optional<FileIdentity> domain_dir, run_dir;
    bool operator==(const Stamp&) const = default;
  };
  Stamp TakeStamp(const DomainSources& sources) const;

  mutable std::mutex mu_;
  DomainSources sources_;                  // guarded by mu_
  std::shared_ptr<const DomainSet> set_;   // guarded by mu_
  std::optional<Stamp> stamp_;             // guarded by mu_; the folders when set_ was read
  uint64_t generation_ = 0;                // guarded by mu_
};

// Decides the folders from the command line (chainfs and chainctl alike):
// --domain-dir when given, else /etc/libvirt/qemu when no pool source is
// named either (`pools_named`: --pool-dir or --pool given); --run-dir when
// given, else /run/libvirt/qemu when the domain folder is the default one
// (status files of another host's definitions would not match them).
DomainSources ChooseDomainSources(bool pools_named, const std::optional<std::string>& domain_dir,
                                  const std::optional<std::string>& run_dir);

// Checks that the folders the user named can be read ("--domain-dir DIR:
// No such file or directory"), as PoolCatalog::CheckExplicitSources.
Status CheckDomainSources(const std::optional<std::string>& domain_dir,
                          const std::optional<std::string>& run_dir);

// Reads both folders once (what DomainCatalog caches); for chainctl.
DomainSet LoadDomains(const DomainSources& sources);

}  // namespace chainfs::core
