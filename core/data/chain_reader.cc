#include "core/data/chain_reader.h"

#include <algorithm>
#include <cstring>
#include <future>

namespace chainfs::core {
namespace {

Code CodeForProblem(ProblemKind kind) {
  switch (kind) {
    case ProblemKind::kMissingBackingFile:
      return Code::kNotFound;
    case ProblemKind::kUnreadable:
      return Code::kPermissionDenied;
    case ProblemKind::kMissingBackingFormat:
    case ProblemKind::kUnknownFormat:
    case ProblemKind::kUnsupported:
      return Code::kUnsupported;
    default:
      return Code::kCorrupt;
  }
}

bool Mergeable(const MapExtent& a, const MapExtent& b) {
  if (a.length == 0) return false;
  if (a.depth != b.depth || a.present != b.present || a.zero != b.zero || a.data != b.data ||
      a.compressed != b.compressed || a.offset.has_value() != b.offset.has_value() ||
      a.file != b.file) {
    return false;
  }
  return !a.offset || *a.offset + a.length == *b.offset;
}

}  // namespace

ChainReader::ChainReader(std::vector<std::unique_ptr<ImageReader>> images)
    : images_(std::move(images)) {}

Result<std::unique_ptr<ChainReader>> ChainReader::Open(const Chain& chain,
                                                       const ChainReaderOptions& options) {
  if (chain.elements.empty()) return Error(Code::kInvalidArgument, "empty chain");
  for (const Problem& p : chain.problems) {
    // Problems that stopped the walk make the content unknowable; others
    // (e.g. a dirty flag) do not matter to reading.
    if ((p.kind == ProblemKind::kHeader || p.kind == ProblemKind::kFormatMismatch) &&
        chain.complete) {
      continue;
    }
    return Error(CodeForProblem(p.kind), "chain element {}: {}", p.index, p.message);
  }
  if (!chain.complete) {
    return Error(Code::kCorrupt, "the chain of '{}' could not be walked to its base",
                 chain.elements.front().path);
  }
  std::vector<std::unique_ptr<ImageReader>> images;
  for (const ChainElement& e : chain.elements) {
    Result<std::unique_ptr<ImageReader>> r = OpenImageReader(e, options.l2_cache_max_bytes);
    if (!r.ok()) return r.status();
    images.push_back(std::move(*r));
  }
  return std::unique_ptr<ChainReader>(new ChainReader(std::move(images)));
}

Result<std::unique_ptr<ChainReader>> ChainReader::FromImages(
    std::vector<std::unique_ptr<ImageReader>> images) {
  if (images.empty()) return Error(Code::kInvalidArgument, "empty chain");
  for (const auto& i : images) {
    if (!i) return Error(Code::kInvalidArgument, "null image reader");
  }
  return std::unique_ptr<ChainReader>(new ChainReader(std::move(images)));
}

uint64_t ChainReader::Size() const { return images_.front()->Size(); }

void ChainReader::Prefetch(uint64_t offset, uint64_t length) const {
  MapIterator it = MapFrom(offset, length);
  for (;;) {
    Result<std::optional<MapExtent>> e = it.Next();
    if (!e.ok() || !e->has_value()) return;
    const MapExtent& x = **e;
    if (!x.data || x.compressed || !x.offset || x.depth < 0 || size_t(x.depth) >= images_.size()) {
      continue;
    }
    const ImageReader& img = *images_[size_t(x.depth)];
    bool in_data_file = !img.HostPath(true).empty() && img.HostPath(true) != img.HostPath(false) &&
                        x.file == img.HostPath(true);
    if (!in_data_file && x.file != img.HostPath(false)) continue;  // an extent file
    img.AdviseHost(*x.offset, x.length, in_data_file);
  }
}

std::vector<std::string> ChainReader::OtherFiles() const {
  std::vector<std::string> out;
  for (const std::unique_ptr<ImageReader>& image : images_) {
    const std::string& data_file = image->HostPath(true);  // "" without one
    if (!data_file.empty() && data_file != image->HostPath(false)) out.push_back(data_file);
    for (std::string& file : image->OtherFiles()) out.push_back(std::move(file));
  }
  return out;
}

L2CacheStats ChainReader::CacheStats() const {
  L2CacheStats sum;
  for (const auto& i : images_) {
    L2CacheStats s = i->CacheStats();
    sum.hits += s.hits;
    sum.misses += s.misses;
    sum.evictions += s.evictions;
  }
  return sum;
}

Status ChainReader::ReadFrom(size_t depth, uint64_t offset, std::span<uint8_t> out) const {
  const ImageReader& img = *images_[depth];
  const uint64_t size = img.Size();
  size_t pos = 0;
  while (pos < out.size()) {
    const uint64_t at = offset + pos;
    if (at >= size) {  // past the end of this image: zeros
      std::memset(out.data() + pos, 0, out.size() - pos);
      break;
    }
    Result<BlockStatus> st = img.GetStatus(at, out.size() - pos, /*want_zero=*/false);
    if (!st.ok()) return st.status();
    const size_t n = size_t(std::min<uint64_t>(st->length, out.size() - pos));
    if (n == 0) return Error(Code::kCorrupt, "no progress reading at guest offset {}", at);
    std::span<uint8_t> part = out.subspan(pos, n);
    switch (st->allocation) {
      case Allocation::kData:
        CHAINFS_RETURN_IF_ERROR(img.ReadData(at, *st, part));
        break;
      case Allocation::kZero:
        std::memset(part.data(), 0, part.size());
        break;
      case Allocation::kUnallocated:
        if (depth + 1 < images_.size()) {
          CHAINFS_RETURN_IF_ERROR(ReadFrom(depth + 1, at, part));
        } else {
          std::memset(part.data(), 0, part.size());
        }
        break;
    }
    pos += n;
  }
  return Status::Ok();
}

Result<size_t> ChainReader::Read(uint64_t offset, std::span<uint8_t> out) const {
  const uint64_t size = Size();
  if (offset >= size || out.empty()) return size_t{0};
  const size_t n = size_t(std::min<uint64_t>(out.size(), size - offset));
  CHAINFS_RETURN_IF_ERROR(ReadFrom(0, offset, out.first(n)));
  return n;
}

Status ChainReader::ReadStream(uint64_t offset, uint64_t length, const Sink& sink,
                               size_t chunk_bytes) const {
  const uint64_t size = Size();
  if (offset >= size) return Status::Ok();
  const uint64_t end = offset + std::min(length, size - offset);
  chunk_bytes = size_t(std::min<uint64_t>(std::max<size_t>(chunk_bytes, 4096), end - offset));
  // Two buffers: the next chunk is read on a helper thread while the sink
  // consumes the current one, so reading and writing overlap (as qemu-img
  // convert overlaps its requests).
  std::vector<uint8_t> bufs[2] = {
      std::vector<uint8_t>(chunk_bytes),
      std::vector<uint8_t>(end - offset > chunk_bytes ? chunk_bytes : 0)};
  auto read_chunk = [this, end](uint64_t pos, std::vector<uint8_t>* buf) -> Result<size_t> {
    const size_t n = size_t(std::min<uint64_t>(buf->size(), end - pos));
    return Read(pos, std::span<uint8_t>(buf->data(), n));
  };
  int cur = 0;
  uint64_t pos = offset;
  std::future<Result<size_t>> pending =
      std::async(std::launch::deferred, read_chunk, pos, &bufs[cur]);
  while (pos < end) {
    Result<size_t> got = pending.get();
    if (!got.ok()) return got.status();
    if (*got == 0) break;
    const uint64_t next = pos + *got;
    if (next < end) pending = std::async(std::launch::async, read_chunk, next, &bufs[1 - cur]);
    // On a sink error, `pending` finishes before its buffer goes away: the
    // future of std::async waits in its destructor.
    CHAINFS_RETURN_IF_ERROR(sink(pos, std::span<const uint8_t>(bufs[cur].data(), *got)));
    pos = next;
    cur = 1 - cur;
  }
  return Status::Ok();
}

Result<MapExtent> ChainReader::MapOne(uint64_t offset, uint64_t length) const {
  size_t depth = 0;
  for (;;) {
    const ImageReader& img = *images_[depth];
    Result<BlockStatus> st = img.GetStatus(offset, length, /*want_zero=*/true);
    if (!st.ok()) return st.status();
    if (st->length == 0) {
      return Error(Code::kCorrupt, "no progress mapping guest offset {}", offset);
    }
    MapExtent e;
    e.start = offset;
    e.length = std::min(st->length, length);
    e.depth = int(depth);
    e.offset = st->host_offset;
    if (e.offset) e.file = st->host_path ? *st->host_path : img.HostPath(st->in_data_file);
    if (st->allocation != Allocation::kUnallocated) {
      e.present = true;
      e.zero = st->allocation == Allocation::kZero || st->reads_zero;
      e.data = st->allocation == Allocation::kData;
      e.compressed = st->compressed;
      return e;
    }
    // Unallocated here: zeros if there is no backing or it ends before
    // `offset` (qemu adds BDRV_BLOCK_ZERO at this depth), else ask it.
    const bool last = depth + 1 == images_.size();
    if (last || offset >= images_[depth + 1]->Size()) {
      e.zero = true;
      return e;
    }
    length = std::min(e.length, images_[depth + 1]->Size() - offset);
    ++depth;
  }
}

MapIterator ChainReader::MapFrom(uint64_t offset, uint64_t length) const {
  const uint64_t size = Size();
  if (offset >= size) return MapIterator(*this, offset, offset);
  return MapIterator(*this, offset, offset + std::min(length, size - offset));
}

Result<std::optional<MapExtent>> MapIterator::Next() {
  while (pos_ < end_) {
    Result<MapExtent> piece = reader_->MapOne(pos_, end_ - pos_);
    if (!piece.ok()) {
      pos_ = end_;
      pending_.reset();
      return piece.status();
    }
    pos_ += piece->length;
    if (pending_ && Mergeable(*pending_, *piece)) {
      pending_->length += piece->length;
      continue;
    }
    std::optional<MapExtent> done = std::move(pending_);
    pending_ = std::move(*piece);
    if (done) return done;
  }
  std::optional<MapExtent> last = std::move(pending_);
  pending_.reset();
  return last;
}

Status ChainReader::MapStream(uint64_t offset, uint64_t length,
                              const std::function<Status(const MapExtent&)>& emit) const {
  MapIterator it = MapFrom(offset, length);
  for (;;) {
    Result<std::optional<MapExtent>> e = it.Next();
    if (!e.ok()) return e.status();
    if (!*e) return Status::Ok();
    CHAINFS_RETURN_IF_ERROR(emit(**e));
  }
}

Result<std::vector<MapExtent>> ChainReader::Map(uint64_t offset, uint64_t length) const {
  std::vector<MapExtent> out;
  Status s = MapStream(offset, length, [&out](const MapExtent& e) {
    out.push_back(e);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace chainfs::core
