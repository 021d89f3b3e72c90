// The ChangeMonitor fast paths (core/pool/change_monitor.h): the chain
// cache and the pool catalog skip re-stat'ing only while the monitor vouches
// for every file involved, and the watcher's QuietEpoch turns as soon as a
// change is made -- before any event is read. Plus the node table's compact
// key storage.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "core/format/qcow2/writer.h"
#include "core/pool/catalog.h"
#include "fs/chain_cache.h"
#include "fs/node_table.h"
#include "fs/state.h"
#include "fs/watcher.h"
#include "util/run.h"

namespace chainfs::fs {
namespace {

// A monitor whose epoch and watched directories the test sets.
class FakeMonitor : public core::ChangeMonitor {
 public:
  std::optional<uint64_t> QuietEpoch() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return epoch_;
  }
  bool Watches(const std::string& dir) const override {
    std::lock_guard<std::mutex> lock(mu_);
    return dirs_.count(dir) != 0;
  }
  void SetEpoch(std::optional<uint64_t> epoch) {
    std::lock_guard<std::mutex> lock(mu_);
    epoch_ = epoch;
  }
  void Watch(const std::string& dir) {
    std::lock_guard<std::mutex> lock(mu_);
    dirs_.insert(dir);
  }

 private:
  mutable std::mutex mu_;
  std::optional<uint64_t> epoch_ = 2;
  std::set<std::string> dirs_;
};

void MakeQcow2(const std::string& path, uint64_t size, const char* backing = nullptr) {
  core::Qcow2CreateOptions o;
  o.size = size;
  if (backing) {
    o.backing = backing;
    o.backing_format = "qcow2";
  }
  core::Status s = core::CreateQcow2(path, o);
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Changes the file's size (and so its identity) without any event source.
void Grow(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  char zeros[512] = {};
  ASSERT_EQ(::write(fd, zeros, sizeof zeros), ssize_t(sizeof zeros));
  ::close(fd);
}

uint64_t SizeOfElement(const ChainSnapshot& snap, size_t i) {
  return snap.chain().elements.at(i).stat ? snap.chain().elements[i].stat->id.size : 0;
}

class ChainCacheMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    MakeQcow2(dir_ + "/base.qcow2", 1 << 20);
    MakeQcow2(dir_ + "/top.qcow2", 1 << 20, "base.qcow2");
    cache_.set_change_monitor(&monitor_);
  }
  // Gets the chain twice: the second Get validates it by stat and, when the
  // monitor can vouch for it, arms the fast path.
  std::shared_ptr<const ChainSnapshot> Prime() {
    cache_.Get(dir_ + "/top.qcow2");
    return cache_.Get(dir_ + "/top.qcow2");
  }
  testutil::ScopedTempDir tmp_;
  std::string dir_;
  core::ImageInspector inspector_;
  FakeMonitor monitor_;
  ChainCache cache_{inspector_, nullptr};
};

TEST_F(ChainCacheMonitorTest, SkipsTheStatWhileTheEpochIsUnchanged) {
  monitor_.Watch(dir_);
  auto first = Prime();
  ASSERT_EQ(first->chain().elements.size(), 2u);
  Grow(dir_ + "/base.qcow2");  // a change the fake monitor does not report
  EXPECT_EQ(cache_.Get(dir_ + "/top.qcow2"), first);  // trusted: no stat
  monitor_.SetEpoch(4);                                // the change is reported
  auto second = cache_.Get(dir_ + "/top.qcow2");
  EXPECT_NE(second, first);
  EXPECT_EQ(SizeOfElement(*second, 1), SizeOfElement(*first, 1) + 512);
}

TEST_F(ChainCacheMonitorTest, StatsEveryTimeWhileEventsArePending) {
  monitor_.Watch(dir_);
  monitor_.SetEpoch(std::nullopt);
  auto first = Prime();
  Grow(dir_ + "/base.qcow2");
  EXPECT_NE(cache_.Get(dir_ + "/top.qcow2"), first);
}

TEST_F(ChainCacheMonitorTest, StatsEveryTimeForAnUnwatchedDirectory) {
  auto first = Prime();  // dir_ not watched
  Grow(dir_ + "/base.qcow2");
  EXPECT_NE(cache_.Get(dir_ + "/top.qcow2"), first);
}

