// The kernel keeps what the mount describes (fs/kernel_cache.h): a second
// read of the same files costs the daemon no request, while every change
// still shows. Counted with .chainfs/stats.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "mount/mount_fixture.h"

namespace chainfs::mounttest {
namespace {

const std::vector<std::string> kCounters = {"fuse_lookup", "fuse_getattr", "fuse_read",
                                            "fuse_readdir", "fuse_open"};

class CacheTest : public MountTest {
 protected:
  std::map<std::string, long> Stats() {
    std::map<std::string, long> out;
    std::istringstream in(ReadFile(M(".chainfs/stats")));
    std::string name;
    long value = 0;
    while (in >> name >> value) out[name] = value;
    return out;
  }
  // Reads what a script walking the pool reads: every volume's backing,
  // the chain/ listing and each element's format, plus the documents.
  int ReadEverything() {
    int files = 0;
    for (const char* vol : {"top.qcow2", "mid.qcow2", "base.raw"}) {
      std::string v = M(std::string("p/") + vol);
      for (const char* f : {"backing", "info", "info.json", "problems"}) {
        ReadFile(v + "/" + f);
        ++files;
      }
      DIR* d = ::opendir((v + "/chain").c_str());
      EXPECT_NE(d, nullptr);
      if (!d) continue;
      std::vector<std::string> names;
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] != '.') names.push_back(e->d_name);
      }
      ::closedir(d);
      for (const std::string& n : names) {
        EXPECT_NE(ReadFile(v + "/chain/" + n + "/format"), "");
        ++files;
      }
    }
    return files;
  }
  // Returns, per counter, the requests of one warm ReadEverything() beyond
  // what reading .chainfs/stats itself costs. Two passes warm up: the first
  // fills the kernel's pages; after a READ the kernel marks the file's atime
  // stale, so the next fstat(2) (std::ifstream makes one) asks once more.
  std::map<std::string, long> RequestsOfAWarmPass() {
    ReadEverything();
    ReadEverything();
    std::map<std::string, long> s1 = Stats();
    std::map<std::string, long> s2 = Stats();  // s2 - s1: the cost of a Stats()
    ReadEverything();
    std::map<std::string, long> s3 = Stats();
    std::map<std::string, long> extra;
    for (const std::string& c : kCounters) {
      extra[c] = (s3[c] - s2[c]) - (s2[c] - s1[c]);
    }
    return extra;
  }
};

TEST_F(CacheTest, WarmReadsAreServedByTheKernelWithoutRequests) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  std::map<std::string, long> extra = RequestsOfAWarmPass();
  for (const std::string& c : kCounters) {
    // A stats read may differ from the previous one by a request or two
    // (its size changes as its numbers grow); a pass over 18 files that
    // reached the daemon would add at least one request per file.
    EXPECT_LE(extra[c], 2) << c << "\n" << ReadFile(M(".chainfs/stats"));
  }
}

TEST_F(CacheTest, AGlobWithCatOnAFreshMountReadsWithoutReadRequests) {
  // What an admin types: the shell looks every path up while it expands
  // the glob, and the daemon pushes each looked-up file's content into the
  // kernel's pages (PushPages), so cat's reads cost no READ. Without READs
  // the kernel keeps the files' atime valid: the second pass asks only for
  // the directories the first one listed (the kernel's atime rule for a
  // writable mount, see FRESHNESS), and the third makes no request.
  MakeChain();
  ASSERT_TRUE(MountPool());
  // (Read-only files: backing, backing_format and rebase, which users
  // write, are never pushed, so that a push cannot land in the middle of
  // a write; the first cat of one costs a READ.)
  const std::string command = "cd '" + M("p") + "' && cat */capacity */chain/*/format";
  std::map<std::string, long> s0 = Stats();
  std::map<std::string, long> s1 = Stats();  // s1 - s0: the cost of a Stats()
  auto extra = [&](std::map<std::string, long>& from, std::map<std::string, long>& to,
                   const std::string& c) { return (to[c] - from[c]) - (s1[c] - s0[c]); };
  std::string first = MustRun({"sh", "-c", command}).out;
  std::map<std::string, long> s2 = Stats();
  // 3 capacity files and 6 chain/N/format files, all non-empty. A pass
  // without pushes sends a READ for each.
  EXPECT_NE(first.find("qcow2\n"), std::string::npos) << first;
  EXPECT_LE(extra(s1, s2, "fuse_read"), 1) << ReadFile(M(".chainfs/stats"));
  EXPECT_GE(s2["pushed_files"], 8) << ReadFile(M(".chainfs/stats"));
  EXPECT_EQ(MustRun({"sh", "-c", command}).out, first);
  std::map<std::string, long> s3 = Stats();
  for (const std::string& c : kCounters) {
    // The glob fstats the three chain/ directories it listed: one GETATTR
    // each, once.
    EXPECT_LE(extra(s2, s3, c), 1 + (c == "fuse_getattr" ? 3 : 0))
        << c << " on the second pass\n" << ReadFile(M(".chainfs/stats"));
  }
  EXPECT_EQ(MustRun({"sh", "-c", command}).out, first);
  std::map<std::string, long> s4 = Stats();
  for (const std::string& c : kCounters) {
    EXPECT_LE(extra(s3, s4, c), 1) << c << " on the third pass\n" << ReadFile(M(".chainfs/stats"));
  }
}

