// Escaping of strings read from images for every output they reach: one-line
// texts (EscapeOneLine, OneLine), one-value files (OneValue), XML (XmlSafe)
// and JSON (JsonQuote, as qemu's JSON writer).
#include "core/util/escape.h"

#include <gtest/gtest.h>

#include <pugixml.hpp>
#include <sstream>
#include <string>

#include "core/util/json.h"

namespace chainfs::core {
namespace {

// Bytes a hostile image may put into a backing string.
const std::string kHostile =
    "a\nb\rc\td\x01"
    "e\x1b[31mf\x7f"
    "g\xff"
    "h\xed\xa0\x80"
    "i\xef\xbf\xbe"
    "j\xc2\x85"
    "k\\l";

TEST(EscapeOneLine, EscapesControlsBackslashAndInvalidUtf8) {
  EXPECT_EQ(EscapeOneLine("plain /p/a b.qcow2"), "plain /p/a b.qcow2");
  EXPECT_EQ(EscapeOneLine("caf\xc3\xa9 \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_EQ(
      EscapeOneLine(kHostile),
      "a\\nb\\rc\\td\\x01e\\x1b[31mf\\x7fg\\xffh\\xed\\xa0\\x80i\xef\xbf\xbej\\xc2\\x85k\\\\l");
  EXPECT_EQ(EscapeOneLine(std::string("n\0ul", 4)), "n\\x00ul");
}

TEST(ShortToken, CutsAtTheLimitNeverInsideACharacter) {
  EXPECT_EQ(ShortToken("short"), "short");
  EXPECT_EQ(ShortToken(std::string(40, 'x')), std::string(32, 'x') + "...");
  // A two-byte character straddling the limit is left out whole.
  EXPECT_EQ(ShortToken(std::string(31, 'x') + "\xc3\xa9" + "tail"), std::string(31, 'x') + "...");
  EXPECT_EQ(ShortToken("\n\n\n\n", 2), "\\n\\n...");
}

TEST(NeedsEscape, IsTrueForControlsAndInvalidUtf8Only) {
  EXPECT_FALSE(NeedsEscape(""));
  EXPECT_FALSE(NeedsEscape("/pool/a\\b caf\xc3\xa9.qcow2"));
  EXPECT_FALSE(NeedsEscape("\xef\xbf\xbe"));  // a noncharacter, but printable for a terminal
  for (const char* bad : {"\n", "\r", "\t", "\x01", "\x1b[0m", "\x7f", "\xff", "\xc2\x85",
                          "\xed\xa0\x80", "\xc0\x80", "\xe0\x80"}) {
    EXPECT_TRUE(NeedsEscape(bad)) << EscapeOneLine(bad);
  }
}

TEST(OneLine, KeepsSafeTextAndEscapesTheRestWithoutDoublingTokens) {
  EXPECT_EQ(OneLine("/pool/a\\b.qcow2"), "/pool/a\\b.qcow2");
  std::string token = ShortToken("x\ny");
  EXPECT_EQ(OneLine("message '" + token + "'"), "message 'x\\ny'");
  EXPECT_EQ(OneLine("two\nlines\\"), "two\\nlines\\\\");
  EXPECT_EQ(OneLine(kHostile).find('\n'), std::string::npos);
}

TEST(OneValue, KeepsRecordedBytesUnlessAControlCharacterWouldBreakTheLine) {
  EXPECT_EQ(OneValue("../base dir/b.qcow2"), "../base dir/b.qcow2");
  // Latin-1 file names are real, working backing files: kept byte for byte.
  EXPECT_EQ(OneValue("caf\xe9.raw"), "caf\xe9.raw");
  EXPECT_EQ(OneValue("a\\b"), "a\\b");
  EXPECT_EQ(OneValue("base\n.raw"), "base\\n.raw");
  EXPECT_EQ(OneValue("caf\xe9\r"), "caf\\xe9\\r");
  EXPECT_EQ(OneValue("x\x1b[31m"), "x\\x1b[31m");
  EXPECT_EQ(OneValue("x\xc2\x9b"
                     "31m"),
            "x\\xc2\\x9b31m");
}

TEST(XmlSafe, ReplacesEverythingXml10CannotCarryByReplacementCharacter) {
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(XmlSafe("/pool/caf\xc3\xa9 & <b>.qcow2"), "/pool/caf\xc3\xa9 & <b>.qcow2");
  EXPECT_EQ(XmlSafe("a\x01"
                    "b"),
            "a" + fffd + "b");
  EXPECT_EQ(XmlSafe("a\nb\rc\td"), "a" + fffd + "b" + fffd + "c" + fffd + "d");
  EXPECT_EQ(XmlSafe("\xff\xfe"), fffd + fffd);
  EXPECT_EQ(XmlSafe("\xef\xbf\xbe|\xef\xbf\xbf|\xef\xbf\xbd"), fffd + "|" + fffd + "|" + fffd);
  EXPECT_EQ(XmlSafe("\xed\xa0\x80"), fffd + fffd + fffd);  // a lone surrogate, byte by byte
  EXPECT_EQ(XmlSafe("\xc2\x85"), fffd);
  EXPECT_EQ(XmlSafe(std::string("n\0l", 3)), "n" + fffd + "l");
  // Whatever goes in, pugixml can read the result back as an attribute.
  pugi::xml_document doc;
  pugi::xml_node n = doc.append_child("x");
  n.append_attribute("file") = XmlSafe(kHostile).c_str();
  std::ostringstream out;
  doc.save(out);
  EXPECT_EQ(out.str().find("&#"), std::string::npos) << out.str();
  pugi::xml_document back;
  ASSERT_TRUE(back.load_string(out.str().c_str()));
  EXPECT_EQ(std::string(back.child("x").attribute("file").value()), XmlSafe(kHostile));
}

TEST(JsonQuote, EscapesAsQemuJsonWriter) {
  EXPECT_EQ(JsonQuote("/pool/a b.qcow2"), "\"/pool/a b.qcow2\"");
  EXPECT_EQ(JsonQuote("q\"b\\s/"), "\"q\\\"b\\\\s/\"");
  EXPECT_EQ(JsonQuote("\b\f\n\r\t\x01\x1f\x7f"), "\"\\b\\f\\n\\r\\t\\u0001\\u001F\\u007F\"");
  // Every non-ASCII character as \uXXXX in upper case, beyond the BMP as a pair.
  EXPECT_EQ(JsonQuote("caf\xc3\xa9 \xf0\x9f\x98\x80 \xc2\x85"),
            "\"caf\\u00E9 \\uD83D\\uDE00 \\u0085\"");
  // Invalid UTF-8 as U+FFFD: one per broken sequence, as qemu's
  // mod_utf8_codepoint consumes it.
  EXPECT_EQ(JsonQuote("\xff"), "\"\\uFFFD\"");
  EXPECT_EQ(JsonQuote("\xed\xa0\x80"), "\"\\uFFFD\"");                     // surrogate
  EXPECT_EQ(JsonQuote("\xef\xbf\xbe\xef\xbf\xbf"), "\"\\uFFFD\\uFFFD\"");  // noncharacters
  EXPECT_EQ(JsonQuote("\xef\xb7\x90"), "\"\\uFFFD\"");                     // U+FDD0
  EXPECT_EQ(JsonQuote("\xe0\x80"
                      "a"),
            "\"\\uFFFDa\"");                                        // overlong, cut short
  EXPECT_EQ(JsonQuote("\xe0\x80\x80"), "\"\\uFFFD\"");              // overlong
  EXPECT_EQ(JsonQuote("\xf4\x90\x80\x80"), "\"\\uFFFD\"");          // beyond U+10FFFF
  EXPECT_EQ(JsonQuote("\x80\x80"), "\"\\uFFFD\\uFFFD\"");           // stray continuations
  EXPECT_EQ(JsonQuote("\xc3"), "\"\\uFFFD\"");                      // truncated at the end
  EXPECT_EQ(JsonQuote("\xc0\x80"), "\"\\u0000\"");                  // modified UTF-8 NUL
  EXPECT_EQ(JsonQuote("\xfc\x80\x80\x80\x80\x80"), "\"\\uFFFD\"");  // six-byte form
}

TEST(JsonQuote, AnyBytesGiveAStringTheStrictParserReadsBack) {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(char(c));
  for (const std::string& s : {all, kHostile, std::string("\xf0\x9f"), std::string("\xe2\x82")}) {
    std::string quoted = JsonQuote(s);
    for (unsigned char c : quoted) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << int(c);
    Result<Json> parsed = Json::Parse(quoted);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString() << " " << quoted;
    EXPECT_TRUE(parsed->is_string());
  }
  // Valid text round-trips.
  std::string text = "caf\xc3\xa9 \"x\"\n\xf0\x9f\x98\x80";
  Result<Json> back = Json::Parse(JsonQuote(text));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->as_string(), text);
}

}  // namespace
}  // namespace chainfs::core
