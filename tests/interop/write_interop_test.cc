// Every image the engine creates or changes, checked with the real qemu
// tools: `qemu-img check` (no errors, no leaks), `qemu-img info` (backing
// string and format, sizes, compat, features), `qemu-img compare` (guest
// content unchanged by retargets and backing_format fixes); refusals leave
// every file as it was; a real qemu-io holding an image makes it busy; ENOSPC
// in the middle of a create leaves nothing behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/format/qcow2/writer.h"
#include "core/util/json.h"
#include "core/write/create.h"
#include "core/write/in_use.h"
#include "core/write/retarget.h"
#include "core/write/volume_xml_parse.h"
#include "util/qcow2_craft.h"
#include "util/qemu_holder.h"
#include "util/run.h"

extern char** environ;

namespace chainfs::core {
namespace {

using testutil::RunResult;
using testutil::ScopedTempDir;

// Runs a command and expects exit status 0.
void MustRun(const std::vector<std::string>& argv) {
  RunResult r = testutil::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err
                            << r.out;
}

// Asserts `qemu-img check` finds neither errors nor leaks (exit status 0).
::testing::AssertionResult QemuCheckClean(const std::string& path) {
  RunResult r = testutil::Run({"qemu-img", "check", path});
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "qemu-img check " << path << " exit " << r.exit_code << ": " << r.out << r.err;
}

// Returns `qemu-img info --output=json` of one image.
Json QemuInfo(const std::string& path, const std::string& format = "") {
  std::vector<std::string> argv = {"qemu-img", "info", "--output=json"};
  if (!format.empty()) argv.insert(argv.end(), {"-f", format});
  argv.push_back(path);
  RunResult r = testutil::Run(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Result<Json> j = Json::Parse(r.out);
  EXPECT_TRUE(j.ok()) << r.out;
  return j.ok() ? *j : Json::MakeObject();
}

std::string Str(const Json& j, std::string_view key) {
  const Json* v = j.Find(key);
  return v && v->is_string() ? v->as_string() : "<absent>";
}
uint64_t Num(const Json& j, std::string_view key) {
  const Json* v = j.Find(key);
  return v && v->is_number() ? v->as_uint() : ~0ull;
}
const Json& Data(const Json& info) {
  static const Json empty = Json::MakeObject();
  const Json* fs = info.Find("format-specific");
  const Json* d = fs ? fs->Find("data") : nullptr;
  return d ? *d : empty;
}
bool Flag(const Json& j, std::string_view key) {
  const Json* v = j.Find(key);
  return v && v->is_bool() && v->as_bool();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Name -> contents of every file below `dir`: "nothing changed" checks.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().string()] = ReadAll(e.path().string());
  }
  return out;
}

// Writes a pattern into an image with qemu-io.
void QemuWrite(const std::string& path, const std::string& format, int pattern,
               const std::string& offset, const std::string& length) {
  MustRun({"qemu-io", "-f", format, "-c",
           fmt::format("write -P {:#x} {} {}", pattern, offset, length), path});
}

TrustContext PoolTrust(const std::string& pool_dir) {
  TrustContext t;
  t.in_pool = [pool_dir](const std::string& p) { return p.rfind(pool_dir + "/", 0) == 0; };
  return t;
}

// --- Creation ------------------------------------------------------------------

struct CreateCase {
  uint32_t version;
  uint64_t cluster_size;
  bool lazy;
  bool extended_l2;
  uint64_t size;
  bool with_backing;
};

TEST(WriteInterop, CreatedQcow2PassesQemuCheckAndShowsWhatWeMeant) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("base.qcow2"), "64M"});
  const CreateCase cases[] = {
      {3, 65536, false, false, 64ull << 20, false}, {3, 65536, false, false, 64ull << 20, true},
      {2, 65536, false, false, 1ull << 30, true},   {2, 512, false, false, 100ull << 20, false},
      {3, 512, false, false, 1ull << 30, true},     {3, 4096, true, false, 3ull << 30, false},
      {3, 16384, false, true, 10ull << 30, true},   {3, 2u << 20, true, true, 1ull << 40, false},
      {3, 131072, true, true, 5000, true},          {3, 65536, false, false, 0, false},
  };
  int n = 0;
  for (const CreateCase& c : cases) {
    SCOPED_TRACE(fmt::format("case {}: v{} cluster {} lazy {} l2 {} size {} backing {}", n,
                             c.version, c.cluster_size, c.lazy, c.extended_l2, c.size,
                             c.with_backing));
    std::string path = dir.Sub(fmt::format("img{}.qcow2", n++));
    Qcow2CreateOptions o;
    o.version = c.version;
    o.cluster_size = c.cluster_size;
    o.lazy_refcounts = c.lazy;
    o.extended_l2 = c.extended_l2;
    o.size = c.size;
    if (c.with_backing) {
      o.backing = "base.qcow2";
      o.backing_format = "qcow2";
    }
    ASSERT_TRUE(CreateQcow2(path, o).ok());
    EXPECT_TRUE(QemuCheckClean(path));
    Json info = QemuInfo(path);
    EXPECT_EQ(Str(info, "format"), "qcow2");
    EXPECT_EQ(Num(info, "virtual-size"), (c.size + 511) / 512 * 512);
    EXPECT_EQ(Num(info, "cluster-size"), c.cluster_size);
    const Json& d = Data(info);
    EXPECT_EQ(Str(d, "compat"), c.version == 2 ? "0.10" : "1.1");
    EXPECT_EQ(Num(d, "refcount-bits"), 16u);
    if (c.version == 3) {
      EXPECT_EQ(Flag(d, "lazy-refcounts"), c.lazy);
      EXPECT_EQ(Flag(d, "extended-l2"), c.extended_l2);
    }
    if (c.with_backing) {
      EXPECT_EQ(Str(info, "backing-filename"), "base.qcow2");
      EXPECT_EQ(Str(info, "backing-filename-format"), "qcow2");
    } else {
      EXPECT_EQ(info.Find("backing-filename"), nullptr);
    }
    // The image really works: qemu writes into it and reads back, and it
    // still checks clean.
    if (c.size >= 65536) {
      QemuWrite(path, "qcow2", 0x5a, "0", "64k");
      MustRun({"qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", path});
      EXPECT_TRUE(QemuCheckClean(path));
    }
  }
}

