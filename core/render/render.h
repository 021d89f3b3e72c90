// Renderers: every document the mount serves and chainctl prints comes from
// here, so both are byte-identical (DESIGN section 5). All are pure functions
// of their arguments and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/chain/chain.h"
#include "core/pool/pool_def.h"
#include "core/util/json.h"

namespace chainfs::core {

// `info`: the whole chain, qemu-img info --backing-chain style (one block per
// element, separated by a blank line), then "Problems:" and the problem
// lines when there are any.
std::string RenderInfoText(const Chain& chain);

// `info.json`: a JSON array, top to base, with qemu-img's key names.
Json InfoJson(const Chain& chain);
// Renders InfoJson with 4-space indentation and a final newline.
std::string RenderInfoJson(const Chain& chain);

// `problems`: "" when healthy; else "<index>: <message> -- fix: <fix>\n" per
// problem (" -- fix: ..." left out when a problem has no fix).
std::string RenderProblems(const Chain& chain);
// The same lines for any list of problems.
std::string RenderProblemLines(const std::vector<Problem>& problems);
// The notes (ProblemKind::kInUse) for the elements `held` (indexes) that a
// process holds for writing (core/write/in_use.h), saying that the guest
// data may change while it is read.
std::vector<Problem> InUseProblems(const Chain& chain, const std::vector<int>& held);
// The lines `problems` adds for them: "<index>: in use: ...". "" if none.
std::string RenderInUse(const Chain& chain, const std::vector<int>& held);

// `problems.json`: a JSON array, one object per problem, in the order of
// `problems`: index, path (of the element; null past the chain's end),
// code (ProblemCode), severity ("error" or "warning"), message, fix (the
// line `problems` shows), fixes ([{kind, text}], what a script can apply).
Json ProblemsJson(const Chain& chain, const std::vector<Problem>& problems);
// `problems.json` of a chain: its problems, then the in-use notes of the
// elements `held`; 4-space indentation and a final newline ("[]\n" when
// healthy).
std::string RenderProblemsJson(const Chain& chain, const std::vector<int>& held);

// `volume.xml`: as `virsh vol-dumpxml` (element 0, one-level backingStore).
std::string RenderVolumeXml(const Chain& chain);

// `disk.xml`: a domain <disk> with nested <backingStore index='N'> for every
// element, closed by an empty <backingStore/> when the chain is complete.
std::string RenderDiskXml(const Chain& chain);

// `chainctl chain`: one line per element: "index format path".
std::string RenderChainList(const Chain& chain);

// Sizes of a pool's filesystem, from statvfs.
struct PoolSpace {
  uint64_t capacity = 0;   // f_frsize * f_blocks
  uint64_t available = 0;  // f_bfree * f_frsize
};
// Reads statvfs of the pool's target path; zeros when it cannot be read.
PoolSpace StatPoolSpace(const PoolDef& pool);
// `.pool.xml`: as `virsh pool-dumpxml` (allocation = capacity - available).
// Target permissions follow the target directory's stat.
std::string RenderPoolXml(const PoolDef& pool, const PoolSpace& space);

// Per-element one-value files ("format", "backing", "backing_format",
// "capacity", "allocation", "path"): the value and a newline, "" for an
// absent backing or backing format. Unknown field names give "".
std::string RenderElementField(const ChainElement& element, std::string_view field);

}  // namespace chainfs::core
