#include "core/write/rebase.h"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/chain/backing_ref.h"
#include "core/chain/resolver.h"
#include "core/data/chain_reader.h"
#include "core/format/driver.h"
#include "core/format/qcow2/writer.h"
#include "core/io/file.h"
#include "core/write/in_use.h"
#include "core/write/loop_check.h"

namespace chainfs::core {
namespace {

// The error for an old chain that cannot be read: DESIGN section 2 says EIO,
// whatever the underlying reason (a missing old backing is not the ENOENT
// that names a missing new backing).
Status OldChainError(const std::string& path, const Status& s) {
  return Status(Code::kIo,
                fmt::format("the old backing chain of '{}' cannot be read: {}", path, s.message()),
                EIO);
}

bool AllZero(const uint8_t* p, size_t n) {
  if (n == 0) return true;
  return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
}

// Opens the chain that will back the image after the rebase. Sets `format`
// to the format to record.
Status OpenNewChain(ImageInspector& inspector, const std::string& image_path,
                    const FileIdentity& image_id, const std::string& new_backing,
                    const std::optional<std::string>& declared_format, const TrustContext& trust,
                    std::unique_ptr<ChainReader>& reader, std::string& format,
                    std::optional<FileIdentity>& top_id) {
  Result<BackingRef> ref = ClassifyBacking(new_backing, image_path);
  if (!ref.ok()) return ref.status();
  if (!ref->IsLocal()) {
    return Error(Code::kUnsupported,
                 "'{}' is not a local file; its content cannot be compared; retarget instead: {}",
                 new_backing,
                 Suggest(trust, {Suggestion::kRetargetInstead, image_path, new_backing}));
  }
  const std::string& resolved = ref->resolved_path;
  Result<FileStat> st = StatPath(resolved);
  if (!st.ok()) {
    if (st.status().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "new backing '{}' ({}) does not exist", new_backing, resolved);
    }
    return st.status();
  }
  if (declared_format) {
    format = *declared_format;
  } else {
    Result<std::string> trusted = TrustedBackingFormat(
        inspector, resolved, trust,
        SuggestionArgs{Suggestion::kDeclareFormatForRebase, image_path, new_backing});
    if (!trusted.ok()) return trusted.status();
    format = *trusted;
  }
  Chain chain = ResolveChain(inspector, resolved);
  if (chain.elements.empty()) {
    return Error(Code::kIo, "new backing '{}' cannot be opened", new_backing);
  }
  if (chain.elements.front().format != format) {
    if (format != "raw") {
      return Error(Code::kUnsupported, "new backing '{}' is {}, not the declared {}", new_backing,
                   chain.elements.front().format, format);
    }
    // Declared raw: the file's bytes are the content, whatever they look like.
    ChainElement top = chain.elements.front();
    top.format = "raw";
    top.format_source = FormatSource::kMetadata;
    top.meta.reset();
    chain.elements = {top};
    chain.problems.clear();
    chain.complete = true;
  }
  // The loop check every write shares (ELOOP, as for a retarget).
  Status loop = CheckNoLoop(inspector, LoopSubject{image_path, image_id, std::nullopt}, new_backing,
                            resolved, format);
  if (!loop.ok()) return loop;
  Result<std::unique_ptr<ChainReader>> opened = ChainReader::Open(chain);
  if (!opened.ok()) {
    return Status(
        opened.status().code(),
        fmt::format("new backing '{}' cannot be read: {}", new_backing, opened.status().message()),
        opened.status().sys_errno());
  }
  reader = std::move(*opened);
  if (chain.elements.front().stat) top_id = chain.elements.front().stat->id;
  return Status::Ok();
}

// Copies into `writer` every cluster (subcluster on extended L2 images: the
// writer's write unit, `unit_` here) of the image's unallocated ranges where
// `old_chain` and `new_chain` (null: all zeros) differ. On extended L2 images
// the subclusters left unallocated keep reading from the backing, which
// after the rebase is the new one, equal there to the old chain. Works chunk by
// chunk: one helper thread maps and reads the chunks ahead (two buffers)
// while the calling thread compares and writes (ChainReader is safe for
// concurrent readers; the writer is only used on the calling thread, and a
// chunk being read never contains clusters the writer touches).
class Copier {
 public:
  Copier(const std::string& path, const ChainReader& old_chain, const ChainReader* new_chain,
         Qcow2Writer& writer, uint64_t chunk_bytes)
      : path_(path),
        old_(old_chain),
        new_(new_chain),
        w_(writer),
        cs_(writer.cluster_size()),
        unit_(writer.write_granularity()) {
    chunk_ = std::max(cs_, chunk_bytes / cs_ * cs_);
    for (Slot& slot : slots_) {
      // One spare cluster so the image's last, partial unit can be padded.
      slot.old_bytes.resize(chunk_ + cs_);
      slot.new_bytes.resize(chunk_ + cs_);
    }
  }

