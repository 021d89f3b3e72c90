// Run: start a command without a shell and collect its output, for tests
// that drive qemu-img, xmllint, chainctl... Plus temporary directories.
#pragma once

#include <string>
#include <vector>

namespace chainfs::testutil {

// What a finished command left behind.
struct RunResult {
  int exit_code = -1;  // exit status; 128 + signal if killed; 127 if exec failed
  std::string out;     // everything written to stdout
  std::string err;     // everything written to stderr
};

// Runs argv[0] (looked up in PATH) with `argv`, stdin from /dev/null, and
// waits for it. Reads stdout and stderr concurrently, so large outputs
// cannot deadlock. Never throws; a failure to start shows as exit code 127
// with the reason in `err`. Thread-safe.
// Note: inside a TEST body an unqualified `Run` names testing::Test::Run;
// write `testutil::Run(...)` or use RunCommand.
RunResult Run(const std::vector<std::string>& argv);

// Same as Run; a name that does not clash with testing::Test::Run.
inline RunResult RunCommand(const std::vector<std::string>& argv) { return Run(argv); }

// Same as Run, with `input` written to the child's stdin.
RunResult RunWithInput(const std::vector<std::string>& argv, const std::string& input);

#ifdef CHAINCTL_BINARY
// Runs the chainctl built with the tests (CHAINCTL_BINARY) with `args`.
inline RunResult RunChainctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {CHAINCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}
#endif

// Runs argv like Run, again (up to 20 times in all, pausing between tries) while it fails with
// qemu's spurious "Unable to get accurate CPU usage": LUKS creation
// benchmarks its key derivation by thread CPU time, which a busy machine can
// make unmeasurable. Any other failure is returned at once.
RunResult RunRetryingQemuCpuBenchmark(const std::vector<std::string>& argv);

// Creates a fresh private directory under $TMPDIR (or /tmp) and returns its
// absolute path; aborts the test binary if that is impossible.
std::string MakeTempDir();

// Removes `path` and everything below it; ignores errors.
void RemoveTree(const std::string& path);

// Owns a MakeTempDir() directory and removes it on destruction. Move-only.
class ScopedTempDir {
 public:
  ScopedTempDir() : path_(MakeTempDir()) {}
  ScopedTempDir(ScopedTempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ScopedTempDir& operator=(ScopedTempDir&&) = delete;
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  ~ScopedTempDir() {
    if (!path_.empty()) RemoveTree(path_);
  }
  // Returns the directory's absolute path.
  const std::string& path() const { return path_; }
  // Returns path() + "/" + name.
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace chainfs::testutil
