// The data view as admins use it (DESIGN section 9, issue 11): the guest
// tools run on VOL/data through a real FUSE mount -- an ext4 filesystem in
// an overlay mounted with `losetup -r` + `mount -o ro`, `fdisk -l`,
// `file -s` and `blkid -p` on partitioned and formatted images -- every
// format qemu-img writes compared with `qemu-img convert -O raw` and
// `qemu-img map`, and 64 concurrent readers while a rebase runs.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mount/mount_fixture.h"
#include "util/qemu_holder.h"

namespace chainfs::mounttest {
namespace {

class MountDataGuestTest : public MountTest {
 protected:
  // Makes folder NAME in the temp folder holding `files` (name, content).
  std::string Tree(const std::string& name,
                   const std::vector<std::pair<std::string, std::string>>& files) {
    std::string dir = tmp_.Sub(name);
    EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0);
    for (const auto& [file, content] : files) {
      MustRun({"sh", "-c", "printf %s \"$1\" > \"$2\"", "sh", content, dir + "/" + file});
    }
    return dir;
  }
};

// Returns blkid's export output without its DEVNAME line.
std::string WithoutDevname(const std::string& out) {
  std::string kept;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t end = out.find('\n', pos);
    end = end == std::string::npos ? out.size() : end + 1;
    if (out.compare(pos, 8, "DEVNAME=") != 0) kept += out.substr(pos, end - pos);
    pos = end;
  }
  return kept;
}

// Returns `text` with every run of spaces made one space.
std::string Squeezed(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c != ' ' || out.empty() || out.back() != ' ') out += c;
  }
  return out;
}

// A read-only loop device over a file and an ext4 mount of it, both undone
// (in that order) when it goes out of scope, before the FUSE mount is.
class LoopMount {
 public:
  LoopMount(const std::string& file, const std::string& dir) : dir_(dir) {
    testutil::RunResult r = testutil::Run({"losetup", "-r", "-f", "--show", file});
    if (r.exit_code != 0) {
      ADD_FAILURE() << "losetup -r " << file << ": " << r.err;
      return;
    }
    device_ = r.out.substr(0, r.out.find('\n'));
    r = testutil::Run({"mount", "-t", "ext4", "-o", "ro,noload", device_, dir_});
    if (r.exit_code != 0) {
      ADD_FAILURE() << "mount " << device_ << ": " << r.err;
      return;
    }
    mounted_ = true;
  }
  ~LoopMount() {
    if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!device_.empty()) testutil::Run({"losetup", "-d", device_});
  }
  bool ok() const { return mounted_; }
  LoopMount(const LoopMount&) = delete;
  LoopMount& operator=(const LoopMount&) = delete;

 private:
  std::string dir_;
  std::string device_;
  bool mounted_ = false;
};

