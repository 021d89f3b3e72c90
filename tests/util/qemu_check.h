// Assertions on images through qemu-img, shared by the writer, allocator
// and rebase tests.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace chainfs::testutil {

// Succeeds if `qemu-img check` (as qcow2) reports no errors and no leaks;
// otherwise fails with its exit code and output.
::testing::AssertionResult QemuImgCheckClean(const std::string& path);

}  // namespace chainfs::testutil
