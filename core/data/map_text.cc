#include "core/data/map_text.h"

#include "core/data/chain_reader.h"
#include "core/util/escape.h"

namespace chainfs::core {
namespace {

std::string Hex(uint64_t v) { return v == 0 ? std::string("0") : fmt::format("{:#x}", v); }

void AppendJsonBody(const MapExtent& e, std::string& out) {
  fmt::format_to(
      std::back_inserter(out),
      R"({{ "start": {}, "length": {}, "depth": {}, "present": {}, "zero": {}, "data": {})",
      e.start, e.length, e.depth, e.present, e.zero, e.data);
  if (e.offset) fmt::format_to(std::back_inserter(out), R"(, "offset": {})", *e.offset);
  out += "}";
}

void AppendHumanLine(std::string_view a, std::string_view b, std::string_view c,
                     std::string_view d, std::string& out) {
  fmt::format_to(std::back_inserter(out), "{:<16}{:<16}{:<16}{}\n", a, b, c, d);
}

}  // namespace

MapTextRenderer::MapTextRenderer(MapFormat format, const MapResumePoint& from)
    : format_(format), pos_(from), started_(from.text_offset > 0) {}

void MapTextRenderer::Start(std::string& out) {
  if (started_) return;
  started_ = true;
  const size_t before = out.size();
  if (format_ == MapFormat::kJson) {
    out += "[";
  } else {
    AppendHumanLine("Offset", "Length", "Mapped to", "File", out);
  }
  pos_.text_offset += out.size() - before;
}

Status MapTextRenderer::Add(const MapExtent& e, std::string& out) {
  Start(out);
  const size_t before = out.size();
  if (format_ == MapFormat::kJson) {
    if (pos_.extents > 0) out += ",\n";
    AppendJsonBody(e, out);
  } else {
    // qemu-img lists stored data only, and cannot show data without a host
    // offset; it fails there, after the lines before.
    if (e.data && !e.offset) {
      return Error(Code::kUnsupported, "File contains external, encrypted or compressed clusters.");
    }
    if (e.data && !e.zero) {
      // A host path is one line of this table: escaped (unchanged for any
      // ordinary path, so the table stays qemu-img's).
      if (e.file != last_file_) {
        last_file_ = std::string(e.file);
        last_file_escaped_ = EscapeOneLine(e.file);
      }
      AppendHumanLine(Hex(e.start), Hex(e.length), Hex(e.offset.value_or(0)), last_file_escaped_,
                      out);
    }
  }
  pos_.text_offset += out.size() - before;
  pos_.guest_offset = e.start + e.length;
  ++pos_.extents;
  return Status::Ok();
}

void MapTextRenderer::Finish(std::string& out) {
  Start(out);
  const size_t before = out.size();
  if (format_ == MapFormat::kJson) {
    if (pos_.extents == 0) {
      // qemu-img prints its initial, empty entry when the range is empty.
      MapExtent empty;
      empty.start = pos_.guest_offset;
      AppendJsonBody(empty, out);
    }
    out += "]\n";
  }
  pos_.text_offset += out.size() - before;
}

std::string MapToJson(const std::vector<MapExtent>& extents) {
  MapTextRenderer r(MapFormat::kJson);
  std::string out;
  for (const MapExtent& e : extents) (void)r.Add(e, out);  // JSON never fails
  r.Finish(out);
  return out;
}

Result<std::string> MapToHuman(const std::vector<MapExtent>& extents) {
  MapTextRenderer r(MapFormat::kHuman);
  std::string out;
  for (const MapExtent& e : extents) CHAINFS_RETURN_IF_ERROR(r.Add(e, out));
  r.Finish(out);
  return out;
}

Status StreamMapText(const ChainReader& reader, MapFormat format, uint64_t offset,
                     uint64_t length, const MapTextSink& sink, size_t chunk_bytes) {
  MapResumePoint start;
  start.guest_offset = offset;
  MapTextRenderer renderer(format, start);
  MapIterator it = reader.MapFrom(offset, length);
  std::string buf;
  buf.reserve(chunk_bytes + 256);
  // As qemu-img, the opening text goes out before the first query can fail.
  renderer.Start(buf);
  for (;;) {
    Result<std::optional<MapExtent>> e = it.Next();
    if (!e.ok()) {
      if (!buf.empty()) CHAINFS_RETURN_IF_ERROR(sink(buf));
      return e.status();
    }
    if (!*e) break;
    Status s = renderer.Add(**e, buf);
    if (!s.ok()) {
      if (!buf.empty()) CHAINFS_RETURN_IF_ERROR(sink(buf));
      return s;
    }
    if (buf.size() >= chunk_bytes) {
      CHAINFS_RETURN_IF_ERROR(sink(buf));
      buf.clear();
    }
  }
  renderer.Finish(buf);
  return sink(buf);
}

}  // namespace chainfs::core