TEST(WriteInterop, CreatedRawHasTheSize) {
  ScopedTempDir dir;
  ASSERT_TRUE(CreateRaw(dir.Sub("r.img"), 3ull << 30).ok());
  Json info = QemuInfo(dir.Sub("r.img"), "raw");
  EXPECT_EQ(Str(info, "format"), "raw");
  EXPECT_EQ(Num(info, "virtual-size"), 3ull << 30);
}

TEST(WriteInterop, OverlayFromVolumeXmlMatchesQemuImgCreate) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("base.qcow2"), "10M"});
  Result<VolumeSpec> spec = ParseVolumeXml(fmt::format(
      "<volume><name>new.qcow2</name><capacity unit='M'>20</capacity><target>"
      "<format type='qcow2'/><compat>1.1</compat><clusterSize unit='KiB'>32</clusterSize>"
      "<features><lazy_refcounts/><extended_l2/></features></target>"
      "<backingStore><path>{}</path><format type='qcow2'/></backingStore></volume>",
      dir.Sub("base.qcow2")));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  Qcow2CreateOptions o;
  o.size = *spec->capacity;
  o.version = spec->compat == "0.10" ? 2 : 3;
  o.cluster_size = *spec->cluster_size;
  o.lazy_refcounts = spec->lazy_refcounts;
  o.extended_l2 = spec->extended_l2;
  o.backing = spec->backing_path;
  o.backing_format = spec->backing_format;
  ASSERT_TRUE(CreateQcow2(dir.Sub(spec->name), o).ok());
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-o",
           "cluster_size=32k,lazy_refcounts=on,extended_l2=on", "-b", dir.Sub("base.qcow2"), "-F",
           "qcow2", dir.Sub("ref.qcow2"), "20M"});
  EXPECT_TRUE(QemuCheckClean(dir.Sub("new.qcow2")));
  Json ours = QemuInfo(dir.Sub("new.qcow2"));
  Json theirs = QemuInfo(dir.Sub("ref.qcow2"));
  for (const char* key : {"virtual-size", "cluster-size"}) {
    EXPECT_EQ(Num(ours, key), Num(theirs, key)) << key;
  }
  for (const char* key : {"backing-filename", "backing-filename-format", "full-backing-filename"}) {
    EXPECT_EQ(Str(ours, key), Str(theirs, key)) << key;
  }
  EXPECT_EQ(*Data(ours).Find("lazy-refcounts"), *Data(theirs).Find("lazy-refcounts"));
  EXPECT_EQ(*Data(ours).Find("extended-l2"), *Data(theirs).Find("extended-l2"));
  EXPECT_EQ(Str(Data(ours), "compat"), Str(Data(theirs), "compat"));
  // Same header bytes up to the tables, which qemu places after a resize.
  std::string a = ReadAll(dir.Sub("new.qcow2")), b = ReadAll(dir.Sub("ref.qcow2"));
  EXPECT_EQ(a.substr(72, 4096 - 72), b.substr(72, 4096 - 72));
}