TEST_F(ChainCacheMonitorTest, NeverTrustsTheEpochForASymlinkedElement) {
  // The link is in the watched directory, its target is not: writes to the
  // target raise no event there.
  testutil::ScopedTempDir other;
  MakeQcow2(other.path() + "/real.qcow2", 1 << 20);
  ASSERT_EQ(::symlink((other.path() + "/real.qcow2").c_str(), (dir_ + "/link.qcow2").c_str()), 0);
  MakeQcow2(dir_ + "/over.qcow2", 1 << 20, "link.qcow2");
  monitor_.Watch(dir_);
  cache_.Get(dir_ + "/over.qcow2");
  auto first = cache_.Get(dir_ + "/over.qcow2");
  ASSERT_EQ(first->chain().elements.size(), 2u);
  Grow(other.path() + "/real.qcow2");
  auto second = cache_.Get(dir_ + "/over.qcow2");
  EXPECT_NE(second, first);
  EXPECT_EQ(SizeOfElement(*second, 1), SizeOfElement(*first, 1) + 512);
}

TEST_F(ChainCacheMonitorTest, NeverTrustsTheEpochForAHardLinkedElement) {
  testutil::ScopedTempDir other;
  ASSERT_EQ(::link((dir_ + "/base.qcow2").c_str(), (other.path() + "/alias.qcow2").c_str()), 0);
  monitor_.Watch(dir_);
  auto first = Prime();
  Grow(other.path() + "/alias.qcow2");  // written through the other name
  EXPECT_NE(cache_.Get(dir_ + "/top.qcow2"), first);
}

TEST_F(ChainCacheMonitorTest, InvalidateDropsEveryChainThroughTheImage) {
  monitor_.Watch(dir_);
  auto first = Prime();
  cache_.Invalidate(dir_ + "/./base.qcow2");
  EXPECT_NE(cache_.Get(dir_ + "/top.qcow2"), first);
  auto again = cache_.Get(dir_ + "/top.qcow2");
  cache_.Invalidate(dir_ + "/unrelated.qcow2");
  EXPECT_EQ(cache_.Get(dir_ + "/top.qcow2"), again);
}

// A resolver that counts its calls and waits until the test opens its gate.
class GatedResolve {
 public:
  GatedResolve(core::ImageInspector& inspector, std::string path)
      : inspector_(inspector), path_(std::move(path)) {}
  core::Chain operator()() {
    std::unique_lock<std::mutex> lock(mu_);
    ++calls_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    lock.unlock();
    return core::ResolveChain(inspector_, path_, {});
  }
  void WaitForCalls(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(20), [&] { return calls_ >= n; }));
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  core::ImageInspector& inspector_;
  std::string path_;
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0;
  bool open_ = false;
};

