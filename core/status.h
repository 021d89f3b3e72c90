// Status and Result<T>: how the engine reports errors, as values (STYLE.md,
// "Errors"). A malformed image is expected input, not an exception.
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace chainfs::core {

// Says what kind of failure a Status carries; fs/ maps each to one errno.
enum class Code {
  kOk,
  kNotFound,          // ENOENT
  kExists,            // EEXIST
  kCorrupt,           // EIO: the bytes on disk make no sense
  kUnsupported,       // ENOTSUP
  kInvalidArgument,   // EINVAL
  kPermissionDenied,  // EACCES
  kBusy,              // EBUSY
  kReadOnly,          // EROFS
  kNoSpace,           // ENOSPC
  kCrossDevice,       // EXDEV
  kIo,                // the saved errno of a failed system call
};

// Names a code in lower case ("not found"), for messages.
const char* CodeName(Code code);

// Carries a code, a one-line message and, for kIo, the errno that caused it.
// Copyable value type; not thread-safe to mutate, safe to share when const.
class Status {
 public:
  Status() = default;
  Status(Code code, std::string message, int sys_errno = 0)
      : code_(code), sys_errno_(sys_errno), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  // Builds a status from a saved errno, choosing the closest Code.
  static Status FromErrno(int saved_errno, std::string message);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  int sys_errno() const { return sys_errno_; }
  const std::string& message() const { return message_; }
  // Returns "code: message", or "ok".
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  int sys_errno_ = 0;
  std::string message_;
};

// Builds a Status whose message is formatted with fmt.
template <typename... Args>
Status Error(Code code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}

// Holds either a value or a non-ok Status.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // Returns the error, or an ok Status when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace chainfs::core

// Returns early from the enclosing function with the error of `expr`.
#define CHAINFS_RETURN_IF_ERROR(expr)             \
  do {                                            \
    ::chainfs::core::Status chainfs_s_ = (expr);  \
    if (!chainfs_s_.ok()) return chainfs_s_;      \
  } while (0)
