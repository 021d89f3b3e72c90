#include "core/write/create.h"

#include <sys/stat.h>

#include <cerrno>

#include "core/format/driver.h"
#include "core/write/loop_check.h"

namespace chainfs::core {

Status CreateOverlay(ImageInspector& inspector, const std::string& new_path,
                     const std::string& backing_as_written,
                     const std::string& backing_resolved_path,
                     std::optional<std::string> backing_format, const TrustContext& trust) {
  return CreateOverlay(inspector, new_path, backing_as_written, backing_resolved_path,
                       std::move(backing_format), trust, NewFileOptions{});
}

Status CreateOverlay(ImageInspector& inspector, const std::string& new_path,
                     const std::string& backing_as_written,
                     const std::string& backing_resolved_path,
                     std::optional<std::string> backing_format, const TrustContext& trust,
                     const NewFileOptions& file) {
  CHAINFS_RETURN_IF_ERROR(ValidateBackingString(backing_as_written));
  // Refuse a taken name before looking at the backing at all: cheapest, and
  // the answer `ln -s` users expect first. CreateFileAtomically re-checks
  // atomically at link time.
  struct stat st;
  if (::lstat(new_path.c_str(), &st) == 0) {
    return Error(Code::kExists, "'{}' already exists", new_path);
  }
  if (backing_format) {
    if (FindDriver(*backing_format) == nullptr) {
      return Error(Code::kInvalidArgument, "'{}' is not a known image format", *backing_format);
    }
  }
  Result<std::shared_ptr<const Inspection>> probed = inspector.Inspect(backing_resolved_path);
  if (!probed.ok()) {
    if (probed.status().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "backing '{}' does not exist", backing_resolved_path);
    }
    return probed.status();
  }
  std::string format;
  if (backing_format) {
    format = *backing_format;
  } else {
    Result<std::string> trusted = TrustedBackingFormat(
        inspector, backing_resolved_path, trust,
        SuggestionArgs{Suggestion::kDeclareFormatForCreate, new_path, backing_as_written});
    if (!trusted.ok()) return trusted.status();
    format = *trusted;
  }
  Result<std::shared_ptr<const Inspection>> in = inspector.Inspect(backing_resolved_path, format);
  if (!in.ok()) return in.status();
  if (!(*in)->parse_status.ok()) {
    return Error(Code::kCorrupt, "backing '{}' cannot be read as {}: {}", backing_resolved_path,
                 format, (*in)->parse_status.message());
  }
  // The new name may be what a dangling backing string below spells.
  CHAINFS_RETURN_IF_ERROR(CheckNoLoop(inspector, LoopSubject{new_path, std::nullopt, new_path},
                                      backing_as_written, backing_resolved_path, format));
  Qcow2CreateOptions opts;
  opts.version = 3;
  opts.size = (*in)->meta->virtual_size;
  opts.backing = backing_as_written;
  opts.backing_format = format;
  opts.file = file;
  return CreateQcow2(new_path, opts);
}

}  // namespace chainfs::core
