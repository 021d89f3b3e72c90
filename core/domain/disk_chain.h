// The chain of a domain disk, resolved with libvirt's rules for domain disks
// (DESIGN section 8; libvirt's qemuDomainDetermineDiskChain), and the
// drift between a running domain's live chain and what its images record.
#pragma once

#include <functional>
#include <string>

#include "core/chain/chain.h"
#include "core/chain/inspector.h"
#include "core/chain/resolver.h"
#include "core/domain/domain_def.h"

namespace chainfs::core {

// What resolving a domain disk needs from its surroundings.
struct DiskContext {
  std::string domain;  // the domain's name, for fixes ("virsh edit NAME")
  // Resolves <source pool= volume=> to the volume's absolute path; an error
  // carries libvirt's message ("storage pool 'P' not found").
  std::function<Result<std::string>(const std::string& pool, const std::string& volume)>
      resolve_volume;
  VolumeLocator locate;   // phrases image fixes as file operations (may be empty)
  std::string access_as;  // "uid:N, gid:N": who libvirt accesses images as
};

// Resolves `disk` as libvirt does when it starts the domain:
// - the top's format is <driver type>, "raw" when absent (a volume disk's
//   is its volume's), never probed; a raw top has no backing;
// - <backingStore> elements are used as given (origin kXml), never probed;
//   an empty <backingStore/> ends the chain;
// - a chain given in part (or none) is continued from its last element by
//   the image rules of DESIGN section 3;
// - network elements are shown parsed, never opened, and a problem says
//   why their chain is or is not followed.
// Never fails: what stops a start is a Problem with libvirt's message and
// both fixes (the image's and the domain definition's).
Chain ResolveDiskChain(ImageInspector& inspector, const DiskDef& disk, const DiskContext& context);

// For a running domain: `live` is the chain of the live XML (taken as
// given); adds a kDrift problem for every element whose image no longer
// records what QEMU was started on (another backing, another format, no
// backing, or an image gone or replaced since the start).
void AddDrift(ImageInspector& inspector, Chain& live, const DiskContext& context);

// Returns the uid and gid libvirt's QEMU driver accesses images as on this
// host ("uid:N, gid:N"): the libvirt-qemu user when it exists, else root's.
std::string DefaultAccessAs();

// Returns true if images of `format` can record a backing file.
bool FormatCanHaveBacking(std::string_view format);

}  // namespace chainfs::core
