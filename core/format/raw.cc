// raw: the default when nothing else matches. No header, no backing. The
// virtual size is the file size rounded up to 512 bytes, as qemu reports it
// (qemu counts whole sectors); the tail past the end of the file reads as
// zeros (core/data/raw_reader.h).
#include "core/format/all_drivers.h"

namespace chainfs::core {
namespace {

class RawDriver final : public FormatDriver {
 public:
  std::string_view Name() const override { return "raw"; }
  // Raw matches anything, weakly: every other format outranks it.
  int Probe(std::span<const uint8_t>, uint64_t) const override { return 1; }
  Result<ImageMeta> Parse(const Reader& r) const override {
    ImageMeta m;
    m.format = "raw";
    m.virtual_size = RawVirtualSize(r.Size());
    return m;
  }
};

}  // namespace

const FormatDriver* MakeRawDriver() {
  static const RawDriver driver;
  return &driver;
}

}  // namespace chainfs::core
