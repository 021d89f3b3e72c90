#!/usr/bin/env bash
# Installs what is missing, builds with ASan + UBSan and warnings as errors,
# and runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step is announced on stderr ("test: ..."); cmake's build lines
# ("[ NN%] Building ...") and ctest's results follow on stdout.
step() { echo "test: $*" >&2; }
step "checking the build and test dependencies (tools/deps.sh)"
bash tools/deps.sh
build=${BUILD_DIR:-build-test}
step "configuring an ASan+UBSan build with -Werror in $build/ (cmake)"
# -O1, as AddressSanitizer recommends; -g1 keeps line numbers in its reports.
# (GCC 12 at -O2 also raises false -Wmaybe-uninitialized on std::variant.)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g1" \
  -DCHAINFS_WERROR=ON -DCHAINFS_SANITIZE=ON >/dev/null
step "building with $(nproc) jobs (several minutes the first time)"
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
# The domain tests start their own libvirtd; on the fresh machine this
# script is for, a libvirtd they cannot use is a failure, not a skip.
export CHAINFS_REQUIRE_LIBVIRT=${CHAINFS_REQUIRE_LIBVIRT:-1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
step "running the test suite (ctest -j$(nproc), each test at most 600 s)"
ctest --output-on-failure -j"$(nproc)" --timeout 600
