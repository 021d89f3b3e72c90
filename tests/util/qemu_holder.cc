#include "util/qemu_holder.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "core/write/in_use.h"

namespace chainfs::testutil {

QemuHolder::QemuHolder(const std::string& image, const std::string& format, Tool tool) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(fds[0], STDIN_FILENO);
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      ::dup2(devnull, STDOUT_FILENO);
      ::dup2(devnull, STDERR_FILENO);
    }
    if (tool == Tool::kQemuIo) {
      ::execlp("qemu-io", "qemu-io", "-f", format.c_str(), image.c_str(),
               static_cast<char*>(nullptr));
    } else if (tool == Tool::kQemuIoReadOnly) {
      ::execlp("qemu-io", "qemu-io", "-r", "-f", format.c_str(), image.c_str(),
               static_cast<char*>(nullptr));
    } else {
      std::string spec =
          "driver=" + format + ",node-name=disk,file.driver=file,file.filename=" + image;
      ::execlp("qemu-storage-daemon", "qemu-storage-daemon", "--blockdev", spec.c_str(),
               static_cast<char*>(nullptr));
    }
    ::_exit(127);
  }
  ::close(fds[0]);
  pipe_ = fds[1];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
    core::Result<bool> busy = core::ImageInUse(image);
    if (busy.ok() && *busy) {
      holding_ = true;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

QemuHolder::~QemuHolder() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  if (pipe_ >= 0) ::close(pipe_);
}

}  // namespace chainfs::testutil
