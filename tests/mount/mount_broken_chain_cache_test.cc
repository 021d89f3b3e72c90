// Chains that stop early (depth limit, missing backing, loop) are cached
// like complete ones (fs/chain_cache.h): reading every volume file of a pool
// of 3000 images in broken 300-deep chains costs about what it costs over
// 3000 healthy images, a second pass resolves nothing again, and what the
// cache keeps is still current: a missing backing created outside the mount
// (in the pool, in an unwatched folder, in a folder that did not exist) or a
// loop made or undone outside the mount shows on the next access.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/format/qcow2/writer.h"
#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kSize = 1 << 20;

// Makes a 1 MiB qcow2 image at `path` (backing recorded as qcow2 when given).
void MakeImage(const std::string& path, const std::optional<std::string>& backing) {
  core::Qcow2CreateOptions o;
  o.size = kSize;
  if (backing) {
    o.backing = *backing;
    o.backing_format = "qcow2";
  }
  core::Status s = core::CreateQcow2(path, o);
  ASSERT_TRUE(s.ok()) << path << ": " << s.ToString();
}

// Returns the name of image `i` of chain `chain` ("c3_0042.qcow2").
std::string Name(const std::string& chain, int i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s_%04d.qcow2", chain.c_str(), i);
  return buf;
}

// How the bottom of a chain ends.
enum class Bottom { kHealthy, kMissing, kLoop };

// Makes `depth` images `chain`_0000 (bottom) ... in `dir`, each backed by
// the one below; the bottom has no backing, a missing one
// (`chain`_missing.qcow2), or the image above it (a loop of two).
void MakeChainIn(const std::string& dir, const std::string& chain, int depth, Bottom bottom) {
  std::optional<std::string> below;
  if (bottom == Bottom::kMissing) below = chain + "_missing.qcow2";
  if (bottom == Bottom::kLoop) below = Name(chain, 1);
  for (int i = 0; i < depth; ++i) {
    MakeImage(dir + "/" + Name(chain, i),
              i == 0 ? below : std::optional<std::string>(Name(chain, i - 1)));
    if (::testing::Test::HasFatalFailure()) return;
  }
}

class MountBrokenChainCacheTest : public MountTest {
 protected:
  // Expects value() == expected: at the next access when the kernel keeps
  // nothing (`exact`); else within the time inotify needs to reach the
  // daemon and the daemon the kernel (milliseconds; 5 s cap), as for
  // healthy chains (README: the kernel keeps what the mount shows).
  void ExpectSoon(const std::function<std::string()>& value, const std::string& expected,
                  bool exact = false) {
    std::string got = value();
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (!exact && got != expected && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      got = value();
    }
    EXPECT_EQ(got, expected);
  }
  // Expects `file` (mount-relative) to mention `part`, the same way.
  void ExpectSoonMentions(const std::string& file, const std::string& part, bool exact = false) {
    ExpectSoon([&] { return std::to_string(ReadFile(M(file)).find(part) != std::string::npos); },
               "1", exact);
  }
  // Reads every file of every volume of mount pool `pool` but its guest
  // bytes (VOL/data: 64 MiB a volume) with find | xargs
  // cat; returns the seconds it took.
  double ReadPool(const std::string& pool) {
    auto start = Clock::now();
    testutil::RunResult r = testutil::Run({"bash", "-c",
                                           "set -o pipefail; find " + M(pool) +
                                               " -mindepth 2 -maxdepth 2 -type f ! -name data -print0 | "
                                               "xargs -0 cat > /dev/null"});
    EXPECT_EQ(r.exit_code, 0) << r.err.substr(0, 2000);
    return std::chrono::duration<double>(Clock::now() - start).count();
  }
  void CheckMissingInPool(bool exact);
};

