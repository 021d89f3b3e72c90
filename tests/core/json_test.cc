#include "core/util/json.h"

#include <gtest/gtest.h>

#include "core/util/shell.h"

namespace chainfs::core {
namespace {

TEST(Json, DumpsIndentedLikeQemuImg) {
  Json o = Json::MakeObject();
  o.Set("virtual-size", uint64_t{1048576});
  o.Set("filename", "a \"b\"\n");
  o.Set("dirty-flag", false);
  Json arr = Json::MakeArray();
  arr.Push(1);
  o.Set("list", std::move(arr));
  o.Set("empty", Json::MakeObject());
  EXPECT_EQ(o.Dump(4),
            "{\n    \"virtual-size\": 1048576,\n    \"filename\": \"a \\\"b\\\"\\n\",\n"
            "    \"dirty-flag\": false,\n    \"list\": [\n        1\n    ],\n    \"empty\": {}\n}");
  EXPECT_EQ(o.Dump(), R"({"virtual-size":1048576,"filename":"a \"b\"\n","dirty-flag":false,"list":[1],"empty":{}})");
}

TEST(Json, SetReplacesInPlace) {
  Json o = Json::MakeObject();
  o.Set("a", 1);
  o.Set("b", 2);
  o.Set("a", 3);
  EXPECT_EQ(o.Dump(), R"({"a":3,"b":2})");
}

TEST(Json, ParseRoundTrips) {
  const char* text = R"({"a":[1,-2,3.5,true,null,"x\u00e9\ud83d\ude00"],"b":{"c":18446744073709551615}})";
  Result<Json> j = Json::Parse(text);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ(j->Find("b")->Find("c")->as_uint(), 18446744073709551615ull);
  EXPECT_EQ(j->Find("a")->as_array()[1].as_int(), -2);
  EXPECT_EQ(j->Find("a")->as_array()[5].as_string(), "x\xc3\xa9\xf0\x9f\x98\x80");
  Result<Json> again = Json::Parse(j->Dump());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *j);
}

TEST(Json, NumbersCompareAcrossRepresentations) {
  EXPECT_EQ(Json(uint64_t{5}), Json(int64_t{5}));
  EXPECT_FALSE(Json(int64_t{-1}) == Json(uint64_t(-1)));
  EXPECT_EQ(Json(2.0), Json(2));
}

TEST(Json, RejectsMalformedInput) {
  for (const char* bad : {"", "{", "[1,", "{\"a\" 1}", "tru", "\"abc", "[1] x", "{\"a\":1,}",
                          "\"\\q\"", "-", "\"\x01\""}) {
    EXPECT_FALSE(Json::Parse(bad).ok()) << bad;
  }
}

TEST(Json, RejectsOversizedAndDeepInput) {
  EXPECT_FALSE(Json::Parse(std::string(2 << 20, ' ')).ok());
  EXPECT_FALSE(Json::Parse(std::string(65, '[') + std::string(65, ']')).ok());
  EXPECT_TRUE(Json::Parse(std::string(60, '[') + std::string(60, ']')).ok());
}

TEST(ShellQuote, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(ShellQuote("/pool/base.qcow2"), "/pool/base.qcow2");
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote(""), "''");
}

}  // namespace
}  // namespace chainfs::core
