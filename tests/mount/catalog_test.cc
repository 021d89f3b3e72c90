// PoolCatalog (core/pool/catalog.h): loading, scans, Locate, RecordedFormat.
#include "core/pool/catalog.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

#include "mount/mount_fixture.h"
#include "util/run.h"

namespace chainfs::mounttest {
namespace {

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = tmp_.Sub("pool");
    ASSERT_EQ(::mkdir(pool_.c_str(), 0755), 0);
    auto def = core::PoolFromSpec("p=" + pool_);
    ASSERT_TRUE(def.ok());
    catalog_.SetPools({*def});
  }
  testutil::ScopedTempDir tmp_;
  std::string pool_;
  core::PoolCatalog catalog_;
  core::ImageInspector inspector_;
};

TEST_F(CatalogTest, LocatesVolumesByDirectoryAndName) {
  QemuImgCreate({"-f", "raw", pool_ + "/a.raw", "1M"});
  EXPECT_EQ(catalog_.Locate(pool_ + "/a.raw"), "p/a.raw");
  EXPECT_EQ(catalog_.Locate(pool_ + "//./a.raw"), "p/a.raw");  // lexically equal
  EXPECT_EQ(catalog_.Locate(pool_ + "/missing.raw"), std::nullopt);
  EXPECT_TRUE(catalog_.InPool(pool_ + "/a.raw"));
}

TEST_F(CatalogTest, LocatesByDeviceAndInodeWhenThePathDiffers) {
  QemuImgCreate({"-f", "raw", pool_ + "/a.raw", "1M"});
  std::string other = tmp_.Sub("elsewhere");
  ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
  ASSERT_EQ(::link((pool_ + "/a.raw").c_str(), (other + "/hard.raw").c_str()), 0);
  EXPECT_EQ(catalog_.Locate(other + "/hard.raw"), "p/a.raw");
  QemuImgCreate({"-f", "raw", other + "/alone.raw", "1M"});
  EXPECT_EQ(catalog_.Locate(other + "/alone.raw"), std::nullopt);
}

TEST_F(CatalogTest, ScanSeesNewEntriesWithoutExplicitInvalidation) {
  auto first = catalog_.Scan("p");
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->volumes.empty());
  QemuImgCreate({"-f", "raw", pool_ + "/new.raw", "1M"});
  auto second = catalog_.Scan("p");
  ASSERT_TRUE(second);
  ASSERT_EQ(second->volumes.size(), 1u);
  EXPECT_EQ(second->volumes[0].name, "new.raw");
  EXPECT_EQ(catalog_.Scan("nope"), nullptr);
}

TEST_F(CatalogTest, RecordedFormatComesFromAnotherVolumesMetadata) {
  QemuImgCreate({"-f", "raw", pool_ + "/base.raw", "1M"});
  EXPECT_EQ(catalog_.RecordedFormat(pool_ + "/base.raw", inspector_), std::nullopt);
  QemuImgCreate({"-f", "qcow2", "-b", "base.raw", "-F", "raw", pool_ + "/over.qcow2"});
  EXPECT_EQ(catalog_.RecordedFormat(pool_ + "/base.raw", inspector_), "raw");
  core::TrustContext trust = catalog_.MakeTrustContext(inspector_);
  EXPECT_EQ(trust.recorded_format(pool_ + "/base.raw"), "raw");
  EXPECT_TRUE(trust.in_pool(pool_ + "/over.qcow2"));
}

TEST_F(CatalogTest, LoadPoolsLetsASpecReplaceAFolderPool) {
  std::string defs = tmp_.Sub("defs");
  ASSERT_EQ(::mkdir(defs.c_str(), 0755), 0);
  std::ofstream(defs + "/p.xml") << "<pool type='dir'><name>p</name><target><path>/nowhere</path>"
                                    "</target></pool>\n";
  core::PoolSources sources;
  sources.pool_dir = defs;
  sources.pool_specs = {"p=" + pool_, "q=" + pool_};
  auto load = core::PoolCatalog::LoadPools(sources);
  ASSERT_TRUE(load.ok()) << load.status().ToString();
  ASSERT_EQ(load->pools.size(), 2u);
  EXPECT_EQ(load->pools[0].name, "p");
  EXPECT_EQ(load->pools[0].target_path, pool_);
  EXPECT_EQ(load->pools[1].name, "q");
  EXPECT_FALSE(load->skipped.empty());
  sources.pool_specs = {"relative=not/absolute"};
  EXPECT_FALSE(core::PoolCatalog::LoadPools(sources).ok());
}

TEST(NormalizePathLexically, CollapsesSlashesAndDots) {
  EXPECT_EQ(core::NormalizePathLexically("/a//b/./c/"), "/a/b/c");
  EXPECT_EQ(core::NormalizePathLexically("/"), "/");
  EXPECT_EQ(core::NormalizePathLexically("//"), "/");
  EXPECT_EQ(core::NormalizePathLexically("a/./b"), "a/b");
}

}  // namespace
}  // namespace chainfs::mounttest
