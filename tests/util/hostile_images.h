// Hostile images for the output-injection tests (issue 9): qcow2 overlays
// whose backing strings, backing formats and file names carry newlines,
// control characters, terminal sequences, invalid UTF-8, lone surrogates,
// noncharacters, very long names and json: strings with quotes and
// backslashes; generated at test time, never committed.
#pragma once

#include <string>
#include <vector>

namespace chainfs::testutil {

// One hostile chain: its top image and what a correct resolver finds.
struct HostileCase {
  std::string label;          // what is hostile, for test messages
  std::string top;            // file name of the top image in the folder
  int elements = 0;           // chain elements (= lines of `chainctl chain`)
  int problems = 0;           // problems (= lines of `chainctl check` and VOL/problems)
  bool has_backing = true;    // the top records a backing string
  bool qemu_compares = true;  // qemu-img info reads the same backing string
};

// Writes every case's images into `dir` (names start "cNN-" so cases never
// meet) and returns the cases; fails the current test if a file cannot be
// written. With `hostile_top_names`, some top images get names with control
// characters and invalid UTF-8 too (not for pools: such entries are left out).
std::vector<HostileCase> MakeHostileImages(const std::string& dir, bool hostile_top_names);

// Returns "" if `text` holds no control character other than '\n' and is
// valid UTF-8; else a description of the first offending byte.
std::string FindRawControl(const std::string& text);

// Returns the number of '\n' in `text`, failing the test if `text` is not
// empty and does not end with one.
int CountLines(const std::string& text);

}  // namespace chainfs::testutil
