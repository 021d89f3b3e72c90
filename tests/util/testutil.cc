// Anchors the chainfs_testutil library; the helpers live beside it.
namespace chainfs::testutil {
// Returns the library's name, so that the archive is never empty.
const char* TestutilName() { return "chainfs_testutil"; }
}  // namespace chainfs::testutil