TEST_F(ChainCacheMonitorTest, ConcurrentGetsOfOneKeyResolveItOnce) {
  GatedResolve resolve(inspector_, dir_ + "/top.qcow2");
  std::function<core::Chain()> fn = [&] { return resolve(); };
  std::vector<std::shared_ptr<const ChainSnapshot>> got(8);
  std::vector<std::thread> threads;
  threads.emplace_back([&] { got[0] = cache_.GetWith("disk-key", fn); });
  resolve.WaitForCalls(1);  // the first caller is resolving
  for (size_t i = 1; i < got.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = cache_.GetWith("disk-key", fn); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let them reach the wait
  resolve.Open();
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(resolve.calls(), 1) << "the other callers probed the same chain again";
  for (const auto& snap : got) {
    ASSERT_NE(snap, nullptr);
    EXPECT_EQ(snap, got[0]);
  }
  EXPECT_EQ(got[0]->chain().elements.size(), 2u);
  EXPECT_EQ(cache_.stats().misses, 1u);
}

TEST_F(ChainCacheMonitorTest, AGetAfterInvalidateDoesNotWaitForAnOlderResolution) {
  GatedResolve resolve(inspector_, dir_ + "/top.qcow2");
  std::function<core::Chain()> fn = [&] { return resolve(); };
  std::shared_ptr<const ChainSnapshot> older, newer;
  std::thread first([&] { older = cache_.GetWith("disk-key", fn); });
  resolve.WaitForCalls(1);
  Grow(dir_ + "/base.qcow2");
  cache_.Invalidate(dir_ + "/base.qcow2");  // the write side changed an element meanwhile
  std::thread second([&] { newer = cache_.GetWith("disk-key", fn); });
  resolve.WaitForCalls(2);  // resolved again, not joined to the older resolution
  resolve.Open();
  first.join();
  second.join();
  EXPECT_EQ(resolve.calls(), 2);
  ASSERT_NE(newer, nullptr);
  EXPECT_NE(newer, older);
}

TEST(PoolCatalogMonitor, ReusesTheScanInAQuietEpochAndRescansAfterIt) {
  testutil::ScopedTempDir tmp;
  auto def = core::PoolFromSpec("p=" + tmp.path());
  ASSERT_TRUE(def.ok());
  core::PoolCatalog catalog;
  catalog.SetPools({*def});
  FakeMonitor monitor;
  monitor.Watch(core::NormalizePathLexically(tmp.path()));
  catalog.set_change_monitor(&monitor);
  MakeQcow2(tmp.path() + "/a.qcow2", 1 << 20);
  ASSERT_TRUE(catalog.FindVolume("p", "a.qcow2"));
  MakeQcow2(tmp.path() + "/b.qcow2", 1 << 20);
  EXPECT_FALSE(catalog.FindVolume("p", "b.qcow2"));  // trusted scan: no system call
  monitor.SetEpoch(4);
  EXPECT_TRUE(catalog.FindVolume("p", "b.qcow2"));
  auto shared = catalog.FindVolumeShared("p", "b.qcow2");
  ASSERT_TRUE(shared);
  EXPECT_EQ(shared->path, tmp.path() + "/b.qcow2");
}

TEST(PoolCatalogMonitor, LocatesAHardLinkOutsideThePoolsByDeviceAndInode) {
  testutil::ScopedTempDir tmp, other;
  auto def = core::PoolFromSpec("p=" + tmp.path());
  ASSERT_TRUE(def.ok());
  core::PoolCatalog catalog;
  catalog.SetPools({*def});
  MakeQcow2(tmp.path() + "/b.qcow2", 1 << 20);
  MakeQcow2(tmp.path() + "/a.qcow2", 1 << 20);
  ASSERT_EQ(::link((tmp.path() + "/b.qcow2").c_str(), (other.path() + "/x.qcow2").c_str()), 0);
  EXPECT_EQ(catalog.Locate(other.path() + "/x.qcow2"), "p/b.qcow2");
  EXPECT_EQ(catalog.Locate(other.path() + "/missing.qcow2"), std::nullopt);
}

TEST(WatcherMonitor, QuietEpochTurnsAsSoonAsAChangeIsMade) {
  testutil::ScopedTempDir tmp;
  MountConfig config;
  config.mountpoint = tmp.path();
  FsState state(config, false);
  auto def = core::PoolFromSpec("p=" + tmp.path());
  ASSERT_TRUE(def.ok());
  state.catalog.SetPools({*def});
  Watcher watcher(state, core::PoolSources{});
  watcher.Start();
  EXPECT_TRUE(watcher.Watches(core::NormalizePathLexically(tmp.path())));
  EXPECT_FALSE(watcher.Watches("/nonexistent-dir"));
  std::optional<uint64_t> before;
  for (int i = 0; i < 500 && !before; ++i) {
    before = watcher.QuietEpoch();
    if (!before) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(before.has_value());
  MakeQcow2(tmp.path() + "/new.qcow2", 1 << 20);
  // At once, with no chance for the watcher thread to have run: the event
  // is already queued, so the old epoch can no longer be vouched for.
  EXPECT_NE(watcher.QuietEpoch(), before);
  std::optional<uint64_t> after;
  for (int i = 0; i < 500; ++i) {
    after = watcher.QuietEpoch();
    if (after && *after != *before) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(after.has_value());
  EXPECT_NE(*after, *before);
  EXPECT_EQ(*after % 2, 0u);
  watcher.Stop();
  EXPECT_EQ(watcher.QuietEpoch(), std::nullopt);
}

TEST(NodeTableKeys, RoundTripsEveryFieldIncludingSlashesInTheFile) {
  NodeTable table;
  std::vector<NodeKey> keys = {
      NodeKey(NodeKind::kElementFile, "pool", "vol.qcow2", 3, "format"),
      NodeKey(NodeKind::kVolumeDir, "p", "v"),
      NodeKey(NodeKind::kPoolFile, "p", "", -1, ".pool.xml"),
      NodeKey(NodeKind::kElementLink, "p", "v", 199),
      NodeKey(NodeKind::kVolumeDir, "p", "link", -2, "../other/dir/base.qcow2"),
  };
  for (const NodeKey& key : keys) {
    uint64_t ino = table.Ref(key);
    std::optional<NodeKey> back = table.Get(ino);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, key) << key.Path();
  }
  auto in_v = table.FindByPrefix(EncodePrefix("p", "v"));
  ASSERT_EQ(in_v.size(), 2u);
  for (const auto& [ino, key] : in_v) EXPECT_EQ(key.volume, "v");
  uint64_t ino = table.Ref(keys[0]);
  table.Forget(ino, 2);
  EXPECT_EQ(table.Get(ino), std::nullopt);
  EXPECT_EQ(table.Find(keys[0]), std::nullopt);
  EXPECT_EQ(table.Get(kRootIno), NodeKey(NodeKind::kRoot));
}

}  // namespace
}  // namespace chainfs::fs