TEST_F(MountDataGuestTest, Ext4InAnOverlayMountsThroughALoopDeviceAndShowsTheOverlaysTree) {
  if (::geteuid() != 0) GTEST_SKIP() << "losetup and mount need root";
  // The first tree in a raw ext4 file, made a qcow2 base; the second tree
  // written over it as an overlay that holds only the clusters that differ.
  std::string one = Tree("tree1", {{"hello.txt", "one\n"}, {"kept.txt", "unchanged\n"}});
  std::string two = Tree("tree2", {{"hello.txt", "two\n"}, {"kept.txt", "unchanged\n"},
                                   {"new.txt", "only in the overlay\n"}});
  std::string fs1 = tmp_.Sub("fs1.raw"), fs2 = tmp_.Sub("fs2.raw");
  MustRun({"mkfs.ext4", "-q", "-F", "-d", one, fs1, "32M"});
  MustRun({"cp", fs1, fs2});
  // The same filesystem with the second tree's files written into it
  // (debugfs changes the image in place: most clusters stay the base's).
  MustRun({"debugfs", "-w", "-R", "rm hello.txt", fs2});
  MustRun({"debugfs", "-w", "-R", "write " + two + "/hello.txt hello.txt", fs2});
  MustRun({"debugfs", "-w", "-R", "write " + two + "/new.txt new.txt", fs2});
  MustRun({"qemu-img", "convert", "-O", "qcow2", fs1, P("base.qcow2")});
  MustRun({"qemu-img", "convert", "-O", "qcow2", "-B", P("base.qcow2"), "-F", "qcow2", fs2,
           P("top.qcow2")});
  ASSERT_TRUE(MountPool());
  ExpectSameBytes(M("p/top.qcow2/data"), fs2);
  std::string where = tmp_.Sub("guest");
  ASSERT_EQ(::mkdir(where.c_str(), 0755), 0);
  {
    LoopMount guest(M("p/top.qcow2/data"), where);
    ASSERT_TRUE(guest.ok());
    EXPECT_EQ(ReadFile(where + "/hello.txt"), "two\n");
    EXPECT_EQ(ReadFile(where + "/new.txt"), "only in the overlay\n");
    EXPECT_EQ(ReadFile(where + "/kept.txt"), "unchanged\n");
  }
  {
    // The base layer alone (chain/1/data) is the first tree.
    LoopMount guest(M("p/top.qcow2/chain/1/data"), where);
    ASSERT_TRUE(guest.ok());
    EXPECT_EQ(ReadFile(where + "/hello.txt"), "one\n");
    EXPECT_EQ(ReadFile(where + "/new.txt", false), "");
  }
  // file -s and blkid -p see the filesystem as on the raw file.
  EXPECT_EQ(MustRun({"file", "-s", "-b", M("p/top.qcow2/data")}).out,
            MustRun({"file", "-s", "-b", fs2}).out);
  EXPECT_NE(MustRun({"file", "-s", "-b", M("p/top.qcow2/data")}).out.find("ext4 filesystem data"),
            std::string::npos);
  std::string blkid = WithoutDevname(MustRun({"blkid", "-p", "-o", "export", M("p/top.qcow2/data")}).out);
  EXPECT_EQ(blkid, WithoutDevname(MustRun({"blkid", "-p", "-o", "export", fs2}).out));
  EXPECT_NE(blkid.find("TYPE=ext4\n"), std::string::npos) << blkid;
}

TEST_F(MountDataGuestTest, FdiskListsThePartitionsOfAQcow2AsOfItsRawImage) {
  std::string raw = tmp_.Sub("disk.raw");
  MustRun({"truncate", "-s", "32M", raw});
  MustRun({"sh", "-c", "printf 'label: dos\\n,8MiB,L\\n,,L\\n' | sfdisk -q \"$1\"", "sh", raw});
  std::string fs = tmp_.Sub("part2.raw");
  MustRun({"mkfs.ext4", "-q", "-F", fs, "8M"});
  MustRun({"dd", "if=" + fs, "of=" + raw, "bs=1M", "seek=9", "conv=notrunc", "status=none"});
  MustRun({"qemu-img", "convert", "-O", "qcow2", raw, P("disk.qcow2")});
  ASSERT_TRUE(MountPool());
  std::string data = M("p/disk.qcow2/data");
  std::string ours = MustRun({"fdisk", "-l", data}).out;
  std::string theirs = MustRun({"fdisk", "-l", raw}).out;
  // The same table, with the file names swapped (and the columns, which
  // fdisk widens to the longer name, squeezed).
  for (size_t at; (at = theirs.find(raw)) != std::string::npos;) theirs.replace(at, raw.size(), data);
  EXPECT_EQ(Squeezed(ours), Squeezed(theirs));
  EXPECT_NE(ours.find("Disklabel type: dos"), std::string::npos) << ours;
  EXPECT_NE(ours.find(data + "1 "), std::string::npos) << ours;
  EXPECT_NE(ours.find(data + "2 "), std::string::npos) << ours;
  EXPECT_EQ(MustRun({"file", "-s", "-b", data}).out, MustRun({"file", "-s", "-b", raw}).out);
  EXPECT_NE(MustRun({"file", "-s", "-b", data}).out.find("DOS/MBR boot sector"), std::string::npos);
}

