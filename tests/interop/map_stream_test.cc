// `chainctl map` streams (issue 9): on an image with 262,144 extents its
// output is byte-identical to qemu-img map's, in both formats, and its peak
// memory does not grow with the number of extents (the whole map used to be
// kept before printing).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "util/qcow2_craft.h"
#include "util/run.h"

namespace chainfs {
namespace {

using testutil::CraftCluster;
using testutil::RunResult;
using testutil::ScopedTempDir;

// A 128 MiB disk of 512-byte clusters whose clusters go data, zero,
// unallocated, zero, data, ...: no two neighbours merge, so qemu-img map
// lists 262,144 extents, with 32 MiB of data.
constexpr uint64_t kClusters = 262144;
constexpr uint32_t kClusterBits = 9;

CraftCluster Pattern(uint64_t i) {
  switch (i % 4) {
    case 0:
      return CraftCluster::kData;
    case 2:
      return CraftCluster::kUnallocated;
    default:
      return CraftCluster::kZero;
  }
}

// What a finished child left: exit status and peak resident memory.
struct Measured {
  int exit_code = -1;
  long max_rss_kib = 0;
  std::string err;
};

// getrusage's ru_maxrss of a child forked from this test process would count
// the pages it shares with this (large, long-lived) process before its exec.
// So the test binary doubles as a small measuring parent: started afresh
// with these variables set, it runs the command before any test, with
// stdout to a file, and writes "EXIT MAXRSS_KIB" to another, then exits.
constexpr char kProbeArgv[] = "CHAINFS_RSS_PROBE_ARGV";      // arguments, '\x1f'-separated
constexpr char kProbeStdout[] = "CHAINFS_RSS_PROBE_STDOUT";  // file for the command's stdout
constexpr char kProbeResult[] = "CHAINFS_RSS_PROBE_RESULT";  // file for "EXIT MAXRSS_KIB"

[[noreturn]] void RunProbe(const char* joined, const char* out_path, const char* result_path) {
  std::vector<std::string> argv;
  std::string cur;
  for (const char* p = joined; *p; ++p) {
    if (*p == '\x1f') {
      argv.push_back(cur);
      cur.clear();
    } else {
      cur += *p;
    }
  }
  argv.push_back(cur);
  const std::string err_path = std::string(out_path) + ".err";
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || err < 0 || in < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::unsetenv(kProbeArgv);
    ::unsetenv(kProbeStdout);
    ::unsetenv(kProbeResult);
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  pid_t got = -1;
  if (pid > 0) {
    do {
      got = ::wait4(pid, &status, 0, &ru);
    } while (got < 0 && errno == EINTR);
  }
  std::ofstream(result_path) << (got == pid && WIFEXITED(status) ? WEXITSTATUS(status) : 128)
                             << " " << ru.ru_maxrss << "\n";
  ::_exit(0);
}

// Runs before main() in every start of this binary; a probe never returns.
const bool kProbeChecked = [] {
  const char* joined = std::getenv(kProbeArgv);
  const char* out = std::getenv(kProbeStdout);
  const char* result = std::getenv(kProbeResult);
  if (joined && out && result) RunProbe(joined, out, result);
  return true;
}();

// Runs argv with stdout to `out_path` (a file: the outputs are tens of MB)
// through a fresh probe process, and returns its exit status and peak RSS.
Measured RunToFile(const std::vector<std::string>& argv, const std::string& out_path) {
  Measured m;
  std::string joined;
  for (size_t i = 0; i < argv.size(); ++i) joined += (i ? "\x1f" : "") + argv[i];
  const std::string result_path = out_path + ".rusage";
  std::vector<std::string> env = {std::string(kProbeArgv) + "=" + joined,
                                  std::string(kProbeStdout) + "=" + out_path,
                                  std::string(kProbeResult) + "=" + result_path};
  for (char** e = environ; *e; ++e) env.push_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char self[] = "/proc/self/exe";
  char* probe_argv[] = {self, nullptr};
  pid_t pid = ::fork();
  if (pid < 0) {
    m.err = std::strerror(errno);
    return m;
  }
  if (pid == 0) {
    ::execve(self, probe_argv, envp.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream r(result_path);
  if (!(r >> m.exit_code >> m.max_rss_kib)) m.err = "the probe process reported nothing";
  std::ifstream f(out_path + ".err");
  m.err.append(std::istreambuf_iterator<char>(f), {});
  return m;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

class MapStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScopedTempDir();
    testutil::CraftOptions o;
    o.cluster_bits = kClusterBits;
    o.size = kClusters << kClusterBits;
    ASSERT_TRUE(testutil::WriteBytes(Image(), testutil::CraftQcow2WithClusters(o, Pattern)).ok());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string Image() { return dir_->Sub("patchwork.qcow2"); }
  static std::string P(const std::string& name) { return dir_->Sub(name); }

  static ScopedTempDir* dir_;
};

ScopedTempDir* MapStreamTest::dir_ = nullptr;

TEST_F(MapStreamTest, CraftedImageIsCleanForQemu) {
  RunResult c = testutil::Run({"qemu-img", "check", Image()});
  EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
  EXPECT_NE(c.out.find("No errors were found"), std::string::npos) << c.out;
}

TEST_F(MapStreamTest, JsonIsByteIdenticalToQemuImgWithBoundedMemory) {
  // A large test process must not show in the figures (see RunToFile).
  std::vector<char> ballast(96 << 20, 1);
  Measured q = RunToFile({"qemu-img", "map", "--output=json", Image()}, P("qemu.json"));
  ASSERT_EQ(q.exit_code, 0) << q.err;
  Measured c = RunToFile({CHAINCTL_BINARY, "map", "--json", Image()}, P("chainctl.json"));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::string theirs = Slurp(P("qemu.json"));
  const std::string ours = Slurp(P("chainctl.json"));
  const size_t lines = size_t(std::count(theirs.begin(), theirs.end(), '\n'));
  EXPECT_GE(lines, kClusters) << "the image must have at least 262,144 extents";
  ASSERT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs) << "chainctl map --json differs from qemu-img map --output=json";

  // The same process reading the same image but printing nothing: what the
  // binary, its libraries (and a sanitizer runtime) cost without a map.
  Measured base = RunToFile({CHAINCTL_BINARY, "info", Image()}, P("info.txt"));
  ASSERT_EQ(base.exit_code, 0) << base.err;
  RecordProperty("chainctl_map_json_max_rss_kib", std::to_string(c.max_rss_kib));
  RecordProperty("chainctl_info_max_rss_kib", std::to_string(base.max_rss_kib));
  RecordProperty("qemu_img_map_json_max_rss_kib", std::to_string(q.max_rss_kib));
  // 26 MB of JSON; the L2 tables are 2 MiB. Kept in memory, the map alone
  // would take far more than this margin.
  EXPECT_LT(c.max_rss_kib, 40 * 1024) << "peak RSS of chainctl map --json";
  EXPECT_LT(c.max_rss_kib - base.max_rss_kib, 12 * 1024)
      << "chainctl map --json: " << c.max_rss_kib << " KiB, chainctl info: " << base.max_rss_kib
      << " KiB";
  EXPECT_LT(base.max_rss_kib, 40 * 1024) << "the measurement counts the test process";
  EXPECT_EQ(ballast[ballast.size() / 2], 1);
}

TEST_F(MapStreamTest, HumanTableIsByteIdenticalToQemuImgWithBoundedMemory) {
  Measured q = RunToFile({"qemu-img", "map", Image()}, P("qemu.txt"));
  ASSERT_EQ(q.exit_code, 0) << q.err;
  Measured c = RunToFile({CHAINCTL_BINARY, "map", Image()}, P("chainctl.txt"));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::string theirs = Slurp(P("qemu.txt"));
  const std::string ours = Slurp(P("chainctl.txt"));
  EXPECT_GE(size_t(std::count(theirs.begin(), theirs.end(), '\n')), kClusters / 4);
  ASSERT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs) << "chainctl map differs from qemu-img map";
  Measured base = RunToFile({CHAINCTL_BINARY, "info", Image()}, P("info.txt"));
  ASSERT_EQ(base.exit_code, 0) << base.err;
  EXPECT_LT(c.max_rss_kib, 40 * 1024) << "peak RSS of chainctl map";
  EXPECT_LT(c.max_rss_kib - base.max_rss_kib, 12 * 1024)
      << "chainctl map: " << c.max_rss_kib << " KiB, chainctl info: " << base.max_rss_kib
      << " KiB";
}

}  // namespace
}  // namespace chainfs