TEST_F(MountBrokenChainCacheTest, BrokenDeepChainsCostWhatHealthyOnesCostAndStayCurrent) {
  // Pool h: 3000 healthy images, 15 chains of 200 (QEMU's limit). Pool p:
  // 3000 images in 10 chains of 300, every one too deep from its top; the
  // lower 200 of four of them end at a missing backing, of three at a loop.
  auto made = Clock::now();
  std::string healthy = tmp_.Sub("healthy");
  ASSERT_EQ(::mkdir(healthy.c_str(), 0755), 0);
  for (int c = 0; c < 15; ++c) {
    MakeChainIn(healthy, "h" + std::to_string(c), 200, Bottom::kHealthy);
    if (HasFatalFailure()) return;
  }
  for (int c = 0; c < 10; ++c) {
    Bottom b = c < 4 ? Bottom::kMissing : c < 7 ? Bottom::kLoop : Bottom::kHealthy;
    MakeChainIn(pool_, "c" + std::to_string(c), 300, b);
    if (HasFatalFailure()) return;
  }
  std::printf("6000 images made in %.1f s\n",
              std::chrono::duration<double>(Clock::now() - made).count());
  ASSERT_TRUE(MountPool({"--pool", "h=" + healthy}));

  uint64_t m0 = Stat("chain_cache_misses");
  double healthy_seconds = ReadPool("h");
  uint64_t m1 = Stat("chain_cache_misses");
  double broken_seconds = ReadPool("p");
  uint64_t m2 = Stat("chain_cache_misses");
  std::printf("healthy: %.2f s, %llu chain resolutions; broken: %.2f s, %llu chain resolutions\n",
              healthy_seconds, (unsigned long long)(m1 - m0), broken_seconds,
              (unsigned long long)(m2 - m1));
  // About one resolution per volume, as for healthy chains, not one per
  // access (eleven files a volume, several requests a file).
  EXPECT_LE(m2 - m1, (m1 - m0) + 100);
  EXPECT_LE(broken_seconds, 3 * healthy_seconds + 3.0);

  // A second pass over fewer volumes than the cache holds resolves nothing.
  // On a mount with zero kernel timeouts, so that every access reaches the
  // daemon: with the default ones the kernel serves the first pass from what
  // it kept of the whole-pool read, so the daemon's cache (1024 chains, of
  // 6000 read) is not refreshed by it, and the kernel asks again for a few
  // nodes at a time of its own choosing (seen once in three runs: 4 chains
  // resolved again).
  mount_.Stop();
  ASSERT_TRUE(MountPool({"--pool", "h=" + healthy, "-o", "cache_timeout=0"}));
  std::vector<std::string> files;
  for (int c : {0, 4, 7}) {
    for (int i = 0; i < 300; i += 1) files.push_back(M("p/" + Name("c" + std::to_string(c), i)));
  }
  auto read_all = [&] {
    for (const std::string& vol : files) {
      for (const char* f : {"problems", "info", "info.json", "volume.xml", "backing"}) {
        ReadFile(vol + "/" + f);
      }
    }
  };
  read_all();
  uint64_t before = Stat("chain_cache_misses");
  read_all();
  EXPECT_EQ(Stat("chain_cache_misses"), before) << "cached broken chains were walked again";

  // What is shown is what the pool holds.
  EXPECT_NE(ReadFile(M("p/c0_0005.qcow2/problems")).find("Cannot access backing file"),
            std::string::npos);
  EXPECT_NE(ReadFile(M("p/c4_0005.qcow2/problems")).find("backing chain loop"), std::string::npos);
  EXPECT_NE(ReadFile(M("p/c7_0250.qcow2/problems")).find("deeper than 200"), std::string::npos);
  EXPECT_EQ(ReadFile(M("p/c7_0150.qcow2/problems")), "");

  // The missing backing appears (outside the mount): shown as soon as for
  // a change in a healthy chain.
  MakeImage(P("c0_missing.qcow2"), std::nullopt);
  ExpectSoon([&] { return ReadFile(M("p/c0_0005.qcow2/problems")); }, "");
  EXPECT_EQ(MustRun({"ls", M("p/c0_0005.qcow2/chain")}).out, "0\n1\n2\n3\n4\n5\n6\n");
  EXPECT_EQ(ReadFile(M("p/c0_0005.qcow2/chain/6/path")), P("c0_missing.qcow2") + "\n");
  // The loop is undone outside the mount: c4_0000 loses its backing.
  MustRun({"qemu-img", "rebase", "-u", "-b", "", P("c4_0000.qcow2")});
  ExpectSoon([&] { return ReadFile(M("p/c4_0005.qcow2/problems")); }, "");
}

// Checks a missing backing in the pool folder, then created and removed
// outside the mount; `exact`: mounted with cache_timeout=0.
void MountBrokenChainCacheTest::CheckMissingInPool(bool exact) {
  MakeImage(P("top.qcow2"), std::string("mid.qcow2"));
  MakeImage(P("mid.qcow2"), std::string("base.qcow2"));
  ASSERT_TRUE(exact ? MountPool({"-o", "cache_timeout=0"}) : MountPool());
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(ReadFile(M("p/top.qcow2/problems")).find("Cannot access backing file"),
              std::string::npos);
    EXPECT_NE(ReadFile(M("p/mid.qcow2/info")).find("mid.qcow2"), std::string::npos);
  }
  uint64_t before = Stat("chain_cache_misses");
  EXPECT_NE(ReadFile(M("p/top.qcow2/problems")).find("Cannot access backing file"),
            std::string::npos);
  EXPECT_EQ(Stat("chain_cache_misses"), before) << "the broken chain was resolved again";
  MakeImage(P("base.qcow2"), std::nullopt);
  ExpectSoon([&] { return ReadFile(M("p/top.qcow2/problems")); }, "", exact);
  ExpectSoon([&] { return MustRun({"ls", M("p/top.qcow2/chain")}).out; }, "0\n1\n2\n", exact);
  ASSERT_EQ(::unlink(P("base.qcow2").c_str()), 0);
  ExpectSoonMentions("p/top.qcow2/problems", "Cannot access backing file", exact);
}

