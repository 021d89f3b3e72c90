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
// `indexes` numbers the elements when the chain carries no live indexes
// (DomainIndexes); empty: the top is 1 and each backing element the next.
std::string RenderDomainDiskXml(const DiskDef& disk, const Chain& chain,
                                const std::vector<int>& indexes = {});

// How many backing elements disk.xml spells out for `chain` (those below
// the top up to the first libvirt could not name).
size_t ShownBackingCount(const Chain& chain);

// The index libvirt 9.0's live XML gives each element of disk `target` of
// a domain when it starts: the tops of the disks that have a source first,
// numbered 1, 2, ... in reverse document order, then the backing elements,
// disk by disk in reverse document order and top down within a disk.
// `backing_count(disk)` is ShownBackingCount of that disk's chain. Returns
// one index per element of the disk's shown chain (top first).
std::vector<int> DomainIndexes(const DomainDef& def, const std::string& target,
                               const std::function<size_t(const DiskDef&)>& backing_count);

// The one-value files of a disk directory: "source" (path, device, URI or
// POOL/VOLUME), "type" (file, block, network, volume, ...), "format" (the
// format in use for the top). Unknown names give "".
std::string RenderDiskField(const DiskDef& disk, const Chain& chain, std::string_view field);

// `chain/N/origin`: "xml" or "metadata".
std::string RenderElementOrigin(const ChainElement& element);
// `chain/N/index`: the index libvirt's live XML gives the element.
std::string RenderElementIndex(const Chain& chain, size_t i, const std::vector<int>& indexes = {});

// One line of `chainctl domains`: NAME TAB STATE TAB TARGET=SOURCE ...
std::string RenderDomainLine(const DomainEntry& entry);

// `state`, `uuid` of a domain directory.
std::string RenderDomainState(const DomainEntry& entry);
std::string RenderDomainUuid(const DomainEntry& entry);

// `VOL/users` and `chainctl users`: the users one a line ("" when none).
std::string RenderUsers(const std::vector<std::string>& users);

}  // namespace chainfs::core
