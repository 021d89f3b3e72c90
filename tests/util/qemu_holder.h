// QemuHolder: a real QEMU process (qemu-io or qemu-storage-daemon) holding
// an image open, and so its image locks, the way a running VM does. For the
// "image in use" tests.
#pragma once

#include <sys/types.h>

#include <string>

namespace chainfs::testutil {

class QemuHolder {
 public:
  enum class Tool {
    kQemuIo,          // qemu-io reading commands from a pipe that stays open
    kStorageDaemon,   // qemu-storage-daemon --blockdev
    kQemuIoReadOnly,  // qemu-io -r: QEMU's read permission only, as it holds a backing file
  };

  // Starts the tool on `image` (opened as `format`) and waits up to 10 s
  // until the image shows QEMU's locks. Check holding() before relying on it.
  QemuHolder(const std::string& image, const std::string& format, Tool tool = Tool::kQemuIo);
  // Kills the process by PID (SIGKILL) and reaps it.
  ~QemuHolder();
  QemuHolder(const QemuHolder&) = delete;
  QemuHolder& operator=(const QemuHolder&) = delete;

  // Returns true once the image's locks were seen held.
  bool holding() const { return holding_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int pipe_ = -1;  // qemu-io's stdin, kept open so that it waits for commands
  bool holding_ = false;
};

}  // namespace chainfs::testutil
