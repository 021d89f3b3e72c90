#include "fs/demo.h"

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/format/qcow2/header.h"
#include "core/format/qcow2/writer.h"
#include "core/io/file.h"

extern char** environ;

namespace chainfs::fs {

namespace {

using core::Code;
using core::Error;
using core::Status;

// Runs qemu-img with `args` in `dir`, stdout to /dev/null.
Status RunQemuImg(const std::string& dir, const std::vector<std::string>& args) {
  std::vector<std::string> full = {"qemu-img"};
  full.insert(full.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addchdir_np(&actions, dir.c_str());
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "qemu-img", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Status(Code::kNotFound, fmt::format("cannot run qemu-img: {}", std::strerror(rc)));
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return Status::FromErrno(errno, "waitpid qemu-img");
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    std::string cmd;
    for (const std::string& a : full) cmd += (cmd.empty() ? "" : " ") + a;
    return Error(Code::kIo, "'{}' failed", cmd);
  }
  return Status::Ok();
}

}  // namespace

Status StripQcow2BackingFormat(const std::string& path) {
  core::Result<core::File> file = core::File::OpenRead(path);
  if (!file.ok()) return file.status();
  core::Result<core::Qcow2Header> h = core::ParseQcow2Header(*file);
  if (!h.ok()) return Error(Code::kCorrupt, "{}: not a qcow2 image this code understands: {}", path,
                            h.status().message());
  if (!h->backing_format) return Error(Code::kNotFound, "{}: no backing format recorded", path);
  // The engine's own header rewrite: keeps every other extension, one pwrite + fsync.
  return core::RewriteBacking(path, h->backing_file, std::nullopt);
}

core::Result<std::string> MakeDemoPool() {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/chainfs-demo-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return Status::FromErrno(errno, "mkdtemp " + templ);
  std::string dir(buf.data());
  if (dir[0] != '/') {
    char* abs = realpath(dir.c_str(), nullptr);
    if (abs) {
      dir = abs;
      std::free(abs);
    }
  }
  chmod(dir.c_str(), 0755);
  Status s;
  auto step = [&](const std::vector<std::string>& args) {
    if (s.ok()) s = RunQemuImg(dir, args);
  };
  step({"create", "-q", "-f", "raw", "base.raw", "64M"});
  step({"create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2"});
  step({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2"});
  step({"create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "noformat.qcow2"});
  step({"create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", "orphan.qcow2",
        "64M"});
  if (s.ok()) s = StripQcow2BackingFormat(dir + "/noformat.qcow2");
  if (!s.ok()) {
    RemoveDemoPool(dir);
    return s;
  }
  return dir;
}

void RemoveDemoPool(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (struct dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      unlink((dir + "/" + name).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

}  // namespace chainfs::fs