  // Sets the depth of the old chain at which the new backing starts, when
  // the new backing is an element of the old chain: what that element and
  // those below it provide is the same in both chains, so only ranges
  // provided by the elements above it need comparing (qemu-img's shortcut).
  void set_shared_depth(int depth) { shared_depth_ = depth; }

  Status Run(const ProgressFn& progress) {
    const uint64_t size = old_.Size();
    if (progress) progress(0, size);
    if (size > 0) {
      std::thread producer([this, size] { Produce(size); });
      Status s = Consume(size, progress);
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      producer.join();
      CHAINFS_RETURN_IF_ERROR(s);
    }
    return w_.Flush();
  }

 private:
  struct Slot {
    uint64_t pos = 0;  // start of the chunk the ranges were taken from
    uint64_t end = 0;  // guest offset examined up to (for progress)
    std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [start, end) to compare
    std::vector<uint8_t> old_bytes, new_bytes;          // indexed from pos
    Status status;                                      // a Prepare error ends the run
  };
  // Chunks without anything to compare are not handed over, except to keep
  // progress moving every this many bytes.
  static constexpr uint64_t kProgressStep = 64ull << 20;

  // The helper thread: prepares chunks into free slots, in order.
  void Produce(uint64_t size) {
    uint64_t handed = 0;
    for (uint64_t pos = 0; pos < size;) {
      int idx;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !free_.empty(); });
        if (stop_) return;
        idx = free_.front();
        free_.pop_front();
      }
      Slot& slot = slots_[idx];
      // Chunks with nothing to compare are skipped right here.
      do {
        slot.status = Prepare(slot, pos);
        pos = slot.end;
      } while (slot.status.ok() && slot.ranges.empty() && pos < size &&
               pos - handed < kProgressStep);
      handed = pos;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ready_.push_back(idx);
      }
      cv_.notify_all();
      if (!slot.status.ok()) return;
    }
  }

  // The calling thread: compares and writes prepared slots, in order.
  Status Consume(uint64_t size, const ProgressFn& progress) {
    for (uint64_t done = 0; done < size;) {
      int idx;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !ready_.empty(); });
        idx = ready_.front();
        ready_.pop_front();
      }
      Slot& slot = slots_[idx];
      CHAINFS_RETURN_IF_ERROR(slot.status);
      CHAINFS_RETURN_IF_ERROR(Process(slot));
      done = slot.end;
      if (progress) progress(done, size);
      {
        std::lock_guard<std::mutex> lock(mu_);
        free_.push_back(idx);
      }
      cv_.notify_all();
    }
    return Status::Ok();
  }

  // Maps the chunk at `pos`, picks the ranges to compare and reads both
  // chains' content of them into `slot`.
  Status Prepare(Slot& slot, uint64_t pos) {
    slot.pos = pos;
    slot.ranges.clear();
    const uint64_t chunk_end = pos + std::min(chunk_, old_.Size() - pos);
    slot.end = chunk_end;
    Result<std::vector<MapExtent>> map = old_.Map(pos, chunk_end - pos);
    if (!map.ok()) return OldChainError(path_, map.status());
    // Ranges not allocated in the image itself and not provided by the
    // shared part of the chains, widened to whole write units of the image
    // (which stay unallocated in it) and merged.
    for (const MapExtent& e : *map) {
      if (e.depth == 0 && e.present) continue;
      if (shared_depth_ > 0 && e.depth >= shared_depth_) continue;
      const uint64_t s = e.start / unit_ * unit_;
      const uint64_t t = std::min(chunk_end, (e.start + e.length + unit_ - 1) / unit_ * unit_);
      if (!slot.ranges.empty() && s <= slot.ranges.back().second) {
        slot.ranges.back().second = std::max(slot.ranges.back().second, t);
      } else {
        slot.ranges.emplace_back(s, t);
      }
    }
    for (const auto& [start, end] : slot.ranges) {
      if (start % unit_ != 0 || (end % unit_ != 0 && end != old_.Size())) {
        return Error(Code::kUnsupported,
                     "'{}': unallocated range [{}, {}) does not follow {} boundaries", path_, start,
                     end, w_.extended_l2() ? "subcluster" : "cluster");
      }
    }
    for (const auto& [start, end] : slot.ranges) {
      const size_t n = size_t(end - start);
      uint8_t* a = slot.old_bytes.data() + (start - pos);
      uint8_t* b = slot.new_bytes.data() + (start - pos);
      Result<size_t> got = old_.Read(start, std::span<uint8_t>(a, n));
      if (!got.ok()) return OldChainError(path_, got.status());
      if (*got != n) return OldChainError(path_, Error(Code::kIo, "short read at {}", start));
      if (new_) {
        Result<size_t> got_new = new_->Read(start, std::span<uint8_t>(b, n));
        if (!got_new.ok()) return got_new.status();
        std::memset(b + *got_new, 0, n - *got_new);  // past the new backing's end
      } else {
        std::memset(b, 0, n);
      }
    }
    return Status::Ok();
  }

  // Compares the prepared ranges unit by unit and writes the old content of
  // every unit that differs (zeros by flag where it is all zeros and the
  // image has the zero flag or zero bits).
  Status Process(Slot& slot) {
    const bool zero_flag = w_.header().version >= 3;
    for (const auto& [start, end] : slot.ranges) {
      const size_t n = size_t(end - start);
      uint8_t* a = slot.old_bytes.data() + (start - slot.pos);
      const uint8_t* b = slot.new_bytes.data() + (start - slot.pos);
      if (std::memcmp(a, b, n) == 0) continue;
      // Pad the last, partial unit of the disk.
      const size_t padded = size_t((n + unit_ - 1) / unit_ * unit_);
      std::memset(a + n, 0, padded - n);

      enum class Kind { kNone, kData, kZero };
      Kind run = Kind::kNone;
      uint64_t run_start = 0;
      auto flush_run = [&](uint64_t run_end) -> Status {
        const uint64_t bytes = run_end - run_start;
        const Kind kind = run;
        run = Kind::kNone;
        if (kind == Kind::kZero) return w_.WriteZeroClusters(run_start, bytes);
        return w_.WriteClusters(
            run_start,
            std::span<const uint8_t>(slot.old_bytes.data() + (run_start - slot.pos), bytes));
      };
      for (uint64_t c = start; c < end; c += unit_) {
        const size_t co = size_t(c - start);
        const size_t clen = size_t(std::min<uint64_t>(unit_, end - c));
        Kind k = Kind::kNone;
        if (std::memcmp(a + co, b + co, clen) != 0) {
          k = zero_flag && AllZero(a + co, clen) ? Kind::kZero : Kind::kData;
        }
        if (k != run && run != Kind::kNone) CHAINFS_RETURN_IF_ERROR(flush_run(c));
        if (k != Kind::kNone && run == Kind::kNone) {
          run = k;
          run_start = c;
        }
      }
      if (run != Kind::kNone) CHAINFS_RETURN_IF_ERROR(flush_run(start + padded));
    }
    return Status::Ok();
  }

  const std::string& path_;
  const ChainReader& old_;
  const ChainReader* new_;
  Qcow2Writer& w_;
  uint64_t cs_;
  uint64_t unit_;  // the writer's write unit: cluster or subcluster
  uint64_t chunk_;
  int shared_depth_ = 0;
  Slot slots_[2];
  // Hand-over between the helper and the calling thread. Lock order: mu_
  // only, never held during I/O.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> free_ = {0, 1};  // guarded by mu_
  std::deque<int> ready_;          // guarded by mu_
  bool stop_ = false;              // guarded by mu_
};

}  // namespace

