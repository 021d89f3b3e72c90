#include "util/hostile_images.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <optional>

#include "core/util/escape.h"
#include "util/qcow2_craft.h"

namespace chainfs::testutil {
namespace {

// Writes a qcow2 overlay `name` in `dir` recording `backing` / `format`.
void Overlay(const std::string& dir, const std::string& name,
             const std::optional<std::string>& backing, const std::optional<std::string>& format) {
  CraftOptions o;
  o.size = 1 << 20;
  o.backing = backing;
  o.backing_format = format;
  core::Status s = WriteCraftedQcow2(dir + "/" + name, o);
  ASSERT_TRUE(s.ok()) << s.ToString() << " " << core::EscapeOneLine(name);
}

void RawFile(const std::string& dir, const std::string& name) {
  core::Status s = WriteBytes(dir + "/" + name, std::vector<uint8_t>(64 * 1024, 0));
  ASSERT_TRUE(s.ok()) << s.ToString() << " " << core::EscapeOneLine(name);
}

}  // namespace

std::vector<HostileCase> MakeHostileImages(const std::string& dir, bool hostile_top_names) {
  std::vector<HostileCase> cases;
  int n = 0;
  // Adds a case whose top records `backing` (relative names get the case's
  // prefix) with `format`; returns the prefix for the case's other files.
  auto add = [&](const std::string& label, int elements, int problems, bool top_hostile = false) {
    ++n;
    HostileCase c;
    c.label = label;
    std::string prefix = fmt::format("c{:02}-", n);
    c.top =
        prefix + (hostile_top_names && top_hostile ? "t\x01\nop\xff\x1b[0m.qcow2" : "top.qcow2");
    c.elements = elements;
    c.problems = problems;
    cases.push_back(c);
    return prefix;
  };
  auto top = [&]() -> const std::string& { return cases.back().top; };

  std::string p = add("newline in an existing backing's name", 2, 0, true);
  RawFile(dir, p + "ba\nse.raw");
  Overlay(dir, top(), p + "ba\nse.raw", "raw");

  p = add("carriage return, missing backing", 2, 1);
  Overlay(dir, top(), p + "ba\rse.raw", "raw");

  p = add("\\x01 in a missing backing", 2, 1, true);
  Overlay(dir, top(), p + "x\x01y.raw", "raw");

  p = add("terminal colour sequence in an existing backing's name", 2, 0);
  RawFile(dir, p + "\x1b[31mred\x1b[0m.raw");
  Overlay(dir, top(), p + "\x1b[31mred\x1b[0m.raw", "raw");

  p = add("invalid UTF-8 (Latin-1) in an existing backing's name", 2, 0);
  RawFile(dir, p + "caf\xe9\xff.raw");
  Overlay(dir, top(), p + "caf\xe9\xff.raw", "raw");

  p = add("lone surrogate in a missing backing", 2, 1);
  Overlay(dir, top(), p + "\xed\xa0\x80.raw", "raw");

  p = add("U+FFFE and U+FFFF in an existing backing's name", 2, 0);
  RawFile(dir, p + "\xef\xbf\xbe\xef\xbf\xbf.raw");
  Overlay(dir, top(), p + "\xef\xbf\xbe\xef\xbf\xbf.raw", "raw");

  p = add("very long backing string with a newline", 2, 1);
  Overlay(dir, top(), p + std::string(300, 'a') + "\n" + std::string(600, 'b'), "raw");

  p = add("backing format with a newline", 2, 1);
  RawFile(dir, p + "base.raw");
  // qemu refuses a backing format of 16 bytes or more (a corrupt header).
  Overlay(dir, top(), p + "base.raw", "raw\n1: forged");

  p = add("backing format with a screen-clearing sequence and invalid UTF-8", 2, 1);
  RawFile(dir, p + "base.raw");
  Overlay(dir, top(), p + "base.raw", "\x1b[2J\xff");

  add("json: file with quotes, backslashes and escaped controls", 2, 0);
  Overlay(dir, top(),
          R"(json:{"file":{"driver":"file","filename":"/nonexistent/q\"b\\s\nl\u0001"}})", "raw");

  add("json: that does not parse, with raw control bytes", 1, 1, true);
  Overlay(dir, top(), "json:{\"a\":\"\x01\xff\n\"}", "raw");

  add("json: nbd with hostile host and export", 2, 0);
  Overlay(dir, top(),
          R"(json:{"driver":"nbd","server":{"type":"inet","host":"h\u0001st\n","port":"10809"},)"
          R"("export":"e\"x\\p\u2028\uFFFE"})",
          "raw");

  add("nbd URI with control characters", 2, 0);
  Overlay(dir, top(), "nbd://ho\x01st:10809/ex\x7fport\n", "raw");

  p = add("C1 controls (NEL, CSI) in an existing backing's name", 2, 0);
  RawFile(dir, p + "\xc2\x85\xc2\x9bnext.raw");
  Overlay(dir, top(), p + "\xc2\x85\xc2\x9bnext.raw", "raw");

  // Read up to the NUL, as qemu does: a missing "a".
  add("NUL byte inside the backing string", 2, 1);
  Overlay(dir, top(), std::string("a\0b.raw", 7), "raw");

  p = add("shell quotes and command substitution in a missing backing", 2, 1);
  Overlay(dir, top(), p + "x'$(touch pwned)'\n.raw", "raw");

  p = add("loop through a backing whose name has a newline", 3, 1);
  Overlay(dir, p + "l\noop.qcow2", top(), "qcow2");
  Overlay(dir, top(), p + "l\noop.qcow2", "qcow2");

  p = add("unrecorded format over a backing with a backing, newline in its name", 2, 1);
  RawFile(dir, p + "base.raw");
  Overlay(dir, p + "mid\n.qcow2", p + "base.raw", "raw");
  Overlay(dir, top(), p + "mid\n.qcow2", std::nullopt);

  p = add("raw recorded over a qcow2 header with a hostile name and backing", 2, 1, true);
  Overlay(dir, p + "gu\x1bst.raw", "/etc/passwd\n1: forged", std::nullopt);
  Overlay(dir, top(), p + "gu\x1bst.raw", "raw");

  p = add("right-to-left overrides filling a file name", 2, 0);
  std::string rtl;
  for (int i = 0; i < 80; ++i) rtl += "\xe2\x80\xae";
  RawFile(dir, p + rtl + ".raw");
  Overlay(dir, top(), p + rtl + ".raw", "raw");

  return cases;
}

std::string FindRawControl(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '\n') {
      ++i;
      continue;
    }
    size_t len = core::Utf8SequenceLength(text, i);
    if (len == 0 || core::NeedsEscape(text.substr(i, len))) {
      return fmt::format("byte 0x{:02x} at offset {}", static_cast<unsigned char>(text[i]), i);
    }
    i += len;
  }
  return "";
}

int CountLines(const std::string& text) {
  int lines = 0;
  for (char c : text) lines += c == '\n';
  if (!text.empty()) {
    EXPECT_EQ(text.back(), '\n') << core::EscapeOneLine(text);
  }
  return lines;
}

}  // namespace chainfs::testutil