// --- Overlays, retargets and format fixes --------------------------------------

TEST(WriteInterop, OverlayThenRetargetOntoIdenticalCopyKeepsGuestContent) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("base.qcow2"), "4M"});
  QemuWrite(dir.Sub("base.qcow2"), "qcow2", 0x5a, "0", "64k");
  QemuWrite(dir.Sub("base.qcow2"), "qcow2", 0x11, "1M", "64k");
  ImageInspector insp;
  TrustContext trust = PoolTrust(dir.path());
  ASSERT_TRUE(CreateOverlay(insp, dir.Sub("top.qcow2"), "base.qcow2", dir.Sub("base.qcow2"),
                            std::nullopt, trust)
                  .ok());
  EXPECT_TRUE(QemuCheckClean(dir.Sub("top.qcow2")));
  Json info = QemuInfo(dir.Sub("top.qcow2"));
  EXPECT_EQ(Str(info, "backing-filename"), "base.qcow2");
  EXPECT_EQ(Str(info, "backing-filename-format"), "qcow2");
  EXPECT_EQ(Num(info, "virtual-size"), 4u << 20);
  QemuWrite(dir.Sub("top.qcow2"), "qcow2", 0x33, "1M", "4k");
  MustRun({"qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", dir.Sub("top.qcow2")});

  MustRun({"cp", "--sparse=always", dir.Sub("base.qcow2"), dir.Sub("copy.qcow2")});
  MustRun({"cp", "--sparse=always", dir.Sub("top.qcow2"), dir.Sub("top.orig")});
  ASSERT_TRUE(Retarget(insp, dir.Sub("top.qcow2"), dir.Sub("copy.qcow2"), trust).ok());
  EXPECT_TRUE(QemuCheckClean(dir.Sub("top.qcow2")));
  info = QemuInfo(dir.Sub("top.qcow2"));
  EXPECT_EQ(Str(info, "backing-filename"), dir.Sub("copy.qcow2"));
  EXPECT_EQ(Str(info, "backing-filename-format"), "qcow2");
  RunResult cmp = testutil::Run({"qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                                 dir.Sub("top.orig"), dir.Sub("top.qcow2")});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out << cmp.err;
  // Nothing changed but the header: the base is not even needed any more to
  // tell, since the copy alone now serves the chain.
  std::filesystem::remove(dir.Sub("base.qcow2"));
  MustRun({"qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", dir.Sub("top.qcow2")});
  MustRun({"qemu-io", "-f", "qcow2", "-c", "read -P 0x33 1M 4k", dir.Sub("top.qcow2")});
}

TEST(WriteInterop, RetargetKeepsBitmapsDataFileAndV2Layout) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "raw", dir.Sub("base.raw"), "4M"});
  MustRun({"qemu-img", "create", "-q", "-f", "raw", dir.Sub("other.raw"), "4M"});
  // v3 with a bitmap.
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
           dir.Sub("bm.qcow2")});
  MustRun({"qemu-img", "bitmap", "--add", dir.Sub("bm.qcow2"), "bitmap0"});
  // v3 with an external data file.
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=" + dir.Sub("data.bin"),
           "-b", "base.raw", "-F", "raw", dir.Sub("df.qcow2")});
  // v2, and 512-byte clusters (no feature table).
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F",
           "raw", dir.Sub("v2.qcow2")});
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "base.raw",
           "-F", "raw", dir.Sub("small.qcow2")});
  ImageInspector insp;
  TrustContext trust = PoolTrust(dir.path());
  for (const char* name : {"bm.qcow2", "df.qcow2", "v2.qcow2", "small.qcow2"}) {
    SCOPED_TRACE(name);
    std::string path = dir.Sub(name);
    Json before = QemuInfo(path);
    ASSERT_TRUE(Retarget(insp, path, "other.raw", trust).ok());
    EXPECT_TRUE(QemuCheckClean(path));
    Json after = QemuInfo(path);
    EXPECT_EQ(Str(after, "backing-filename"), "other.raw");
    EXPECT_EQ(Str(after, "backing-filename-format"), "raw");
    EXPECT_EQ(*before.Find("format-specific"), *after.Find("format-specific"));
    EXPECT_EQ(Num(before, "virtual-size"), Num(after, "virtual-size"));
  }
  EXPECT_NE(Data(QemuInfo(dir.Sub("bm.qcow2"))).Find("bitmaps"), nullptr);
  EXPECT_EQ(Str(Data(QemuInfo(dir.Sub("df.qcow2"))), "data-file"), dir.Sub("data.bin"));

  // Long strings: 1023 bytes fit a 64K header, not a 512-byte one.
  std::string long_name;
  while (long_name.size() < 1000) long_name += "dddddddd/";
  std::filesystem::create_directories(dir.Sub(long_name));
  long_name += std::string(1023 - long_name.size(), 'x');
  ASSERT_EQ(long_name.size(), 1023u);
  MustRun({"cp", dir.Sub("base.raw"), dir.Sub(long_name)});
  ASSERT_TRUE(RewriteBacking(dir.Sub("bm.qcow2"), long_name, "raw").ok());
  EXPECT_TRUE(QemuCheckClean(dir.Sub("bm.qcow2")));
  Json info = QemuInfo(dir.Sub("bm.qcow2"));
  EXPECT_EQ(Str(info, "backing-filename"), long_name);
  EXPECT_NE(Data(info).Find("bitmaps"), nullptr);
  EXPECT_EQ(RewriteBacking(dir.Sub("bm.qcow2"), long_name + "y", "raw").code(),
            Code::kInvalidArgument);
  std::string small_before = ReadAll(dir.Sub("small.qcow2"));
  EXPECT_EQ(RewriteBacking(dir.Sub("small.qcow2"), long_name, "raw").code(), Code::kNoSpace);
  EXPECT_EQ(ReadAll(dir.Sub("small.qcow2")), small_before);
}

