#include "core/chain/inspector.h"

namespace chainfs::core {

Result<std::shared_ptr<const Inspection>> ImageInspector::Inspect(const std::string& path,
                                                                  std::string_view format) {
  const FormatDriver* forced = nullptr;
  if (!format.empty()) {
    forced = FindDriver(format);
    if (!forced) return Error(Code::kInvalidArgument, "unknown format '{}'", format);
  }
  // A stat is enough to find a cached entry; open only on a miss.
  Result<FileStat> st = StatPath(path);
  if (!st.ok()) return st.status();
  if (!st->IsRegular() && !st->IsBlockDevice()) {
    return Error(Code::kUnsupported, "'{}' is neither a regular file nor a block device", path);
  }
  auto key_of = [&](const FileIdentity& id) {
    return Key{id.dev, id.ino, id.size, id.mtime_ns, id.ctime_ns, std::string(format), path};
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(key_of(st->id));
    if (it != cache_.end()) {
      ++hits_;
      return it->second;
    }
    // Asked to parse as F a file already parsed as what it probed to, and
    // that probe said F: the same driver on the same bytes, so the same
    // answer (the chain resolver inspects a backing file with its recorded
    // format after it was probed as a volume of its own).
    if (forced) {
      auto probed = cache_.find(
          Key{st->id.dev, st->id.ino, st->id.size, st->id.mtime_ns, st->id.ctime_ns, "", path});
      if (probed != cache_.end() && probed->second->format == forced->Name()) {
        ++hits_;
        return probed->second;
      }
    }
  }
  ++misses_;
  Result<File> file = File::OpenRead(path);
  if (!file.ok()) return file.status();
  // The file may have changed between stat and open: key by what we opened.
  Result<FileStat> fst = file->Stat();
  if (!fst.ok()) return fst.status();

  auto insp = std::make_shared<Inspection>();
  insp->stat = *fst;
  ++probes_;
  Result<const FormatDriver*> probed = ProbeFormat(*file);
  if (!probed.ok()) return probed.status();
  insp->probed_format = std::string((*probed)->Name());
  const FormatDriver* driver = forced ? forced : *probed;
  insp->format = std::string(driver->Name());
  Result<ImageMeta> meta = driver->Parse(*file);
  if (meta.ok()) {
    driver->AttachPath(*meta, path);
    insp->meta = std::make_shared<const ImageMeta>(std::move(*meta));
  } else {
    insp->parse_status = meta.status();
  }
  std::shared_ptr<const Inspection> result = std::move(insp);
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= max_entries_) cache_.clear();
  cache_[key_of(result->stat.id)] = result;
  return result;
}

void ImageInspector::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  cache_.clear();
}

InspectorStats ImageInspector::stats() const {
  return InspectorStats{hits_.load(), misses_.load(), probes_.load()};
}

}  // namespace chainfs::core
