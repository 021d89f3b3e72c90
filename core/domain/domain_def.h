// libvirt domain definitions (/etc/libvirt/qemu/*.xml) and the status files
// of running domains (/run/libvirt/qemu/*.xml, a <domstatus> around the
// live <domain>), parsed with pugixml: what chainfs needs of each disk to
// resolve its chain as libvirt does (DESIGN section 8).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/chain/backing_ref.h"
#include "core/status.h"

namespace chainfs::core {

// One storage source of a disk: the disk's own <source> or one of its
// explicit <backingStore> elements. A value type.
struct DiskSource {
  std::string type;    // libvirt's storage type: file, block, network, volume, dir, nvme, ...
  std::string format;  // the top's <driver type> (as written, "" when absent); a
                       // <backingStore>'s <format type>
  std::string path;    // file= / dev= / dir= ("" when the source names none)
  // type='network': protocol, name, the first host; `hosts` lists every
  // host as written ("name:port", "unix:/socket").
  std::optional<NetworkSource> network;
  std::vector<std::string> hosts;
  std::string auth_username;  // <auth username=...> ("" when none)
  std::string secret;         // <auth><secret type=... usage|uuid=...>, "type:usage-or-uuid"
  std::string pool, volume;   // type='volume'
  std::optional<int> index;   // the index attribute, as written (live XML)
  // Returns true if the source names something to open (a path, a
  // network location or a pool volume).
  bool HasLocation() const;
  // Returns what `source` shows: the path, "POOL/VOLUME", or the network
  // URI ("nbd://host:port/name", "gluster://host/vol/path", "rbd:pool/image").
  std::string Describe() const;
};

// One <disk> of a domain. A value type.
struct DiskDef {
  std::string target;  // <target dev>
  std::string bus;     // <target bus>
  std::string device;  // disk, cdrom, floppy, lun
  DiskSource top;
  std::vector<DiskSource> backing;  // explicit <backingStore> elements, top down
  bool terminated = false;          // the explicit chain ends with an empty <backingStore/>
  bool read_only = false;           // <readonly/>
  std::string xml;                  // the <disk> element as written
  // What libvirt's parser would refuse in this disk ("missing disk backing
  // store format"), one line each; the chain is not resolved past them.
  std::vector<std::string> errors;
};

// One domain. A value type.
struct DomainDef {
  std::string name;
  std::string uuid;
  std::string type;    // kvm, qemu
  std::string origin;  // the file it was read from
  std::string xml;     // the document as read (the <domain> element for a status file)
  std::vector<DiskDef> disks;  // in document order
};

// A running domain's status file.
struct DomainStatus {
  std::string state;  // <domstatus state>: running, paused, ...
  std::string pid;
  DomainDef live;     // its <domain>: the chains libvirt resolved at start
};

// Largest definition or status file read (libvirt's own are a few KiB).
inline constexpr size_t kMaxDomainXmlBytes = 4 << 20;

// Parses a <domain> document. kInvalidArgument (with the reason) for XML
// that is not well-formed, another root, no <name>, or a name that cannot be
// a directory of the mount. A disk with a bad element is kept with its
// `errors` set; disks without a <target dev> are left out.
Result<DomainDef> ParseDomainXml(std::string_view xml, std::string_view origin);

// Parses a <domstatus> document (its <domain> child is the live definition).
Result<DomainStatus> ParseDomainStatus(std::string_view xml, std::string_view origin);

// Returns true if `name` can be a directory of the mount (not "", ".",
// "..", no '/', no control characters).
bool IsDirectoryName(std::string_view name);

}  // namespace chainfs::core
