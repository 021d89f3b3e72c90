#include "util/qemu_check.h"

#include "util/run.h"

namespace chainfs::testutil {

::testing::AssertionResult QemuImgCheckClean(const std::string& path) {
  RunResult r = Run({"qemu-img", "check", "-f", "qcow2", path});
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "qemu-img check exit " << r.exit_code << ": " << r.out << r.err;
}

}  // namespace chainfs::testutil