// Every format qemu-img writes, converted from one raw image with data
// written by qemu-io: VOL/data is the raw convert byte for byte, its size
// the virtual size, and map.json qemu-img map's.
TEST_F(MountDataGuestTest, EveryFormatQemuImgWritesReadsAsItsRawConvert) {
  std::string src = tmp_.Sub("src.raw");
  MustRun({"truncate", "-s", "24M", src});
  MustRun({"qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0xa5 12M 64K",
           "-c", "write -P 0x3c 23M 1M", src});
  struct Kind {
    std::string name, format;
    std::vector<std::string> options;
  };
  const std::vector<Kind> kinds = {
      {"img.qed", "qed", {}},
      {"img.vdi", "vdi", {}},
      {"static.vdi", "vdi", {"-o", "static=on"}},
      {"dynamic.vpc", "vpc", {}},
      {"fixed.vpc", "vpc", {"-o", "subformat=fixed"}},
      {"dynamic.vhdx", "vhdx", {}},
      {"fixed.vhdx", "vhdx", {"-o", "subformat=fixed"}},
      {"sparse.vmdk", "vmdk", {}},
      {"stream.vmdk", "vmdk", {"-o", "subformat=streamOptimized"}},
      {"flat.vmdk", "vmdk", {"-o", "subformat=monolithicFlat"}},
      {"split.vmdk", "vmdk", {"-o", "subformat=twoGbMaxExtentSparse"}},
      {"splitflat.vmdk", "vmdk", {"-o", "subformat=twoGbMaxExtentFlat"}},
      {"old.qcow", "qcow", {}},
  };
  for (const Kind& k : kinds) {
    std::vector<std::string> argv = {"qemu-img", "convert", "-O", k.format};
    argv.insert(argv.end(), k.options.begin(), k.options.end());
    argv.push_back(src);
    argv.push_back(P(k.name));
    MustRun(argv);
  }
  ASSERT_TRUE(MountPool());
  for (const Kind& k : kinds) {
    SCOPED_TRACE(k.name);
    std::string data = M("p/" + k.name + "/data");
    struct stat st;
    ASSERT_EQ(::stat(data.c_str(), &st), 0);
    EXPECT_EQ(uint64_t(st.st_size), InfoNumber(QemuInfo(P(k.name)), "virtual-size"));
    ExpectSameBytes(data, Converted(P(k.name), k.name + ".raw"));
    EXPECT_EQ(ReadFile(M("p/" + k.name + "/map.json")),
              MustRun({"qemu-img", "map", "-U", "--output=json", P(k.name)}).out);
  }
}

// Every qcow2 kind of the rebase work (issue 5) as a chain in the pool:
// VOL/data, each chain/N/data and map.json against qemu-img's convert of
// the same element and its map, and the size against the virtual size.
TEST_F(MountDataGuestTest, EveryQcow2KindAndEveryLayerReadsAsQemuImgConvert) {
  QemuImgCreate({"-f", "raw", P("base.raw"), "8M"});
  MustRun({"qemu-io", "-f", "raw", "-c", "write -P 0x11 512K 3M", "-c", "write -P 0x12 7M 1M",
           P("base.raw")});
  QemuImgCreate({"-f", "raw", P("short.raw"), "3M"});
  MustRun({"qemu-io", "-f", "raw", "-c", "write -P 0x13 1M 2M", P("short.raw")});
  std::string plain = tmp_.Sub("plain.qcow2");  // source of the compressed images
  QemuImgCreate({"-f", "qcow2", plain, "8M"});
  MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x21 0 2M", "-c", "write -P 0x22 5M 64K", plain});
  MustRun({"qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zlib", plain,
           P("zlib.qcow2")});
  MustRun({"qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", plain,
           P("zstd.qcow2")});
  struct Top {
    std::string name, backing, backing_format, options, size;
  };
  const std::vector<Top> tops = {
      {"v2.qcow2", "base.raw", "raw", "compat=0.10", ""},
      {"c4k.qcow2", "base.raw", "raw", "cluster_size=4k", ""},
      {"c64k.qcow2", "base.raw", "raw", "cluster_size=64k", ""},
      {"c2m.qcow2", "base.raw", "raw", "cluster_size=2M", ""},
      {"onzlib.qcow2", "zlib.qcow2", "qcow2", "cluster_size=64k", ""},
      {"onzstd.qcow2", "zstd.qcow2", "qcow2", "cluster_size=64k", ""},
      {"xl2.qcow2", "base.raw", "raw", "extended_l2=on", ""},
      {"longer.qcow2", "short.raw", "raw", "cluster_size=64k", "6M"},
      {"shorter.qcow2", "base.raw", "raw", "cluster_size=64k", "5M"},
  };
  for (const Top& t : tops) {
    std::vector<std::string> args = {"-f", "qcow2", "-o", t.options, "-b", t.backing, "-F",
                                     t.backing_format, P(t.name)};
    if (!t.size.empty()) args.push_back(t.size);
    QemuImgCreate(args);
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x31 1M 8K", "-c", "write -z 2M 64K",
             "-c", "write -P 0x32 2600K 3K", P(t.name)});
  }
  ASSERT_TRUE(MountPool());
  for (const Top& t : tops) {
    SCOPED_TRACE(t.name);
    struct stat st;
    ASSERT_EQ(::stat(M("p/" + t.name + "/data").c_str(), &st), 0);
    EXPECT_EQ(uint64_t(st.st_size), InfoNumber(QemuInfo(P(t.name)), "virtual-size"));
    ExpectSameBytes(M("p/" + t.name + "/data"), Converted(P(t.name), t.name + ".raw"));
    ExpectSameBytes(M("p/" + t.name + "/chain/0/data"), tmp_.Sub(t.name + ".raw"));
    ExpectSameBytes(M("p/" + t.name + "/chain/1/data"),
                    Converted(P(t.backing), t.name + "-1.raw"));
    EXPECT_EQ(ReadFile(M("p/" + t.name + "/map.json")),
              MustRun({"qemu-img", "map", "-U", "--output=json", P(t.name)}).out);
  }
}