Status SafeRebase(ImageInspector& inspector, const std::string& image_path,
                  std::optional<std::string> new_backing,
                  std::optional<std::string> new_backing_format, const TrustContext& trust,
                  ProgressFn progress) {
  return SafeRebase(inspector, image_path, std::move(new_backing), std::move(new_backing_format),
                    trust, std::move(progress), RebaseOptions{});
}

Status SafeRebase(ImageInspector& inspector, const std::string& image_path,
                  std::optional<std::string> new_backing,
                  std::optional<std::string> new_backing_format, const TrustContext& trust,
                  ProgressFn progress, const RebaseOptions& options) {
  if (new_backing && new_backing->empty()) new_backing.reset();
  if (!new_backing && new_backing_format) {
    return Error(Code::kInvalidArgument, "a backing format was given but no backing (flatten)");
  }
  if (new_backing) CHAINFS_RETURN_IF_ERROR(ValidateBackingString(*new_backing));
  if (new_backing_format && FindDriver(*new_backing_format) == nullptr) {
    return Error(Code::kInvalidArgument, "'{}' is not a known image format", *new_backing_format);
  }

  Result<std::shared_ptr<const Inspection>> image = inspector.Inspect(image_path);
  if (!image.ok()) return image.status();
  if ((*image)->probed_format != "qcow2") {
    return Error(Code::kUnsupported, "'{}' is {}, not qcow2; only qcow2 can be rebased", image_path,
                 (*image)->probed_format);
  }
  CHAINFS_RETURN_IF_ERROR(CheckNotInUse(image_path));

  Chain old_chain = ResolveChain(inspector, image_path);
  Result<std::unique_ptr<ChainReader>> old_reader = ChainReader::Open(old_chain);
  if (!old_reader.ok()) return OldChainError(image_path, old_reader.status());

  std::unique_ptr<ChainReader> new_reader;
  std::string format;
  int shared_depth = 0;
  if (new_backing) {
    std::optional<FileIdentity> new_id;
    CHAINFS_RETURN_IF_ERROR(OpenNewChain(inspector, image_path, (*image)->stat.id, *new_backing,
                                         new_backing_format, trust, new_reader, format, new_id));
    // Is the new backing (in the same format) an element of the old chain?
    for (size_t i = 1; new_id && i < old_chain.elements.size(); ++i) {
      const ChainElement& e = old_chain.elements[i];
      if (e.stat && e.stat->id.dev == new_id->dev && e.stat->id.ino == new_id->ino &&
          e.format == format) {
        shared_depth = int(i);
        break;
      }
    }
  } else if (old_chain.elements.size() == 1) {
    // Flattening an image without a backing: nothing to copy or change.
    if (progress) progress((*old_reader)->Size(), (*old_reader)->Size());
    return Status::Ok();
  }

  {
    Result<std::unique_ptr<Qcow2Writer>> writer = Qcow2Writer::Open(image_path, options.writer);
    if (!writer.ok()) return writer.status();
    Copier copier(image_path, **old_reader, new_reader.get(), **writer, options.chunk_bytes);
    copier.set_shared_depth(shared_depth);
    Status copied = copier.Run(progress);
    if (!copied.ok()) {
      inspector.Clear();
      return copied;
    }
  }  // the writer's descriptor (and its locks) go before the header rewrite
  Status s = new_backing ? RewriteBacking(image_path, new_backing, format)
                         : RewriteBacking(image_path, std::nullopt, std::nullopt);
  inspector.Clear();
  return s;
}

}  // namespace chainfs::core
