// The data view of the tree (DESIGN section 9): the guest-visible bytes of
// a volume's chain (VOL/data), of the chain below element N
// (VOL/chain/N/data) and of a domain disk (.domains/D/T/data), and the
// allocation map (VOL/map, VOL/map.json). Tree methods; the dispatch is in
// fs/tree.cc and fs/operations.cc.
#include <sys/stat.h>

#include <algorithm>

#include "core/data/map_text.h"
#include "core/io/file.h"
#include "core/write/in_use.h"
#include "fs/tree.h"

namespace chainfs::fs {
namespace {

using core::Code;
using core::Error;
using core::Result;
using core::Status;


// The chain from element `from` down, as a chain of its own (what a guest
// would see with that element as its top).
core::Chain SubChain(const core::Chain& chain, size_t from) {
  if (from == 0) return chain;
  core::Chain sub;
  sub.complete = chain.complete;
  for (size_t i = from; i < chain.elements.size(); ++i) {
    core::ChainElement e = chain.elements[i];
    e.index = int(i - from);
    sub.elements.push_back(std::move(e));
  }
  for (const core::Problem& p : chain.problems) {
    if (p.index < int(from)) continue;
    core::Problem q = p;
    q.index -= int(from);
    sub.problems.push_back(std::move(q));
  }
  return sub;
}

bool Later(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
}

}  // namespace

bool Tree::IsDataNode(const NodeKey& key) {
  if (key.file != "data") return false;
  return key.kind == NodeKind::kVolumeFile || key.kind == NodeKind::kElementFile ||
         key.kind == NodeKind::kDiskFile;
}

Result<Tree::DataSource> Tree::DataSourceOf(const NodeKey& key) {
  DataSource src;
  switch (key.kind) {
    case NodeKind::kVolumeFile:
    case NodeKind::kElementFile: {
      auto snap = VolumeChain(key.pool, key.volume);
      if (!snap.ok()) return snap.status();
      src.snap = *snap;
      if (key.kind == NodeKind::kElementFile) {
        if (key.index < 0 || key.index >= int(src.snap->chain().elements.size())) {
          return Error(Code::kNotFound, "{}: no such element", key.Path());
        }
        src.from = size_t(key.index);
      }
      return src;
    }
    case NodeKind::kDiskFile: {
      Result<DiskState> d = Disk(key.pool, key.volume);
      if (!d.ok()) return d.status();
      src.snap = d->snap;
      return src;
    }
    default:
      return Error(Code::kInvalidArgument, "{}: not a data file", key.Path());
  }
}

Result<std::shared_ptr<const core::ChainReader>> Tree::ReaderFor(const DataSource& source) {
  {
    std::lock_guard<std::mutex> lock(readers_mu_);
    for (auto it = readers_.begin(); it != readers_.end(); ++it) {
      if (it->snap == source.snap && it->from == source.from) {
        readers_.splice(readers_.begin(), readers_, it);
        return readers_.front().reader;
      }
    }
  }
  // Opened outside the lock (it opens every element's file).
  Result<std::unique_ptr<core::ChainReader>> opened =
      core::ChainReader::Open(SubChain(source.snap->chain(), source.from));
  if (!opened.ok()) return opened.status();
  std::shared_ptr<const core::ChainReader> reader = std::move(opened).value();
  // A chain a process holds for writing changes under the reader (its
  // cached tables would go stale): a new reader for every request.
  if (!core::ElementsHeldForWriting(source.snap->chain(), source.from).empty()) return reader;
  std::list<OpenReader> dropped;  // closed after unlock
  std::lock_guard<std::mutex> lock(readers_mu_);
  readers_.push_front(OpenReader{source.snap, source.from, reader});
  while (readers_.size() > kMaxOpenReaders) dropped.splice(dropped.begin(), readers_, std::prev(readers_.end()));
  return reader;
}

Result<NodeAttr> Tree::DataAttr(const NodeKey& key) {
  Result<DataSource> src = DataSourceOf(key);
  if (!src.ok()) return src.status();
  const core::Chain& chain = src->snap->chain();
  if (src->from >= chain.elements.size()) return Error(Code::kNotFound, "{}: empty chain", key.Path());
  const core::ChainElement& top = chain.elements[src->from];
  NodeAttr a;
  a.uid = owner_uid_;
  a.gid = owner_gid_;
  a.atime = a.mtime = a.ctime = mount_time_;
  uint32_t bits = 0444;
  if (top.stat) {
    a.uid = top.stat->uid;
    a.gid = top.stat->gid;
    a.atime = top.stat->atime;
    // Readable by a class only if that class may read every element.
    bits = SharedReadBits(*top.stat, chain, chain.elements.size());
  }
  // The newest change of any element it reads: the kernel drops its pages
  // when this moves (auto_inval_data), and inotify invalidation drops them
  // at once for watched chains.
  bool first = true;
  for (size_t i = src->from; i < chain.elements.size(); ++i) {
    const core::ChainElement& e = chain.elements[i];
    if (!e.stat) continue;
    if (first || Later(e.stat->mtime, a.mtime)) a.mtime = e.stat->mtime;
    if (first || Later(e.stat->ctime, a.ctime)) a.ctime = e.stat->ctime;
    first = false;
  }
  // Files the bytes come from besides the elements (a vmdk's extents, a
  // qcow2's external data file): the mode bits cover them too, and the
  // kernel keeps nothing of such a file, since no element's check sees
  // them change (a chmod of an extent must show at the next access).
  bool other_files = false;
  if (top.stat) {
    if (Result<std::shared_ptr<const core::ChainReader>> reader = ReaderFor(*src); reader.ok()) {
      for (const std::string& file : (*reader)->OtherFiles()) {
        other_files = true;
        Result<core::FileStat> st = core::StatPath(file);
        bits = st.ok() ? NarrowReadBits(bits, *top.stat, *st) : 0;
      }
    }
  }
  a.mode = S_IFREG | bits;
  a.size = top.meta ? top.meta->virtual_size : 0;
  a.chain = src->snap;
  a.watched = src->snap->watched() && !other_files;
  if (!core::ElementsHeldForWriting(chain, src->from).empty()) {
    // Held for writing (a running domain's top): the kernel keeps nothing.
    // Attributes expire at once, and a new mtime at every GETATTR makes
    // the kernel drop the pages before each read (auto_inval_data), which
    // then comes here, to a reader opened for that request.
    a.watched = false;
    clock_gettime(CLOCK_REALTIME, &a.mtime);
  }
  return a;
}

// Requests this large come from the kernel's readahead (sequential reads);
// for them the host reads this far ahead (ChainReader::Prefetch).
constexpr size_t kSequentialRequest = 256 << 10;
constexpr uint64_t kPrefetchAhead = 4 << 20;

Result<std::string> Tree::ReadData(const NodeKey& key, const Caller& caller, uint64_t off,
                                   size_t size) {
  CHAINFS_RETURN_IF_ERROR(Authorize(key, caller));
  Result<DataSource> src = DataSourceOf(key);
  if (!src.ok()) return src.status();
  Result<std::shared_ptr<const core::ChainReader>> reader = ReaderFor(*src);
  if (!reader.ok()) {
    // The file exists (its size is the virtual size); its bytes cannot be
    // read: EIO, with the chain's reason in the log.
    return Status(Code::kIo, fmt::format("guest data cannot be read: {}", reader.status().message()),
                  EIO);
  }
  // Authorize covered the elements; the bytes may also come from other files.
  for (const std::string& file : (*reader)->OtherFiles()) {
    Result<core::FileStat> st = core::StatPath(file);
    if (!st.ok() || !CallerCanRead(caller, st->uid, st->gid, st->mode)) {
      return Error(Code::kPermissionDenied, "uid {} may not read {} (the data of {} is read from it)",
                   caller.uid, file, key.Path());
    }
  }
  const uint64_t total = (*reader)->Size();
  if (off >= total) return std::string();
  std::string out(size_t(std::min<uint64_t>(size, total - off)), '\0');
  Result<size_t> n = (*reader)->Read(
      off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  if (!n.ok()) return n.status();
  out.resize(*n);
  // A large request is the kernel's readahead of a sequential reader: the
  // host starts reading what the next requests will ask for, so the disk
  // works while this reply travels (the kernel sends one READ at a time).
  if (size >= kSequentialRequest && off + *n < total) {
    (*reader)->Prefetch(off + *n, kPrefetchAhead);
  }
  return out;
}

Result<uint64_t> Tree::SeekData(const NodeKey& key, uint64_t off, bool data) {
  Result<DataSource> src = DataSourceOf(key);
  if (!src.ok()) return src.status();
  Result<std::shared_ptr<const core::ChainReader>> reader = ReaderFor(*src);
  if (!reader.ok()) return reader.status();
  const uint64_t total = (*reader)->Size();
  if (off >= total) return Error(Code::kNotFound, "offset {} is at or past the end", off);
  core::MapIterator it = (*reader)->MapFrom(off);
  for (;;) {
    Result<std::optional<core::MapExtent>> next = it.Next();
    if (!next.ok()) return next.status();
    if (!*next) break;
    // A range that reads as zeros is a hole, as qemu-img map and SEEK_HOLE
    // on a sparse file see it.
    const bool is_data = (*next)->data && !(*next)->zero;
    if (is_data == data) return std::max<uint64_t>(off, (*next)->start);
  }
  if (data) return Error(Code::kNotFound, "no data after offset {}", off);
  return total;  // the end is a hole
}

Result<std::string> Tree::RenderMap(const NodeKey& key, const ChainSnapshot& snap) {
  const core::MapFormat format = key.file == "map.json" ? core::MapFormat::kJson
                                                        : core::MapFormat::kHuman;
  // Not memoized with the snapshot (the kernel keeps what it got for as
  // long as the chain's attributes stand). A map that cannot be made (the
  // chain cannot be read, or qemu-img's human format refuses compressed
  // data) is an empty file, as `ls -lR` and `find | xargs cat` must never
  // fail; the log says why, and `problems` says what is wrong with the chain.
  auto unavailable = [&](const Status& why) -> Result<std::string> {
    log_.AddOnce("map:" + key.Path() + ":" + why.message(), "read", key.Path(), "empty",
                 why.message());
    return std::string();
  };
  Result<std::unique_ptr<core::ChainReader>> reader = core::ChainReader::Open(snap.chain());
  if (!reader.ok()) return unavailable(reader.status());
  std::string out;
  Status s = core::StreamMapText(**reader, format, 0, (*reader)->Size(),
                                 [&out](std::string_view piece) {
                                   out.append(piece);
                                   return Status::Ok();
                                 });
  if (!s.ok()) return unavailable(s);
  return out;
}

}  // namespace chainfs::fs
