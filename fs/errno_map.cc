#include "fs/errno_map.h"

#include <cerrno>

namespace chainfs::fs {

int ErrnoFromStatus(const core::Status& status) {
  using core::Code;
  switch (status.code()) {
    case Code::kOk: return 0;
    case Code::kNotFound: return ENOENT;
    case Code::kExists: return EEXIST;
    case Code::kCorrupt: return EIO;
    case Code::kUnsupported: return ENOTSUP;
    case Code::kInvalidArgument: return EINVAL;
    case Code::kPermissionDenied: return EACCES;
    case Code::kBusy: return EBUSY;
    case Code::kReadOnly: return EROFS;
    case Code::kNoSpace: return ENOSPC;
    case Code::kCrossDevice: return EXDEV;
    case Code::kIo: return status.sys_errno() > 0 ? status.sys_errno() : EIO;
  }
  return EIO;
}

const char* ErrnoName(int err) {
  switch (err) {
    case 0: return "ok";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EIO: return "EIO";
    case ENOTSUP: return "ENOTSUP";
    case EINVAL: return "EINVAL";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EBUSY: return "EBUSY";
    case EROFS: return "EROFS";
    case ENOSPC: return "ENOSPC";
    case EXDEV: return "EXDEV";
    case ENOMEM: return "ENOMEM";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case ENOSYS: return "ENOSYS";
    case ELOOP: return "ELOOP";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    default: return "E?";
  }
}

}  // namespace chainfs::fs
