#include "core/data/image_reader.h"

#include "core/data/format_readers.h"
#include "core/data/qcow2_reader.h"
#include "core/data/raw_reader.h"
#include "core/io/file.h"

namespace chainfs::core {

Result<std::unique_ptr<ImageReader>> OpenImageReader(const ChainElement& element,
                                                     uint64_t l2_cache_max_bytes) {
  if (element.network) {
    return Error(Code::kUnsupported, "'{}' is a network source; its bytes are not read",
                 element.path);
  }
  if (element.format == "luks") {
    return Error(Code::kUnsupported, "'{}': LUKS data needs a key; chainfs reads no key",
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
  using Opener = Result<std::unique_ptr<ImageReader>> (*)(std::unique_ptr<Reader>,
                                                          const std::string&);
  static constexpr struct {
    std::string_view format;
    Opener open;
  } kTableFormats[] = {{"qed", OpenQedReader},   {"vdi", OpenVdiReader},
                       {"vpc", OpenVpcReader},   {"vhdx", OpenVhdxReader},
                       {"qcow", OpenQcowReader}, {"vmdk", nullptr}};
  for (const auto& f : kTableFormats) {
    if (element.format != f.format) continue;
    Result<File> file = File::OpenRead(element.path);
    if (!file.ok()) return file.status();
    auto image = std::make_unique<File>(std::move(*file));
    if (f.open != nullptr) return f.open(std::move(image), element.path);
    VmdkReaderOptions opts;
    // DESIGN section 3, as for a qcow2 data file: a probed descriptor may
    // name only extent files next to it.
    opts.follow_any_extent = element.format_source == FormatSource::kMetadata;
    return OpenVmdkReader(std::move(image), element.path, opts);
  }
  if (element.format.empty()) {
    return Error(Code::kUnsupported, "the format of '{}' is not known", element.path);
  }
  return Error(Code::kUnsupported, "reading the data of {} images is not supported ('{}')",
               element.format, element.path);
}

}  // namespace chainfs::core
