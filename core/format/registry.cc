#include <algorithm>

#include "core/format/all_drivers.h"
#include "core/format/driver.h"

namespace chainfs::core {

const std::vector<const FormatDriver*>& AllDrivers() {
  static const std::vector<const FormatDriver*> drivers = BuildDriverTable();
  return drivers;
}

const FormatDriver* FindDriver(std::string_view name) {
  for (const FormatDriver* d : AllDrivers()) {
    if (d->Name() == name) return d;
  }
  return nullptr;
}

namespace {

// Every magic but ISO 9660's lies in the first 4 KiB.
constexpr size_t kQuickProbeBytes = 4096;

const FormatDriver* BestMatch(std::span<const uint8_t> head, uint64_t file_size) {
  const FormatDriver* best = FindDriver("raw");
  int best_score = 0;
  for (const FormatDriver* d : AllDrivers()) {
    int score = d->Probe(head, file_size);
    if (score > best_score) {
      best_score = score;
      best = d;
    }
  }
  return best;
}

}  // namespace

Result<const FormatDriver*> ProbeFormat(const Reader& r) {
  // Most images are recognised from their first block; only what still looks
  // raw is read further (up to the ISO descriptor), which keeps probing cheap.
  std::vector<uint8_t> head(std::min<uint64_t>(kQuickProbeBytes, r.Size()));
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, head, "probe header"));
  const FormatDriver* best = BestMatch(head, r.Size());
  if (best->Name() != "raw" || r.Size() <= head.size()) return best;
  head.resize(std::min<uint64_t>(kProbeBytes, r.Size()));
  CHAINFS_RETURN_IF_ERROR(ReadExact(r, 0, head, "probe header"));
  return BestMatch(head, r.Size());
}

}  // namespace chainfs::core
