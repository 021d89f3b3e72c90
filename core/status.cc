#include "core/status.h"

#include <cerrno>
#include <cstring>

namespace chainfs::core {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kNotFound: return "not found";
    case Code::kExists: return "exists";
    case Code::kCorrupt: return "corrupt";
    case Code::kUnsupported: return "unsupported";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kPermissionDenied: return "permission denied";
    case Code::kBusy: return "busy";
    case Code::kReadOnly: return "read-only";
    case Code::kNoSpace: return "no space";
    case Code::kCrossDevice: return "cross-device";
    case Code::kIo: return "I/O error";
  }
  return "unknown";
}

Status Status::FromErrno(int saved_errno, std::string message) {
  Code code = Code::kIo;
  switch (saved_errno) {
    case ENOENT: case ENOTDIR: code = Code::kNotFound; break;
    case EEXIST: code = Code::kExists; break;
    case EACCES: case EPERM: code = Code::kPermissionDenied; break;
    case EBUSY: case EAGAIN: code = Code::kBusy; break;
    case EROFS: code = Code::kReadOnly; break;
    case ENOSPC: case EDQUOT: code = Code::kNoSpace; break;
    case EXDEV: code = Code::kCrossDevice; break;
    case EINVAL: code = Code::kInvalidArgument; break;
    default: break;
  }
  return Status(code, fmt::format("{}: {}", message, std::strerror(saved_errno)), saved_errno);
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return fmt::format("{}: {}", CodeName(code_), message_);
}

}  // namespace chainfs::core
