#include "core/data/block_map_reader.h"
#include "core/data/format_readers.h"

namespace chainfs::core {

Result<std::unique_ptr<ImageReader>> OpenVmdkReader(std::unique_ptr<Reader>,
                                                    const std::string& path,
                                                    const VmdkReaderOptions&) {
  return Error(Code::kUnsupported, "reading the data of vmdk images is not supported ('{}')", path);
}

}  // namespace chainfs::core
