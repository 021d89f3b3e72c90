// The allocation map of a chain as text: the extents `qemu-img map` lists
// and the two ways it prints them (--output=json and the human table),
// rendered one extent at a time so that a map of any size is printed in
// bounded memory.
//
// Rendered text can be resumed at any extent boundary: a MapResumePoint
// records, before an extent, its guest offset, the bytes of text written so
// far and the extents rendered. A MapIterator started at that guest offset
// (ChainReader::MapFrom) produces the same extents from there on (merged
// extents are maximal runs, whatever the query granularity), and a
// MapTextRenderer started at that point writes the same bytes from there on.
// A reader of map text at byte offset X (the mount's VOL/map) can thus keep
// a sparse list of resume points from one pass and regenerate any part.
//
// Thread-safety: MapTextRenderer is a value type for one thread; the free
// functions are pure, StreamMapText is as thread-safe as the ChainReader.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace chainfs::core {

class ChainReader;

// One range of `qemu-img map --output=json`.
struct MapExtent {
  uint64_t start = 0;
  uint64_t length = 0;
  int depth = 0;         // chain index of the element that decides the range
  bool present = false;  // some element allocates it (qemu's "present")
  bool zero = false;     // reads as zeros
  bool data = false;     // stored data
  bool compressed = false;
  std::optional<uint64_t> offset;  // host offset in `file`
  // Host file of `offset` ("" without an offset). From ChainReader::MapFrom
  // it views the path its ChainReader keeps: valid while the reader lives,
  // and no allocation per extent.
  std::string_view file;
  bool operator==(const MapExtent&) const = default;
};

// Which of qemu-img map's output formats.
enum class MapFormat {
  kJson,   // --output=json
  kHuman,  // the default table of stored data
};

// A point between two extents of rendered map text.
struct MapResumePoint {
  uint64_t guest_offset = 0;  // start of the next extent (the map's start if none yet)
  uint64_t text_offset = 0;   // bytes of text before it
  uint64_t extents = 0;       // extents rendered before it
};

// Renders extents, in order, as qemu-img map prints them.
class MapTextRenderer {
 public:
  // Starts rendering at `from` (the default: the beginning of a map whose
  // range starts at guest offset 0).
  explicit MapTextRenderer(MapFormat format, const MapResumePoint& from = {});

  // Appends the text before the first extent ("[" or the table's header)
  // unless it was written; Add and Finish call it first.
  void Start(std::string& out);
  // Appends the text of the next extent `e` to `out`. For the human format,
  // kUnsupported (qemu-img's message) when `e` is stored data without a host
  // offset (compressed clusters), as qemu-img refuses after the lines
  // before it.
  Status Add(const MapExtent& e, std::string& out);
  // Appends the text that closes the map. A map with no extent is printed
  // as qemu-img prints an empty disk: one zero-length entry at the start.
  void Finish(std::string& out);
  // Returns the point before the next extent.
  const MapResumePoint& position() const { return pos_; }

 private:
  MapFormat format_;
  MapResumePoint pos_;
  bool started_;  // the opening text is written
  // The host file last printed, escaped once (human format).
  std::string last_file_;
  std::string last_file_escaped_;
};

// Renders `extents` exactly as `qemu-img map --output=json` prints them
// (trailing newline included). For tests and small maps: the text of a
// whole disk comes from StreamMapText.
std::string MapToJson(const std::vector<MapExtent>& extents);

// Renders `extents` as `qemu-img map` (human format) prints them: a header
// line, then one line per range with stored data. kUnsupported for
// compressed data (no host offset), as qemu-img.
Result<std::string> MapToHuman(const std::vector<MapExtent>& extents);

// Receives consecutive pieces of map text; a non-ok return stops.
using MapTextSink = std::function<Status(std::string_view text)>;

// Renders the map of `reader` over [offset, offset + length) (clamped to its
// size) in `format` and hands the text to `sink` in pieces of about
// `chunk_bytes`, in order, as the extents are found: memory stays bounded
// whatever the number of extents. Returns the first error of the map, the
// renderer or the sink; the text handed over before an error stays valid
// (qemu-img also prints what it found before failing).
Status StreamMapText(const ChainReader& reader, MapFormat format, uint64_t offset,
                     uint64_t length, const MapTextSink& sink, size_t chunk_bytes = 64 << 10);

}  // namespace chainfs::core
