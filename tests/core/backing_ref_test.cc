#include "core/chain/backing_ref.h"

#include <gtest/gtest.h>

namespace chainfs::core {
namespace {

TEST(BackingRef, RelativeIsJoinedToRecordingImageDirectory) {
  Result<BackingRef> r = ClassifyBacking("base.qcow2", "/pool/a/top.qcow2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, BackingKind::kRelative);
  EXPECT_EQ(r->resolved_path, "/pool/a/base.qcow2");
  EXPECT_TRUE(r->IsLocal());
}

TEST(BackingRef, RelativeWithDotDotIsNotNormalised) {
  Result<BackingRef> r = ClassifyBacking("../other/base.raw", "/pool/a/top.qcow2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->resolved_path, "/pool/a/../other/base.raw");
}

TEST(BackingRef, RelativeUnderRootDirectory) {
  Result<BackingRef> r = ClassifyBacking("base", "/top.qcow2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->resolved_path, "/base");
}

TEST(BackingRef, AbsoluteKeepsPath) {
  Result<BackingRef> r = ClassifyBacking("/images/base.raw", "/pool/top.qcow2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, BackingKind::kAbsolute);
  EXPECT_EQ(r->resolved_path, "/images/base.raw");
}

TEST(BackingRef, FileNameWithColonThatIsNoProtocolIsAFile) {
  Result<BackingRef> r = ClassifyBacking("snap:2024.qcow2", "/pool/top.qcow2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, BackingKind::kRelative);
  EXPECT_EQ(r->resolved_path, "/pool/snap:2024.qcow2");
}

TEST(BackingRef, NbdUriWithPortAndExport) {
  Result<BackingRef> r = ClassifyBacking("nbd://example.org:10809/disk0", "/pool/top.qcow2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, BackingKind::kUri);
  ASSERT_TRUE(r->network);
  EXPECT_EQ(r->network->protocol, "nbd");
  EXPECT_EQ(r->network->transport, "tcp");
  EXPECT_EQ(r->network->host, "example.org");
  EXPECT_EQ(r->network->port, "10809");
  EXPECT_EQ(r->network->name, "disk0");
  EXPECT_FALSE(r->IsLocal());
}

TEST(BackingRef, NbdUnixUriTakesSocketFromQuery) {
  Result<BackingRef> r = ClassifyBacking("nbd+unix:///exp?socket=/run/nbd.sock", "/p/t");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->network->transport, "unix");
  EXPECT_EQ(r->network->socket, "/run/nbd.sock");
  EXPECT_EQ(r->network->name, "exp");
}

TEST(BackingRef, GlusterUri) {
  Result<BackingRef> r = ClassifyBacking("gluster://srv/vol/dir/img.qcow2", "/p/t");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->network->protocol, "gluster");
  EXPECT_EQ(r->network->host, "srv");
  EXPECT_EQ(r->network->name, "vol/dir/img.qcow2");
}

TEST(BackingRef, IPv6UriHost) {
  Result<BackingRef> r = ClassifyBacking("nbd://[::1]:10809/e", "/p/t");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->network->host, "::1");
  EXPECT_EQ(r->network->port, "10809");
  EXPECT_FALSE(ClassifyBacking("nbd://[::1/e", "/p/t").ok());
}

TEST(BackingRef, OldNbdUnixProtocolForm) {
  Result<BackingRef> r = ClassifyBacking("nbd:unix:/tmp/sock:exportname=disk", "/p/t");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, BackingKind::kProtocol);
  EXPECT_EQ(r->network->transport, "unix");
  EXPECT_EQ(r->network->socket, "/tmp/sock");
  EXPECT_EQ(r->network->name, "disk");
}

TEST(BackingRef, OldNbdTcpProtocolForm) {
  Result<BackingRef> r = ClassifyBacking("nbd:host.example:10809", "/p/t");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->network->host, "host.example");
  EXPECT_EQ(r->network->port, "10809");
}

TEST(BackingRef, JsonNestedNbd) {
  Result<BackingRef> r = ClassifyBacking(
      R"(json:{"driver":"qcow2","file":{"driver":"nbd","server":{"type":"inet","host":"h","port":"10809"},"export":"e"}})",
      "/p/t");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, BackingKind::kJson);
  EXPECT_EQ(r->network->protocol, "nbd");
  EXPECT_EQ(r->network->format, "qcow2");
  EXPECT_EQ(r->network->host, "h");
  EXPECT_EQ(r->network->port, "10809");
  EXPECT_EQ(r->network->transport, "tcp");
  EXPECT_EQ(r->network->name, "e");
}

TEST(BackingRef, JsonFlattenedLocalFile) {
  Result<BackingRef> r =
      ClassifyBacking(R"(json:{"file.driver":"file","file.filename":"/img/base.raw"})", "/p/t");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, BackingKind::kJson);
  EXPECT_EQ(r->network->driver, "file");
  EXPECT_EQ(r->resolved_path, "/img/base.raw");
}

TEST(BackingRef, BadJsonIsRejectedWithReason) {
  Result<BackingRef> r = ClassifyBacking("json:{\"driver\":", "/p/t");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("not valid json"), std::string::npos);
  EXPECT_FALSE(ClassifyBacking("json:[1,2]", "/p/t").ok());
  EXPECT_FALSE(ClassifyBacking("json:{\"a\":1}", "/p/t").ok());
}

TEST(BackingRef, DeeplyNestedJsonIsRejectedNotRecursedForever) {
  std::string deep = "json:" + std::string(100000, '[') + std::string(100000, ']');
  EXPECT_FALSE(ClassifyBacking(deep, "/p/t").ok());
}

TEST(BackingRef, EmptyAndNulAreRejected) {
  EXPECT_FALSE(ClassifyBacking("", "/p/t").ok());
  EXPECT_FALSE(ClassifyBacking(std::string_view("a\0b", 3), "/p/t").ok());
}

TEST(PathParts, DirAndBaseName) {
  EXPECT_EQ(DirName("/a/b/c"), "/a/b");
  EXPECT_EQ(DirName("/c"), "/");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(BaseName("/a/b/c"), "c");
  EXPECT_EQ(BaseName("c"), "c");
}

}  // namespace
}  // namespace chainfs::core
