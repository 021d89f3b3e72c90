#include "core/data/image_reader.h"

#include "core/data/qcow2_reader.h"
#include "core/data/raw_reader.h"

namespace chainfs::core {

Result<std::unique_ptr<ImageReader>> OpenImageReader(const ChainElement& element,
                                                     uint64_t l2_cache_max_bytes) {
  if (element.network) {
    return Error(Code::kUnsupported, "'{}' is a network source; its bytes are not read",
                 element.path);
  }
  if (element.meta && element.meta->encrypted) {
    return Error(Code::kUnsupported, "'{}' is encrypted; reading encrypted images is not supported",
                 element.path);
  }
  if (element.format == "qcow2") {
    Qcow2ReaderOptions opts;
    opts.l2_cache_max_bytes = l2_cache_max_bytes;
    // DESIGN section 3: a probed image never has its data file followed.
    opts.follow_data_file = element.format_source == FormatSource::kMetadata;
    Result<std::unique_ptr<Qcow2Reader>> r = Qcow2Reader::Open(element.path, opts);
    if (!r.ok()) return r.status();
    return std::unique_ptr<ImageReader>(std::move(*r));
  }
  if (element.format == "raw") {
    Result<std::unique_ptr<RawReader>> r = RawReader::Open(element.path);
    if (!r.ok()) return r.status();
    return std::unique_ptr<ImageReader>(std::move(*r));
  }
  if (element.format.empty()) {
    return Error(Code::kUnsupported, "the format of '{}' is not known", element.path);
  }
  return Error(Code::kUnsupported, "reading the data of {} images is not supported ('{}')",
               element.format, element.path);
}

}  // namespace chainfs::core
