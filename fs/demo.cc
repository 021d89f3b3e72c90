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

#include "core/util/endian.h"

extern char** environ;

namespace chainfs::fs {

namespace {

using core::Code;
using core::Error;
using core::Status;

constexpr uint32_t kQcow2Magic = 0x514649fb;
constexpr uint32_t kExtBackingFormat = 0xE2792ACA;

// Callers check off + 4 / off + 8 against b.size() first.
uint32_t Be32(const std::vector<uint8_t>& b, size_t off) { return core::LoadBe32(b.data() + off); }
uint64_t Be64(const std::vector<uint8_t>& b, size_t off) { return core::LoadBe64(b.data() + off); }

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
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (fstat(fd, &st) != 0) return Status::FromErrno(errno, "fstat " + path);
  std::vector<uint8_t> head(std::min<uint64_t>(uint64_t(st.st_size), 2 * 1024 * 1024));
  ssize_t got = pread(fd, head.data(), head.size(), 0);
  if (got < 0) return Status::FromErrno(errno, "read " + path);
  head.resize(size_t(got));
  if (head.size() < 104 || Be32(head, 0) != kQcow2Magic) {
    return Error(Code::kCorrupt, "{}: not a qcow2 image", path);
  }
  uint32_t version = Be32(head, 4);
  uint64_t backing_offset = Be64(head, 8);
  uint32_t cluster_bits = Be32(head, 20);
  if (version < 2 || version > 3 || cluster_bits < 9 || cluster_bits > 21) {
    return Error(Code::kCorrupt, "{}: unexpected qcow2 header", path);
  }
  size_t ext_start = version == 2 ? 72 : Be32(head, 100);
  size_t limit = std::min<size_t>(size_t(1) << cluster_bits, head.size());
  if (backing_offset > ext_start && backing_offset < limit) limit = size_t(backing_offset);
  if (ext_start < 72 || ext_start >= limit) return Error(Code::kCorrupt, "{}: bad header length", path);

  std::vector<uint8_t> kept;
  bool found = false;
  size_t off = ext_start;
  for (;;) {
    if (off + 8 > limit) return Error(Code::kCorrupt, "{}: header extensions run past {}", path, limit);
    uint32_t type = Be32(head, off);
    uint32_t len = Be32(head, off + 4);
    if (type == 0) break;
    size_t padded = (size_t(len) + 7) & ~size_t(7);
    if (padded > limit - off - 8) return Error(Code::kCorrupt, "{}: header extension too long", path);
    if (type == kExtBackingFormat) {
      found = true;
    } else {
      kept.insert(kept.end(), head.begin() + long(off), head.begin() + long(off + 8 + padded));
    }
    off += 8 + padded;
  }
  if (!found) return Error(Code::kNotFound, "{}: no backing format recorded", path);
  size_t old_end = off + 8;  // including the end marker
  std::vector<uint8_t> area(old_end - ext_start, 0);
  std::copy(kept.begin(), kept.end(), area.begin());  // zero tail = end marker + padding
  if (pwrite(fd, area.data(), area.size(), off_t(ext_start)) != ssize_t(area.size())) {
    return Status::FromErrno(errno, "write " + path);
  }
  if (fsync(fd) != 0) return Status::FromErrno(errno, "fsync " + path);
  return Status::Ok();
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