TEST_F(MountBrokenChainCacheTest, MissingBackingInThePoolIsSeenAtTheNextAccessUncached) {
  CheckMissingInPool(true);
}

TEST_F(MountBrokenChainCacheTest, MissingBackingInThePoolIsSeenAsSoonAsAChangeCached) {
  CheckMissingInPool(false);
}

TEST_F(MountBrokenChainCacheTest, MissingBackingsOutsideWatchedFoldersAreNoticed) {
  // Absolute backings into a folder no chain element lives in (nothing
  // watches it), and into a folder that does not exist yet: the kernel
  // keeps nothing of these chains, and the daemon stats the missing name on
  // every access, so its creation shows at the next access.
  std::string outside = tmp_.Sub("outside");
  std::string later = tmp_.Sub("later");
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  MakeImage(P("a.qcow2"), outside + "/base.qcow2");
  MakeImage(P("b.qcow2"), later + "/sub/base.qcow2");
  // And a backing that is a dangling symbolic link in the pool, into the
  // unwatched folder.
  MakeImage(P("c.qcow2"), std::string("link.qcow2"));
  ASSERT_EQ(::symlink((outside + "/target.qcow2").c_str(), P("link.qcow2").c_str()), 0);
  ASSERT_TRUE(MountPool());
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(ReadFile(M("p/a.qcow2/problems")).find("Cannot access backing file"),
              std::string::npos);
    EXPECT_NE(ReadFile(M("p/b.qcow2/problems")).find("Cannot access backing file"),
              std::string::npos);
    EXPECT_NE(ReadFile(M("p/c.qcow2/problems")).find("Cannot access backing file"),
              std::string::npos);
  }
  MakeImage(outside + "/target.qcow2", std::nullopt);
  EXPECT_EQ(ReadFile(M("p/c.qcow2/problems")), "");
  MakeImage(outside + "/base.qcow2", std::nullopt);
  EXPECT_EQ(ReadFile(M("p/a.qcow2/problems")), "");
  EXPECT_EQ(ReadFile(M("p/a.qcow2/chain/1/path")), outside + "/base.qcow2\n");
  ASSERT_EQ(::mkdir(later.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((later + "/sub").c_str(), 0755), 0);
  EXPECT_NE(ReadFile(M("p/b.qcow2/problems")).find("Cannot access backing file"),
            std::string::npos);
  MakeImage(later + "/sub/base.qcow2", std::nullopt);
  EXPECT_EQ(ReadFile(M("p/b.qcow2/problems")), "");
  // Gone again: shown missing again (the folder is watched now that it
  // holds an element: as soon as any change).
  ASSERT_EQ(::unlink((outside + "/base.qcow2").c_str()), 0);
  ExpectSoonMentions("p/a.qcow2/problems", "Cannot access backing file");
}

TEST_F(MountBrokenChainCacheTest, LoopsMadeAndUndoneOutsideTheMountShowOnTheNextAccess) {
  MakeImage(P("l0.qcow2"), std::nullopt);
  MakeImage(P("l1.qcow2"), std::string("l0.qcow2"));
  MakeImage(P("l2.qcow2"), std::string("l1.qcow2"));
  // Uncached, so that "the next access" is exact (the cached case is the
  // loop undone in the deep-chains test).
  ASSERT_TRUE(MountPool({"-o", "cache_timeout=0"}));
  EXPECT_EQ(ReadFile(M("p/l2.qcow2/problems")), "");
  // qemu-img rebase -u records whatever it is given, a loop included.
  MustRun(
      {"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "l2.qcow2", P("l0.qcow2")});
  std::string looped = ReadFile(M("p/l2.qcow2/problems"));
  EXPECT_NE(looped.find("backing chain loop"), std::string::npos) << looped;
  EXPECT_NE(ReadFile(M("p/l1.qcow2/problems")).find("backing chain loop"), std::string::npos);
  // Cached: reading it again resolves nothing.
  uint64_t before = Stat("chain_cache_misses");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ReadFile(M("p/l2.qcow2/problems")), looped);
  EXPECT_EQ(Stat("chain_cache_misses"), before);
  // A loop through a symlink made outside: l0 backed by a link to l2.
  ASSERT_EQ(::symlink("l2.qcow2", P("link.qcow2").c_str()), 0);
  MustRun({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "link.qcow2",
           P("l0.qcow2")});
  looped = ReadFile(M("p/l2.qcow2/problems"));
  EXPECT_NE(looped.find("backing chain loop"), std::string::npos) << looped;
  EXPECT_NE(looped.find("link.qcow2"), std::string::npos) << looped;
  // Undone outside: healthy again at once.
  MustRun({"qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "", P("l0.qcow2")});
  EXPECT_EQ(ReadFile(M("p/l2.qcow2/problems")), "");
  EXPECT_EQ(MustRun({"ls", M("p/l2.qcow2/chain")}).out, "0\n1\n2\n");
}

}  // namespace
}  // namespace chainfs::mounttest