TEST(WriteInterop, BackingFormatFixKeepsGuestContent) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("base.qcow2"), "4M"});
  QemuWrite(dir.Sub("base.qcow2"), "qcow2", 0x5a, "0", "64k");
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
           dir.Sub("top.qcow2")});
  QemuWrite(dir.Sub("top.qcow2"), "qcow2", 0x77, "2M", "64k");
  MustRun({"qemu-img", "convert", "-O", "raw", dir.Sub("top.qcow2"), dir.Sub("before.raw")});
  ASSERT_TRUE(testutil::StripBackingFormat(dir.Sub("top.qcow2")).ok());
  EXPECT_EQ(QemuInfo(dir.Sub("top.qcow2")).Find("backing-filename-format"), nullptr);
  ASSERT_TRUE(SetBackingFormat(dir.Sub("top.qcow2"), "qcow2").ok());
  EXPECT_TRUE(QemuCheckClean(dir.Sub("top.qcow2")));
  Json info = QemuInfo(dir.Sub("top.qcow2"));
  EXPECT_EQ(Str(info, "backing-filename"), "base.qcow2");
  EXPECT_EQ(Str(info, "backing-filename-format"), "qcow2");
  RunResult cmp = testutil::Run({"qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                                 dir.Sub("before.raw"), dir.Sub("top.qcow2")});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.out << cmp.err;
}

// --- Refusals change nothing --------------------------------------------------------

TEST(WriteInterop, RefusalsLeaveEveryFileUnchanged) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("base.qcow2"), "4M"});
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
           dir.Sub("top.qcow2")});
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("other.qcow2"), "4M"});
  // A raw volume whose content is a qcow2 header pointing outside the pool.
  testutil::CraftOptions evil;
  evil.backing = "/etc/passwd";
  ASSERT_TRUE(testutil::WriteCraftedQcow2(dir.Sub("guest-written.raw"), evil).ok());
  ImageInspector insp;
  TrustContext trust = PoolTrust(dir.path());
  auto snap = Snapshot(dir.path());

  EXPECT_EQ(Retarget(insp, dir.Sub("top.qcow2"), "missing.qcow2", trust).code(), Code::kNotFound);
  EXPECT_EQ(
      CreateOverlay(insp, dir.Sub("new.qcow2"), "missing", dir.Sub("missing"), std::nullopt, trust)
          .code(),
      Code::kNotFound);
  EXPECT_EQ(CreateOverlay(insp, dir.Sub("new.qcow2"), "guest-written.raw",
                          dir.Sub("guest-written.raw"), std::nullopt, trust)
                .code(),
            Code::kPermissionDenied);
  EXPECT_EQ(CreateOverlay(insp, dir.Sub("other.qcow2"), "base.qcow2", dir.Sub("base.qcow2"),
                          std::nullopt, trust)
                .code(),
            Code::kExists);
  Qcow2CreateOptions o;
  o.size = 1 << 20;
  EXPECT_EQ(CreateQcow2(dir.Sub("other.qcow2"), o).code(), Code::kExists);
  EXPECT_EQ(ParseVolumeXml("<volume><name>x</name><capacity>1</capa").status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(Retarget(insp, dir.Sub("top.qcow2"), "", trust).code(), Code::kInvalidArgument);
  EXPECT_EQ(SetBackingFormat(dir.Sub("top.qcow2"), "nonsense").code(), Code::kInvalidArgument);

  {
    testutil::QemuHolder holder(dir.Sub("top.qcow2"), "qcow2");
    ASSERT_TRUE(holder.holding()) << "qemu-io never locked the image";
    EXPECT_EQ(Retarget(insp, dir.Sub("top.qcow2"), "other.qcow2", trust).code(), Code::kBusy);
    EXPECT_EQ(SetBackingFormat(dir.Sub("top.qcow2"), "raw").code(), Code::kBusy);
    EXPECT_EQ(RewriteBacking(dir.Sub("top.qcow2"), "other.qcow2", "qcow2").code(), Code::kBusy);
    // The base is held too (read-only, as a backing file): also busy.
    EXPECT_TRUE(*ImageInUse(dir.Sub("base.qcow2")));
    EXPECT_FALSE(*ImageInUse(dir.Sub("other.qcow2")));
  }
  EXPECT_EQ(Snapshot(dir.path()), snap);
  // Once qemu-io is gone the same retarget goes through.
  EXPECT_FALSE(*ImageInUse(dir.Sub("top.qcow2")));
  EXPECT_TRUE(Retarget(insp, dir.Sub("top.qcow2"), "other.qcow2", trust).ok());
  EXPECT_TRUE(QemuCheckClean(dir.Sub("top.qcow2")));
}

