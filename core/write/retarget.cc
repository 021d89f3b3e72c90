#include "core/write/retarget.h"

#include "core/chain/backing_ref.h"
#include "core/format/driver.h"
#include "core/format/qcow2/writer.h"
#include "core/write/in_use.h"

namespace chainfs::core {
namespace {

// Checks what every retarget needs before it looks at the target: a string
// qemu can record and a qcow2 image that is not in use.
Status CheckRetargetable(ImageInspector& inspector, const std::string& path,
                         const std::string& new_backing, std::shared_ptr<const Inspection>& image) {
  if (new_backing.empty()) {
    return Error(Code::kInvalidArgument,
                 "an empty backing string would drop the backing file and change what the guest "
                 "sees; use rebase to flatten");
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

}  // namespace

Status Retarget(ImageInspector& inspector, const std::string& path, const std::string& new_backing,
                const TrustContext& trust) {
  std::shared_ptr<const Inspection> image;
  CHAINFS_RETURN_IF_ERROR(CheckRetargetable(inspector, path, new_backing, image));
  std::string resolved;
  CHAINFS_RETURN_IF_ERROR(ResolveTarget(inspector, path, new_backing, resolved));
  std::optional<std::string> recorded;
  if (image->meta) recorded = image->meta->backing_format;
  std::string format;
  if (recorded && FindDriver(*recorded) != nullptr) {
    format = *recorded;
  } else {
    if (resolved.empty()) {
      return Error(Code::kUnsupported,
                   "'{}' is a network source whose format cannot be checked; declare it with "
                   "chainctl rebase -u -F FMT",
                   new_backing);
    }
    Result<std::string> trusted = TrustedBackingFormat(inspector, resolved, trust);
    if (!trusted.ok()) return trusted.status();
    format = *trusted;
  }
  Status s = RewriteBacking(path, new_backing, format);
  inspector.Clear();
  return s;
}

Status Retarget(ImageInspector& inspector, const std::string& path, const std::string& new_backing,
                const std::string& backing_format, const TrustContext& /*trust*/) {
  if (FindDriver(backing_format) == nullptr) {
    return Error(Code::kInvalidArgument, "'{}' is not a known image format", backing_format);
  }
  std::shared_ptr<const Inspection> image;
  CHAINFS_RETURN_IF_ERROR(CheckRetargetable(inspector, path, new_backing, image));
  std::string resolved;
  CHAINFS_RETURN_IF_ERROR(ResolveTarget(inspector, path, new_backing, resolved));
  Status s = RewriteBacking(path, new_backing, backing_format);
  inspector.Clear();
  return s;
}

Status SetBackingFormat(const std::string& path, const std::string& format) {
  if (FindDriver(format) == nullptr) {
    return Error(Code::kInvalidArgument, "'{}' is not a known image format", format);
  }
  CHAINFS_RETURN_IF_ERROR(CheckNotInUse(path));
  return RewriteBackingFormat(path, format);
}

}  // namespace chainfs::core
