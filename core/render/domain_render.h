// Renderers of the domains' view (DESIGN section 8): shared by the mount's
// .domains tree and chainctl's domain commands, so both are byte-identical.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/chain/chain.h"
#include "core/domain/domain_catalog.h"
#include "core/domain/domain_def.h"

namespace chainfs::core {

// `disk.xml` of a domain disk: the <disk> element as libvirt's live XML
// shows it once started. The definition's own elements are kept, the
// <source> gets its index, explicit <backingStore> elements are kept with
// theirs and detected ones appended, closed by an empty <backingStore/>
// when the chain was walked to its end. Indexes are the live XML's when the
// elements carry them (a running domain's status file), else the top is 1
// and each backing element the next number. "" when the disk's XML cannot
// be re-read.
std::string RenderDomainDiskXml(const DiskDef& disk, const Chain& chain);

// The one-value files of a disk directory: "source" (path, device, URI or
// POOL/VOLUME), "type" (file, block, network, volume, ...), "format" (the
// format in use for the top). Unknown names give "".
std::string RenderDiskField(const DiskDef& disk, const Chain& chain, std::string_view field);

// `chain/N/origin`: "xml" or "metadata".
std::string RenderElementOrigin(const ChainElement& element);
// `chain/N/index`: the index libvirt's live XML gives the element.
std::string RenderElementIndex(const Chain& chain, size_t i);

// One line of `chainctl domains`: NAME TAB STATE TAB TARGET=SOURCE ...
std::string RenderDomainLine(const DomainEntry& entry);

// `state`, `uuid` of a domain directory.
std::string RenderDomainState(const DomainEntry& entry);
std::string RenderDomainUuid(const DomainEntry& entry);

// `VOL/users` and `chainctl users`: the users one a line ("" when none).
std::string RenderUsers(const std::vector<std::string>& users);

}  // namespace chainfs::core