TEST(WriteInterop, UpdateLockMakesQemuImgBackOff) {
  ScopedTempDir dir;
  MustRun({"qemu-img", "create", "-q", "-f", "qcow2", dir.Sub("img.qcow2"), "4M"});
  int fd = ::open(dir.Sub("img.qcow2").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(LockForUpdate(fd, dir.Sub("img.qcow2")).ok());
  RunResult r = testutil::Run({"qemu-img", "rebase", "-u", "-b", "", dir.Sub("img.qcow2")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("lock"), std::string::npos) << r.err;
  ::close(fd);
  EXPECT_EQ(testutil::Run({"qemu-img", "rebase", "-u", "-b", "", dir.Sub("img.qcow2")}).exit_code,
            0);
}

// --- ENOSPC ------------------------------------------------------------------------

// A tiny tmpfs mounted for one test, always unmounted.
class TinyFs {
 public:
  explicit TinyFs(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directory(dir_);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755") == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~TinyFs() {
    if (mounted_ && ::umount2(dir_.c_str(), 0) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  TinyFs(const TinyFs&) = delete;
  TinyFs& operator=(const TinyFs&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

// Fills the file system at `dir` with `filler`, then frees `free_bytes`.
void Fill(const std::string& filler, uint64_t free_bytes) {
  int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  std::vector<char> page(4096, 'f');
  off_t size = 0;
  for (;;) {
    ssize_t n = ::write(fd, page.data(), page.size());
    if (n <= 0) break;
    size += n;
  }
  ASSERT_GE(uint64_t(size), free_bytes);
  ASSERT_EQ(::ftruncate(fd, size - off_t(free_bytes)), 0);
  ::close(fd);
}

TEST(WriteInterop, EnospcInTheMiddleOfCreateLeavesNothingBehind) {
  ScopedTempDir dir;
  std::string mnt = dir.Sub("mnt");
  TinyFs fs(mnt);
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << fs.error();
  for (bool tmpfile : {true, false}) {
    SCOPED_TRACE(tmpfile ? "O_TMPFILE" : "named temporary file");
    // Two free pages: the header and the refcount table fit, the refcount
    // block does not.
    Fill(mnt + "/filler", 8192);
    Qcow2CreateOptions o;
    o.size = 1 << 20;
    o.backing = "base.qcow2";
    o.backing_format = "qcow2";
    o.file.allow_o_tmpfile = tmpfile;
    Status s = CreateQcow2(mnt + "/new.qcow2", o);
    EXPECT_EQ(s.code(), Code::kNoSpace) << s.ToString();
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(mnt)) {
      names.push_back(e.path().filename().string());
    }
    EXPECT_EQ(names, std::vector<std::string>{"filler"});
    // With room, the same create works: the failure above was ENOSPC only.
    std::filesystem::remove(mnt + "/filler");
    Qcow2CreateOptions base;
    base.size = 1 << 20;
    ASSERT_TRUE(CreateQcow2(mnt + "/base.qcow2", base).ok());
    ASSERT_TRUE(CreateQcow2(mnt + "/new.qcow2", o).ok());
    EXPECT_TRUE(QemuCheckClean(mnt + "/new.qcow2"));
    std::filesystem::remove(mnt + "/new.qcow2");
    std::filesystem::remove(mnt + "/base.qcow2");
  }
}

}  // namespace
}  // namespace chainfs::core
