// Unit tests of the FUSE-free parts of fs/: options, node table, kernel
// cache bookkeeping, access rule, errno mapping, the event log and the
// demo's qcow2 helper.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>

#include "fs/demo.h"
#include "fs/dir_gate.h"
#include "fs/errno_map.h"
#include "fs/event_log.h"
#include "fs/kernel_cache.h"
#include "fs/node_table.h"
#include "fs/options.h"
#include "fs/tree.h"
#include "mount/mount_fixture.h"
#include "util/run.h"

namespace chainfs::fs {
namespace {

TEST(DirGate, DefersEntriesOfBusyDirectoriesUntilTheirLastRequestEnds) {
  DirGate gate;
  int woken = 0;
  gate.SetIdleCallback([&] { ++woken; });
  EXPECT_FALSE(gate.DeferIfBusy(7, "a"));  // idle: send now
  {
    DirGate::Scope first(gate, 7);
    EXPECT_TRUE(gate.Busy(7));
    EXPECT_FALSE(gate.Busy(8));
    {
      DirGate::Scope second(gate, 7);
      EXPECT_TRUE(gate.DeferIfBusy(7, "a"));
      EXPECT_TRUE(gate.DeferIfBusy(7, "a"));  // kept once
      EXPECT_FALSE(gate.DeferIfBusy(8, "b"));
    }
    EXPECT_EQ(woken, 0) << "one request on 7 is still in flight";
    EXPECT_TRUE(gate.TakeIdleDeferred().empty());
    EXPECT_EQ(gate.deferred(), 1u);
  }
  EXPECT_EQ(woken, 1);
  EXPECT_FALSE(gate.Busy(7));
  auto idle = gate.TakeIdleDeferred();
  ASSERT_EQ(idle.size(), 1u);
  EXPECT_EQ(idle[0], (std::pair<uint64_t, std::string>{7, "a"}));
  EXPECT_EQ(gate.deferred(), 0u);
  { DirGate::Scope again(gate, 7); }
  EXPECT_EQ(woken, 1) << "nothing deferred: no wake-up";
  { DirGate::Scope none(gate, 0); }
  EXPECT_FALSE(gate.Busy(0));
}

TEST(DirGate, DroppedMarksLastUntilTheNameIsLookedUpAgain) {
  DirGate gate;
  EXPECT_FALSE(gate.Dropped(3, "x"));
  gate.NoteDropped(3, "x");
  EXPECT_TRUE(gate.Dropped(3, "x"));
  EXPECT_FALSE(gate.Dropped(3, "y"));
  EXPECT_FALSE(gate.Dropped(4, "x"));
  gate.ClearDropped(3, "x");
  EXPECT_FALSE(gate.Dropped(3, "x"));
}

TEST(MountOptions, ParsesPoolsAndFuseOptions) {
  auto o = ParseMountOptions({"--pool", "a=/x", "--pool-dir=/defs", "-o",
                              "ro,allow_other,pool=b=/y,cache_timeout=2.5", "-f", "/mnt"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->mountpoint, "/mnt");
  EXPECT_TRUE(o->foreground);
  EXPECT_TRUE(o->read_only);
  EXPECT_EQ(o->sources.pool_dir, "/defs");
  EXPECT_EQ(o->sources.pool_specs, (std::vector<std::string>{"a=/x", "b=/y"}));
  // ro stays in the daemon (refusals are logged there), never reaches the kernel.
  EXPECT_EQ(o->fuse_options, (std::vector<std::string>{"allow_other"}));
  EXPECT_DOUBLE_EQ(o->cache_timeout, 2.5);
}

TEST(MountOptions, AcceptsMountFuse3FormWithSource) {
  auto o = ParseMountOptions({"chainfs", "/mnt", "-o", "rw,pool_dir=/d,default_permissions"});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->source, "chainfs");
  EXPECT_EQ(o->mountpoint, "/mnt");
  EXPECT_EQ(o->sources.pool_dir, "/d");
  EXPECT_FALSE(o->read_only);
  EXPECT_TRUE(o->fuse_options.empty()) << "rw/ro are the daemon's, never the kernel's";
}

TEST(MountOptions, RejectsUsageErrors) {
  EXPECT_FALSE(ParseMountOptions({}).ok());
  EXPECT_FALSE(ParseMountOptions({"a", "b", "c"}).ok());
  EXPECT_FALSE(ParseMountOptions({"--pool"}).ok());
  EXPECT_FALSE(ParseMountOptions({"-o", "cache_timeout=-1", "/m"}).ok());
  EXPECT_FALSE(ParseMountOptions({"-o", "cache_timeout=abc", "/m"}).ok());
  EXPECT_FALSE(ParseMountOptions({"--frobnicate", "/m"}).ok());
  EXPECT_TRUE(ParseMountOptions({"--help"})->help);
}

TEST(NodeTable, KeepsInodeNumbersStableAcrossForget) {
  NodeTable table;
  NodeKey key(NodeKind::kVolumeFile, "p", "v", -1, "info");
  uint64_t ino = table.Ref(key);
  EXPECT_GE(ino, kFirstDynamicIno);
  EXPECT_EQ(table.Ref(key), ino);
  EXPECT_EQ(table.PeekIno(key), ino);
  table.Forget(ino, 1);
  EXPECT_TRUE(table.Get(ino).has_value());  // one lookup left
  table.Forget(ino, 1);
  EXPECT_FALSE(table.Get(ino).has_value());
  EXPECT_EQ(table.Ref(key), ino);  // same number again
  EXPECT_EQ(table.Get(kRootIno)->kind, NodeKind::kRoot);
  table.Forget(kRootIno, 100);
  EXPECT_TRUE(table.Get(kRootIno).has_value());  // fixed nodes never go
}

TEST(NodeTable, FindsNodesOfOneVolumeByPrefix) {
  NodeTable table;
  table.Ref(NodeKey(NodeKind::kVolumeDir, "p", "v"));
  table.Ref(NodeKey(NodeKind::kElementFile, "p", "v", 2, "format"));
  table.Ref(NodeKey(NodeKind::kVolumeDir, "p", "v2"));
  table.Ref(NodeKey(NodeKind::kVolumeDir, "q", "v"));
  EXPECT_EQ(table.FindByPrefix(EncodePrefix("p", "v")).size(), 2u);
  EXPECT_EQ(table.FindByPrefix(EncodePrefix("p")).size(), 3u);
}

TEST(NodeTable, RenameMovesTheKernelsInodesToTheNewName) {
  NodeTable table;
  uint64_t dir = table.Ref(NodeKey(NodeKind::kVolumeDir, "p", "a"));
  uint64_t file = table.Ref(NodeKey(NodeKind::kElementFile, "p", "a", 1, "format"));
  uint64_t other = table.Ref(NodeKey(NodeKind::kVolumeDir, "p", "ab"));
  uint64_t stale = table.Ref(NodeKey(NodeKind::kVolumeDir, "q", "b"));  // a removed volume
  table.Rename("p", "a", "q", "b");
  EXPECT_EQ(table.Get(dir), NodeKey(NodeKind::kVolumeDir, "q", "b"));
  EXPECT_EQ(table.Get(file), NodeKey(NodeKind::kElementFile, "q", "b", 1, "format"));
  EXPECT_EQ(table.Get(other), NodeKey(NodeKind::kVolumeDir, "p", "ab")) << "a longer name is another volume";
  EXPECT_EQ(table.Find(NodeKey(NodeKind::kVolumeDir, "q", "b")), dir);
  EXPECT_FALSE(table.Find(NodeKey(NodeKind::kVolumeDir, "p", "a")));
  ASSERT_TRUE(table.Get(stale));
  EXPECT_NE(table.Get(stale)->pool, "q") << "the old node of that name is retired";
  EXPECT_EQ(table.FindByPrefix(EncodePrefix("q", "b")).size(), 2u);
  EXPECT_TRUE(table.Forget(file, 1));
  EXPECT_FALSE(table.Get(file));
}

TEST(KernelCache, VersionTimeChangesExactlyWhenTheContentDoes) {
  KernelCache cache;
  struct timespec natural {1000, 5};
  KernelCache::Version a = cache.Update(42, "qcow2\n", natural);
  EXPECT_EQ(a.mtime.tv_sec, 1000);
  EXPECT_EQ(a.mtime.tv_nsec, 5);
  KernelCache::Version same = cache.Update(42, "qcow2\n", natural);
  EXPECT_EQ(same.mtime.tv_sec, a.mtime.tv_sec);
  EXPECT_EQ(same.mtime.tv_nsec, a.mtime.tv_nsec);
  KernelCache::Version changed = cache.Update(42, "raw\n", natural);
  EXPECT_EQ(changed.bytes, "raw\n");
  EXPECT_TRUE(changed.mtime.tv_sec > a.mtime.tv_sec ||
              (changed.mtime.tv_sec == a.mtime.tv_sec && changed.mtime.tv_nsec > a.mtime.tv_nsec));
  KernelCache::Version again = cache.Update(42, "qcow2\n", natural);
  EXPECT_TRUE(again.mtime.tv_sec > changed.mtime.tv_sec ||
              (again.mtime.tv_sec == changed.mtime.tv_sec &&
               again.mtime.tv_nsec > changed.mtime.tv_nsec))
      << "back to an earlier content is still a change";
  ASSERT_TRUE(cache.Current(42));
  EXPECT_EQ(cache.Current(42)->bytes, "qcow2\n");
  cache.Forget(42);
  EXPECT_FALSE(cache.Current(42));
  EXPECT_EQ(cache.size(), 0u);
}

TEST(KernelCache, KeepsContentWithinItsBudgetAndRecognizesDroppedContent) {
  KernelCache cache(100);
  struct timespec natural {1000, 0};
  for (uint64_t ino = 1; ino <= 10; ++ino) {
    cache.Update(ino, std::string(30, char('a' + ino)), natural);
    EXPECT_LE(cache.content_bytes(), 100u) << "after inode " << ino;
  }
  EXPECT_EQ(cache.size(), 10u) << "every inode is still recorded";
  EXPECT_FALSE(cache.Current(1)) << "the least recently used content was dropped";
  ASSERT_TRUE(cache.Current(10));
  // Rendered again with the same bytes: recognized, the kernel's copy (its
  // mtime) stays valid, and the bytes are kept again.
  KernelCache::Version again = cache.Update(1, std::string(30, 'b'), {2000, 0});
  EXPECT_EQ(again.mtime.tv_sec, 1000);
  ASSERT_TRUE(cache.Current(1));
  EXPECT_EQ(cache.Current(1)->bytes, std::string(30, 'b'));
  // Dropped, then rendered with other bytes of the same length: a change.
  for (uint64_t ino = 11; ino <= 14; ++ino) cache.Update(ino, std::string(30, 'z'), natural);
  EXPECT_FALSE(cache.Current(2));
  KernelCache::Version changed = cache.Update(2, std::string(30, 'q'), natural);
  EXPECT_GT(changed.mtime.tv_sec, 1000) << "a new time: the kernel's pages are stale";
  EXPECT_LE(cache.content_bytes(), 100u);
  // One content larger than the budget is still kept while it is the newest.
  cache.Update(20, std::string(500, 'x'), natural);
  ASSERT_TRUE(cache.Current(20));
  EXPECT_EQ(cache.content_bytes(), 500u);
  cache.Forget(20);
  EXPECT_EQ(cache.content_bytes(), 0u);
}

TEST(KernelCache, IndexesVolumesByTheImagesOfTheirChains) {
  KernelCache cache;
  int calls = 0;
  auto chain = [&](std::vector<std::string> paths) {
    return [&calls, paths] {
      ++calls;
      return paths;
    };
  };
  int snap1 = 0, snap2 = 0;
  cache.RecordChain("p/top/", &snap1, chain({"/pool/top", "/pool/mid", "/base/b.raw"}));
  cache.RecordChain("p/mid/", &snap1 + 1, chain({"/pool/mid", "/base/b.raw"}));
  cache.RecordChain("p/top/", &snap1, chain({"/pool/top", "/pool/mid", "/base/b.raw"}));
  EXPECT_EQ(calls, 2) << "the same chain again is not recomputed";
  auto users = cache.VolumesUsing("/base/b.raw");
  std::sort(users.begin(), users.end());
  EXPECT_EQ(users, (std::vector<std::string>{"p/mid/", "p/top/"}));
  // top was retargeted: it no longer runs through mid.
  cache.RecordChain("p/top/", &snap2, chain({"/pool/top", "/base/b.raw"}));
  EXPECT_EQ(cache.VolumesUsing("/pool/mid"), std::vector<std::string>{"p/mid/"});
  EXPECT_TRUE(cache.VolumesUsing("/pool/none").empty());
}

TEST(NodeKey, PathsNameTheTree) {
  EXPECT_EQ(NodeKey(NodeKind::kElementLink, "p", "v", 3).Path(), "/p/v/chain/3/volume");
  EXPECT_EQ(NodeKey(NodeKind::kControlFile, "", "", -1, "log").Path(), "/.chainfs/log");
  EXPECT_TRUE(IsReservedPoolEntry(".pool.xml"));
  EXPECT_TRUE(IsReservedPoolEntry(".tree"));
  EXPECT_TRUE(IsReservedPoolEntry(".create"));
  EXPECT_FALSE(IsReservedPoolEntry("disk.qcow2"));
}

TEST(CallerCanRead, FollowsOwnerGroupOtherBits) {
  Caller nobody{65534, 65534, {}};
  EXPECT_FALSE(CallerCanRead(nobody, 0, 0, 0600));
  EXPECT_TRUE(CallerCanRead(nobody, 0, 0, 0604));
  EXPECT_TRUE(CallerCanRead(nobody, 65534, 0, 0400));
  EXPECT_FALSE(CallerCanRead(nobody, 65534, 0, 0044));  // owner bits decide for the owner
  Caller member{65534, 65534, {4242}};
  EXPECT_TRUE(CallerCanRead(member, 0, 4242, 0640));
  EXPECT_FALSE(CallerCanRead(nobody, 0, 4242, 0640));
  EXPECT_TRUE(CallerCanRead(Caller{0, 0, {}}, 1, 1, 0));
}

TEST(ErrnoFromStatus, MapsEveryCode) {
  using core::Code;
  EXPECT_EQ(ErrnoFromStatus(core::Status()), 0);
  EXPECT_EQ(ErrnoFromStatus(core::Status(Code::kNotFound, "x")), ENOENT);
  EXPECT_EQ(ErrnoFromStatus(core::Status(Code::kPermissionDenied, "x")), EACCES);
  EXPECT_EQ(ErrnoFromStatus(core::Status(Code::kReadOnly, "x")), EROFS);
  EXPECT_EQ(ErrnoFromStatus(core::Status(Code::kCorrupt, "x")), EIO);
  EXPECT_EQ(ErrnoFromStatus(core::Status(Code::kBusy, "x")), EBUSY);
  EXPECT_EQ(ErrnoFromStatus(core::Status(Code::kIo, "x", ENOSPC)), ENOSPC);
  EXPECT_EQ(ErrnoFromStatus(core::Status(Code::kIo, "x")), EIO);
  EXPECT_STREQ(ErrnoName(EACCES), "EACCES");
}

TEST(EventLog, KeepsTheLastThousandEventsOnOneLineEach) {
  EventLog log;
  for (int i = 0; i < 1005; ++i) log.Add("op", "/p/" + std::to_string(i), "ok", "line\nbreak");
  std::string text = log.Render();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1000);
  EXPECT_EQ(text.find(" /p/4 "), std::string::npos);
  // Issue 9: control characters are escaped, not replaced by a space.
  EXPECT_NE(text.find(" op /p/1004 ok line\\nbreak\n"), std::string::npos);
  EXPECT_EQ(log.total(), 1005u);
  log.AddOnce("k", "scan", "/p", "skipped", "x");
  log.AddOnce("k", "scan", "/p", "skipped", "x");
  EXPECT_EQ(log.total(), 1006u);
}

TEST(StripQcow2BackingFormat, RemovesOnlyTheBackingFormat) {
  testutil::ScopedTempDir dir;
  mounttest::QemuImgCreate({"-f", "raw", dir.Sub("b.raw"), "1M"});
  mounttest::QemuImgCreate({"-f", "qcow2", "-b", "b.raw", "-F", "raw", dir.Sub("o.qcow2")});
  ASSERT_TRUE(StripQcow2BackingFormat(dir.Sub("o.qcow2")).ok());
  testutil::RunResult info =
      mounttest::MustRun({"qemu-img", "info", "--output=json", "-f", "qcow2", dir.Sub("o.qcow2")});
  EXPECT_EQ(info.out.find("backing-filename-format"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"backing-filename\": \"b.raw\""), std::string::npos) << info.out;
  mounttest::MustRun({"qemu-img", "check", "-q", "-f", "qcow2", dir.Sub("o.qcow2")});
  EXPECT_EQ(StripQcow2BackingFormat(dir.Sub("o.qcow2")).code(), core::Code::kNotFound);
  EXPECT_EQ(StripQcow2BackingFormat(dir.Sub("b.raw")).code(), core::Code::kCorrupt);
}

}  // namespace
}  // namespace chainfs::fs