// Returns `size` bytes of `path` at `off` read with one pread (what a
// reader of VOL/data gets for one request), "" if it cannot be opened.
std::string ReadAt(const std::string& path, off_t off, size_t size) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "";
  std::string out(size, '\0');
  ssize_t n = ::pread(fd, out.data(), size, off);
  ::close(fd);
  out.resize(n > 0 ? size_t(n) : 0);
  return out;
}

// Writes `size` bytes of `byte` at `off` straight into `path`, as a guest
// writes through QEMU.
void WriteAt(const std::string& path, char byte, off_t off, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  std::string bytes(size, byte);
  ASSERT_EQ(::pwrite(fd, bytes.data(), size, off), ssize_t(size));
  ::close(fd);
}

// An image a running QEMU holds for writing (its image locks) is read as
// qemu-img -U reads it, never from the kernel's cache, and its problems
// (and chainctl check) say its data may change; a QEMU that only reads an
// image (as it holds a backing file) changes nothing. The locks raise no
// event: the note shows when libvirt's status file of the domain appears
// or goes (the run folder is watched), as it does after QEMU opened its
// disks and after QEMU ended.
TEST_F(MountDataGuestTest, AnImageHeldForWritingIsReadUncachedAndProblemsSaySo) {
  QemuImgCreate({"-f", "raw", P("disk.raw"), "4M"});
  WriteAt(P("disk.raw"), '\x11', 0, 64 << 10);
  std::string run = tmp_.Sub("run");
  ASSERT_EQ(::mkdir(run.c_str(), 0755), 0);
  ASSERT_TRUE(MountPool({"--run-dir", run}));
  EXPECT_EQ(ReadAt(M("p/disk.raw/data"), 0, 64 << 10), std::string(64 << 10, '\x11'));  // cached
  EXPECT_EQ(ReadFile(M("p/disk.raw/problems")), "");  // cached
  const std::string note = "0: in use: a process holds '" + P("disk.raw") + "' open for writing";
  auto expect_problems = [&](bool with_note) {
    std::string got;
    for (int i = 0; i < 500; ++i) {
      got = ReadFile(M("p/disk.raw/problems"));
      if ((got.rfind(note, 0) == 0) == with_note) return got;
      ::usleep(10000);
    }
    ADD_FAILURE() << "problems: '" << got << "'";
    return got;
  };
  // The domain "starts": QEMU holds the disk, then libvirt writes its status.
  const std::string status = run + "/vm.xml";
  auto put_status = [&] {
    MustRun({"sh", "-c",
             "printf '%s\\n' \"<domstatus state='running' pid='1'><domain type='qemu'><name>vm</name>"
             "</domain></domstatus>\" > \"$1.new\" && mv \"$1.new\" \"$1\"",
             "sh", status});
  };
  {
    testutil::QemuHolder reader(P("disk.raw"), "raw", testutil::QemuHolder::Tool::kQemuIoReadOnly);
    ASSERT_TRUE(reader.holding());
    put_status();
    ::usleep(200000);
    EXPECT_EQ(ReadFile(M("p/disk.raw/problems")), "") << "a reader only";
    EXPECT_EQ(Chainctl({"check", P("disk.raw")}), "");
    ASSERT_EQ(::unlink(status.c_str()), 0);
  }
  auto writer = std::make_unique<testutil::QemuHolder>(P("disk.raw"), "raw");
  ASSERT_TRUE(writer->holding());
  put_status();
  std::string problems = expect_problems(true);
  EXPECT_NE(problems.find("-- fix: for a stable copy, pause or shut off the domain first\n"),
            std::string::npos) << problems;
  int rc = -1;
  EXPECT_EQ(Chainctl({"check", P("disk.raw")}, &rc), problems);
  EXPECT_EQ(rc, 0) << "a note, not a problem of the chain";
  // problems.json gives the note its code, as chainctl check --json does.
  std::string pjson = ReadFile(M("p/disk.raw/problems.json"));
  EXPECT_EQ(MustRun({"jq", "-r", ".[] | \"\\(.code) \\(.severity) \\(.path)\"",
                     M("p/disk.raw/problems.json")})
                .out,
            "in-use warning " + P("disk.raw") + "\n")
      << pjson;
  EXPECT_EQ(Chainctl({"check", "--json", P("disk.raw")}, &rc), pjson);
  EXPECT_EQ(rc, 0);
  // From now on the kernel keeps nothing of the data: every write the
  // guest makes is seen by the very next read, with no wait.
  for (int k = 1; k <= 30; ++k) {
    const char byte = char(0x20 + k);
    WriteAt(P("disk.raw"), byte, 0, 64 << 10);
    ASSERT_EQ(ReadAt(M("p/disk.raw/data"), 0, 64 << 10), std::string(64 << 10, byte))
        << "write " << k << " was not seen by the next read";
  }
  struct stat a, b;
  ASSERT_EQ(::stat(M("p/disk.raw/data").c_str(), &a), 0);
  ASSERT_EQ(::stat(M("p/disk.raw/data").c_str(), &b), 0);
  EXPECT_TRUE(a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec)
      << "the kernel kept the attributes";
  // The domain stops: QEMU ends, then libvirt removes the status file.
  writer.reset();
  ASSERT_EQ(::unlink(status.c_str()), 0);
  expect_problems(false);
  EXPECT_EQ(Chainctl({"check", P("disk.raw")}), "");
  EXPECT_EQ(ReadFile(M("p/disk.raw/problems.json")), "[]\n");
}