TEST_F(CacheTest, PushedPagesFollowChangesMadeOutsideTheMount) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "mid.qcow2\n");
  // Outside the mount: inotify reports it, the kernel's pages go, the next
  // attribute refresh pushes the new content.
  MustRun({"qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "base.raw",
           P("top.qcow2")});
  std::string now;
  for (int i = 0; i < 100 && (now = ReadFile(M("p/top.qcow2/backing"))) != "base.raw\n"; ++i) {
    ::usleep(20000);
  }
  EXPECT_EQ(now, "base.raw\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/1/path")), P("base.raw") + "\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/info")), Chainctl({"info", P("top.qcow2")}));
}

TEST_F(CacheTest, AWalkMakesNoNodeForTheFilesItDoesNotStat) {
  // READDIRPLUS hands out directories with attributes and files by name
  // only: find renders none of the files and the daemon keeps no node for
  // them, while ls -l still gets every size by lookup.
  MakeChain();
  ASSERT_TRUE(MountPool());
  uint64_t before = Stat("nodes");
  std::string found = MustRun({"find", M("p"), "-name", "format"}).out;
  // top has 3 elements, mid 2, base 1: six chain/N/format files, plus the
  // three volumes' own format files.
  EXPECT_EQ(std::count(found.begin(), found.end(), '\n'), 9) << found;
  uint64_t after = Stat("nodes");
  // The walk's directories: the pool, 3 volumes, 3 chain/ and 6 chain/N.
  EXPECT_LE(after, before + 13 + 2) << "a node for every file would be over 100";
  std::string listing = MustRun({"ls", "-l", M("p/top.qcow2")}).out;
  EXPECT_NE(listing.find(" backing\n"), std::string::npos) << listing;
  struct stat st {};
  ASSERT_EQ(::stat(M("p/top.qcow2/backing").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, off_t(std::string("mid.qcow2\n").size()));
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "mid.qcow2\n");
}

TEST_F(CacheTest, ZeroTimeoutRevalidatesEveryAccess) {
  MakeChain();
  ASSERT_TRUE(MountPool({"-o", "cache_timeout=0"}));
  std::map<std::string, long> extra = RequestsOfAWarmPass();
  EXPECT_GE(extra["fuse_lookup"], 18) << "every path is looked up again";
  EXPECT_GE(extra["fuse_getattr"], 18) << "every read refreshes the attributes";
}

TEST_F(CacheTest, ChangesThroughTheMountShowAtOnceDespiteTheCache) {
  MakeChain();
  ASSERT_TRUE(MountPool());
  ReadEverything();  // the kernel now holds every page
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/1/path")), P("mid.qcow2") + "\n");
  ASSERT_EQ(WriteValue(M("p/top.qcow2/backing_format"), "raw\n"), 0);
  // No waiting: the write invalidated the kernel's copy before returning.
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing_format")), "raw\n");
  // mid.qcow2 is now read as raw, as qemu would: the chain ends there.
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/1/format")), "raw\n");
  EXPECT_EQ(MustRun({"ls", M("p/top.qcow2/chain")}).out, "0\n1\n");
  ASSERT_EQ(WriteValue(M("p/top.qcow2/backing"), "base.raw\n"), 0);
  EXPECT_EQ(ReadFile(M("p/top.qcow2/backing")), "base.raw\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/problems")), "");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/chain/1/path")), P("base.raw") + "\n");
  EXPECT_EQ(MustRun({"ls", M("p/top.qcow2/chain")}).out, "0\n1\n");
  EXPECT_EQ(ReadFile(M("p/top.qcow2/info")), Chainctl({"info", P("top.qcow2")}));
  // A rename through the mount: the kernel's dentries follow.
  MustRun({"mv", M("p/mid.qcow2"), M("p/mid2.qcow2")});
  EXPECT_EQ(ReadFile(M("p/mid2.qcow2/backing")), "base.raw\n");
  EXPECT_EQ(ReadFile(M("p/mid2.qcow2/chain/1/path")), P("base.raw") + "\n");
  struct stat st {};
  EXPECT_NE(::stat(M("p/mid.qcow2/backing").c_str(), &st), 0);
}

TEST_F(CacheTest, ChainsThroughUnwatchedPlacesAreRevalidatedOnEveryAccess) {
  // The base is reached through a symlink, whose target's directory inotify
  // does not watch: nodes of that chain get no kernel cache time.
  MakeChain();
  std::string elsewhere = tmp_.Sub("elsewhere");
  ASSERT_EQ(::mkdir(elsewhere.c_str(), 0755), 0);
  QemuImgCreate({"-f", "raw", elsewhere + "/real.raw", "1M"});
  ASSERT_EQ(::symlink((elsewhere + "/real.raw").c_str(), P("link.raw").c_str()), 0);
  QemuImgCreate({"-f", "qcow2", "-b", "link.raw", "-F", "raw", P("over.qcow2")});
  ASSERT_TRUE(MountPool());
  EXPECT_EQ(ReadFile(M("p/over.qcow2/chain/1/capacity")), "1048576\n");
  MustRun({"qemu-img", "resize", "-q", "-f", "raw", elsewhere + "/real.raw", "2M"});
  EXPECT_EQ(ReadFile(M("p/over.qcow2/chain/1/capacity")), "2097152\n");
}

}  // namespace
}  // namespace chainfs::mounttest
