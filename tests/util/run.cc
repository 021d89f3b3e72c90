#include "tests/util/run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <cstring>
#include <filesystem>

extern char** environ;

namespace chainfs::testutil {
namespace {

// Closes a descriptor once; keeps the slot at -1 afterwards.
void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

RunResult Fail(const std::string& what, int saved_errno) {
  RunResult r;
  r.exit_code = 127;
  r.err = what + ": " + std::strerror(saved_errno);
  return r;
}

RunResult RunImpl(const std::vector<std::string>& argv, const std::string* input) {
  if (argv.empty()) return Fail("Run: empty argv", EINVAL);
  if (input != nullptr) ::signal(SIGPIPE, SIG_IGN);  // a child may exit before reading all input

  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, in_pipe[2] = {-1, -1};
  auto close_all = [&] {
    for (int* p : {out_pipe, err_pipe, in_pipe}) {
      CloseFd(p[0]);
      CloseFd(p[1]);
    }
  };
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 ||
      (input != nullptr && ::pipe2(in_pipe, O_CLOEXEC) != 0)) {
    int e = errno;
    close_all();
    return Fail("pipe2", e);
  }

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (input != nullptr) {
    posix_spawn_file_actions_adddup2(&fa, in_pipe[0], STDIN_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], STDERR_FILENO);

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    close_all();
    return Fail("cannot run " + argv[0], rc);
  }
  CloseFd(out_pipe[1]);
  CloseFd(err_pipe[1]);
  CloseFd(in_pipe[0]);

  RunResult result;
  size_t written = 0;
  if (input != nullptr && input->empty()) CloseFd(in_pipe[1]);
  char buf[65536];
  while (out_pipe[0] >= 0 || err_pipe[0] >= 0 || in_pipe[1] >= 0) {
    pollfd fds[3];
    int n = 0;
    int* slots[3];
    std::string* sinks[3];
    for (auto [fd, sink] : {std::pair{&out_pipe[0], &result.out}, {&err_pipe[0], &result.err}}) {
      if (*fd < 0) continue;
      fds[n] = {*fd, POLLIN, 0};
      slots[n] = fd;
      sinks[n] = sink;
      ++n;
    }
    if (in_pipe[1] >= 0) {
      fds[n] = {in_pipe[1], POLLOUT, 0};
      slots[n] = &in_pipe[1];
      sinks[n] = nullptr;
      ++n;
    }
    if (::poll(fds, nfds_t(n), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (sinks[i] == nullptr) {  // stdin
        ssize_t w = ::write(*slots[i], input->data() + written, input->size() - written);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          CloseFd(*slots[i]);
          continue;
        }
        written += size_t(w);
        if (written == input->size()) CloseFd(*slots[i]);
        continue;
      }
      ssize_t got = ::read(*slots[i], buf, sizeof(buf));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        CloseFd(*slots[i]);
        continue;
      }
      sinks[i]->append(buf, size_t(got));
    }
  }
  close_all();

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Fail("waitpid", errno);
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  return result;
}

// Makes every directory below `dir` writable and searchable again, so a test
// that chmod-ed things away cannot leave its directory behind.
void MakeRemovable(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(std::filesystem::symlink_status(dir, ec))) return;
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::add, ec);
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    MakeRemovable(it->path());
  }
}

}  // namespace

RunResult Run(const std::vector<std::string>& argv) { return RunImpl(argv, nullptr); }

RunResult RunWithInput(const std::vector<std::string>& argv, const std::string& input) {
  return RunImpl(argv, &input);
}

RunResult RunRetryingQemuCpuBenchmark(const std::vector<std::string>& argv) {
  RunResult r;
  for (int attempt = 0; attempt < 20; ++attempt) {
    r = Run(argv);
    if (r.exit_code == 0 || r.err.find("accurate CPU usage") == std::string::npos) break;
    // Let the CPU contention that spoils qemu's measurement pass.
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + 50 * attempt));
  }
  return r;
}

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/chainfs-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "MakeTempDir: mkdtemp(%s): %s\n", tmpl.c_str(), std::strerror(errno));
    std::abort();
  }
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(tmpl, ec);
  return ec ? tmpl : abs.string();
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::remove_all(path, ec) != static_cast<std::uintmax_t>(-1) && !ec) return;
  MakeRemovable(path);
  std::filesystem::remove_all(path, ec);
}

}  // namespace chainfs::testutil
