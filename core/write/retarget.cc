#include "core/write/retarget.h"

#include "core/chain/backing_ref.h"
#include "core/format/driver.h"
#include "core/format/qcow2/writer.h"
#include "core/write/in_use.h"
#include "core/write/loop_check.h"

namespace chainfs::core {
namespace {

// Checks what every retarget needs before it looks at the target: a string
// qemu can record and a qcow2 image that is not in use.
Status CheckRetargetable(ImageInspector& inspector, const std::string& path,
                         const std::string& new_backing, const TrustContext& trust,
                         std::shared_ptr<const Inspection>& image) {
  if (new_backing.empty()) {
    return Error(Code::kInvalidArgument,
                 "an empty backing string would drop the backing file and change what the guest "
                 "sees; to flatten, rebase: {}",
                 Suggest(trust, {Suggestion::kFlattenInstead, path, ""}));
  }
  CHAINFS_RETURN_IF_ERROR(ValidateBackingString(new_backing));
  Result<std::shared_ptr<const Inspection>> in = inspector.Inspect(path);
  if (!in.ok()) return in.status();
  if ((*in)->probed_format != "qcow2") {
    return Error(Code::kUnsupported, "'{}' is {}, not qcow2; only qcow2 records a backing", path,
                 (*in)->probed_format);
  }
  CHAINFS_RETURN_IF_ERROR(CheckNotInUse(path));
  image = *in;
  return Status::Ok();
}

// Resolves `new_backing` as the image at `path` would and checks the target
// exists. Sets `resolved` for local files; leaves it empty for network ones.
Status ResolveTarget(ImageInspector& inspector, const std::string& path,
                     const std::string& new_backing, std::string& resolved) {
  Result<BackingRef> ref = ClassifyBacking(new_backing, path);
  if (!ref.ok()) return ref.status();
  if (!ref->IsLocal() && ref->resolved_path.empty()) return Status::Ok();
  resolved = ref->resolved_path;
  Result<std::shared_ptr<const Inspection>> target = inspector.Inspect(resolved);
  if (!target.ok()) {
    if (target.status().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "new backing '{}' ({}) does not exist", new_backing, resolved);
    }
    return target.status();
  }
  return Status::Ok();
}

// Decides the format to record for a retarget without -F: the recorded one
// while the new target probes as it, else the trust rule's.
Result<std::string> RetargetFormat(ImageInspector& inspector, const std::string& path,
                                   const std::string& new_backing, const std::string& resolved,
                                   const std::optional<std::string>& recorded,
                                   const TrustContext& trust) {
  const bool known = recorded && FindDriver(*recorded) != nullptr;
  const SuggestionArgs declare{Suggestion::kDeclareFormatForRetarget, path, new_backing};
  if (resolved.empty()) {
    if (known) return *recorded;  // nothing to probe: the declared format stands
    return Error(Code::kUnsupported,
                 "'{}' is a network source whose format cannot be checked; declare it: {}",
                 new_backing, Suggest(trust, declare));
  }
  Result<std::shared_ptr<const Inspection>> target = inspector.Inspect(resolved);
  if (!target.ok()) return target.status();
  const std::string& probed = (*target)->probed_format;
  if (known && *recorded == probed) return *recorded;
  Result<std::string> trusted = TrustedBackingFormat(inspector, resolved, trust, declare);
  if (!trusted.ok() && known) {
    // Keeping the recorded format would have QEMU read the new file as what it is not.
    return Status(trusted.status().code(),
                  fmt::format("new backing '{}' probes as {}, not the recorded backing format {}; "
                              "{}",
                              new_backing, probed, *recorded, trusted.status().message()),
                  trusted.status().sys_errno());
  }
  return trusted;
}

// Rewrites the backing of `image` at `path` after the loop check.
Status Rewrite(ImageInspector& inspector, const std::string& path, const Inspection& image,
               const std::string& new_backing, const std::string& resolved,
               const std::string& format) {
  if (!resolved.empty()) {
    LoopSubject subject{path, image.stat.id, std::nullopt};
    CHAINFS_RETURN_IF_ERROR(CheckNoLoop(inspector, subject, new_backing, resolved, format));
  }
  Status s = RewriteBacking(path, new_backing, format);
  inspector.Clear();
  return s;
}

}  // namespace

Status Retarget(ImageInspector& inspector, const std::string& path, const std::string& new_backing,
                const TrustContext& trust) {
  std::shared_ptr<const Inspection> image;
  CHAINFS_RETURN_IF_ERROR(CheckRetargetable(inspector, path, new_backing, trust, image));
  std::string resolved;
  CHAINFS_RETURN_IF_ERROR(ResolveTarget(inspector, path, new_backing, resolved));
  std::optional<std::string> recorded;
  if (image->meta) recorded = image->meta->backing_format;
  Result<std::string> format =
      RetargetFormat(inspector, path, new_backing, resolved, recorded, trust);
  if (!format.ok()) {
    // A loop is the more fundamental refusal: name it even when no format
    // can be decided, with the target probed as QEMU opens a backing whose
    // format is not given.
    if (!resolved.empty()) {
      CHAINFS_RETURN_IF_ERROR(CheckNoLoop(
          inspector, LoopSubject{path, image->stat.id, std::nullopt}, new_backing, resolved, ""));
    }
    return format.status();
  }
  return Rewrite(inspector, path, *image, new_backing, resolved, *format);
}

Status Retarget(ImageInspector& inspector, const std::string& path, const std::string& new_backing,
                const std::string& backing_format, const TrustContext& trust) {
  if (FindDriver(backing_format) == nullptr) {
    return Error(Code::kInvalidArgument, "'{}' is not a known image format", backing_format);
  }
  std::shared_ptr<const Inspection> image;
  CHAINFS_RETURN_IF_ERROR(CheckRetargetable(inspector, path, new_backing, trust, image));
  std::string resolved;
  CHAINFS_RETURN_IF_ERROR(ResolveTarget(inspector, path, new_backing, resolved));
  return Rewrite(inspector, path, *image, new_backing, resolved, backing_format);
}

Status SetBackingFormat(const std::string& path, const std::string& format) {
  if (FindDriver(format) == nullptr) {
    return Error(Code::kInvalidArgument, "'{}' is not a known image format", format);
  }
  ImageInspector inspector;
  Result<std::shared_ptr<const Inspection>> in = inspector.Inspect(path);
  if (!in.ok()) return in.status();
  if ((*in)->probed_format != "qcow2") {
    return Error(Code::kUnsupported, "'{}' is {}, not qcow2; only qcow2 records a backing format",
                 path, (*in)->probed_format);
  }
  const std::shared_ptr<const ImageMeta>& meta = (*in)->meta;
  if (meta && (!meta->backing || meta->backing->empty())) {
    return Error(Code::kUnsupported,
                 "'{}' has no backing file, so there is no backing format to record (it is "
                 "recorded together with a backing)",
                 path);
  }
  CHAINFS_RETURN_IF_ERROR(CheckNotInUse(path));
  return RewriteBackingFormat(path, format);
}

}  // namespace chainfs::core