// With nothing cached before, the note comes and goes with the holder alone.
TEST_F(MountDataGuestTest, TheInUseNoteGoesWhenTheHolderDoes) {
  QemuImgCreate({"-f", "qcow2", P("top.qcow2"), "4M"});
  ASSERT_TRUE(MountPool());
  {
    testutil::QemuHolder writer(P("top.qcow2"), "qcow2");
    ASSERT_TRUE(writer.holding());
    EXPECT_NE(ReadFile(M("p/top.qcow2/problems")).find("0: in use: "), std::string::npos);
  }
  EXPECT_EQ(ReadFile(M("p/top.qcow2/problems")), "");
  EXPECT_EQ(Chainctl({"check", P("top.qcow2")}), "");
}

// A vmdk's data comes from its extent files too: the access rule and the
// mode bits cover them, also after root's read filled the kernel's cache,
// and a chmod of an extent shows at the next access.
TEST_F(MountDataGuestTest, AnExtentFileTheCallerCannotReadKeepsTheDataFromThem) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for allow_other and setpriv";
  std::string src = tmp_.Sub("src.raw");
  MustRun({"truncate", "-s", "8M", src});
  MustRun({"qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 2M", src});
  MustRun({"qemu-img", "convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", src,
           P("split.vmdk")});
  const std::string extent = P("split-s001.vmdk");
  struct stat st;
  ASSERT_EQ(::stat(extent.c_str(), &st), 0) << "qemu-img named the extent otherwise";
  ASSERT_EQ(::chmod(P("split.vmdk").c_str(), 0644), 0);
  ASSERT_EQ(::chmod(extent.c_str(), 0600), 0);
  ASSERT_TRUE(MountPool({"-o", "allow_other"}));
  const std::string data = M("p/split.vmdk/data");
  ExpectSameBytes(data, src);  // root reads first, filling the kernel's cache
  ASSERT_EQ(::stat(data.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u) << "the extent is its owner's only";
  auto as_nobody = [&] {
    return testutil::Run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cmp",
                          data, src});
  };
  testutil::RunResult r = as_nobody();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  ASSERT_EQ(::chmod(extent.c_str(), 0644), 0);
  ASSERT_EQ(::stat(data.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  r = as_nobody();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

// 64 readers over 16 volumes (4 each, every byte compared with qemu-img's
// convert) while a data-preserving rebase rewrites another chain.
TEST_F(MountDataGuestTest, SixtyFourConcurrentReadersWhileARebaseRuns) {
  constexpr int kVolumes = 16, kReadersPerVolume = 4;
  QemuImgCreate({"-f", "raw", P("base.raw"), "8M"});
  MustRun({"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 6M", P("base.raw")});
  std::vector<std::string> names, expected;
  for (int v = 0; v < kVolumes; ++v) {
    std::string name = "v" + std::to_string(v) + ".qcow2";
    QemuImgCreate({"-f", "qcow2", "-b", "base.raw", "-F", "raw", P(name)});
    std::string at = std::to_string(v % 8) + "M";
    MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P " + std::to_string(0x40 + v) + " " + at + " 256K",
             P(name)});
    names.push_back(name);
    expected.push_back(Converted(P(name), name + ".raw"));
  }
  // The chain being rebased: 96 MiB of data in the old base, copied into
  // the overlay by a rebase onto an empty base.
  QemuImgCreate({"-f", "qcow2", P("rbase.qcow2"), "128M"});
  MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 96M", P("rbase.qcow2")});
  QemuImgCreate({"-f", "qcow2", "-b", "rbase.qcow2", "-F", "qcow2", P("rtop.qcow2")});
  MustRun({"qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 64k", P("rtop.qcow2")});
  QemuImgCreate({"-f", "qcow2", P("rbase2.qcow2"), "128M"});
  std::string rtop_before = Converted(P("rtop.qcow2"), "rtop-before.raw");
  ASSERT_TRUE(MountPool());
  ASSERT_EQ(WriteValue(M("p/rtop.qcow2/rebase"), P("rbase2.qcow2") + "\n"), 0);

  std::atomic<int> errors{0}, mismatches{0}, passes{0};
  std::atomic<bool> rebase_done{false};
  std::vector<std::thread> readers;
  for (int r = 0; r < kVolumes * kReadersPerVolume; ++r) {
    readers.emplace_back([&, r] {
      const int v = r % kVolumes;
      std::vector<char> ours(128 << 10), theirs(128 << 10);
      // Each reader reads its volume at least twice and until the rebase ends.
      for (int pass = 0; pass < 2 || (!rebase_done.load() && pass < 200); ++pass) {
        int a = ::open(M("p/" + names[size_t(v)] + "/data").c_str(), O_RDONLY);
        int b = ::open(expected[size_t(v)].c_str(), O_RDONLY);
        if (a < 0 || b < 0) {
          ++errors;
          if (a >= 0) ::close(a);
          if (b >= 0) ::close(b);
          return;
        }
        // Odd readers start in the middle, so reads of one volume interleave.
        off_t start = (r / kVolumes) % 2 ? off_t(4) << 20 : 0;
        for (off_t off = start;;) {
          ssize_t n = ::pread(a, ours.data(), ours.size(), off);
          ssize_t m = ::pread(b, theirs.data(), theirs.size(), off);
          if (n < 0) {
            ++errors;
            break;
          }
          if (n != m || std::memcmp(ours.data(), theirs.data(), size_t(n)) != 0) {
            ++mismatches;
            break;
          }
          if (n == 0) break;
          off += n;
        }
        ::close(a);
        ::close(b);
        ++passes;
      }
    });
  }
  std::string result;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (std::chrono::steady_clock::now() < deadline) {
    result = ReadFile(M("p/rtop.qcow2/rebase"));
    if (result.rfind("done: ", 0) == 0 || result.rfind("failed: ", 0) == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  rebase_done = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_GE(passes.load(), kVolumes * kReadersPerVolume * 2);
  EXPECT_EQ(result.rfind("done: ", 0), 0u) << result;
  ExpectQemuCheckClean(P("rtop.qcow2"));
  ExpectSameBytes(Converted(P("rtop.qcow2"), "rtop-after.raw"), rtop_before);
  ExpectSameBytes(M("p/rtop.qcow2/data"), rtop_before);
}

}  // namespace
}  // namespace chainfs::mounttest
