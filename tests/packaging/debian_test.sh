# debian/: the package's version is CMake's, the build dependencies are all
# installed by tools/deps.sh (dpkg-checkbuilddeps), and the control fields
# the package promises are there. The package itself is built by .ci/run
# (tools/package.sh), which takes minutes.
# shellcheck source=tests/packaging/lib.sh
source "$(dirname "$0")/lib.sh"
need dpkg-parsechangelog dpkg-checkbuilddeps
cd "$source_dir"
version=$(sed -n 's/^project(chainfs VERSION \([0-9.]*\) .*/\1/p' CMakeLists.txt)
check_equal "debian/changelog's version is CMake's, revision 1" "$version-1" \
  "$(dpkg-parsechangelog -l debian/changelog -S Version)"
out=$(dpkg-checkbuilddeps 2>&1) && rc=0 || rc=$?
check "dpkg-checkbuilddeps: every Build-Depends is installed" "$rc" "$out"
field() { grep -E "^$1:" debian/control | sed "s/^$1: *//"; }
check_equal "Depends" '${shlibs:Depends}, ${misc:Depends}, fuse3' "$(field Depends)"
check_equal "Recommends" 'qemu-utils' "$(field Recommends)"
check "debhelper-compat 13" "$(grep -q 'debhelper-compat (= 13)' debian/control; echo $?)"
check "dh with the cmake buildsystem" "$(grep -qE '^\s+dh \$@ --buildsystem=cmake$' debian/rules; echo $?)"
check "the package build configures without the tests" "$(grep -q -- '-DCHAINFS_TESTS=OFF' debian/rules; echo $?)"
check "debian/rules is executable" "$([[ -x debian/rules ]]; echo $?)"
# Every library the build links is in Build-Depends and in tools/deps.sh.
for dev in libfmt-dev libpugixml-dev libboost-dev libfuse3-dev zlib1g-dev libzstd-dev cmake pkg-config; do
  check "$dev is in debian/control and tools/deps.sh" \
    "$(grep -q "^ *$dev\b" <(sed -n '/^Build-Depends:/,/^[A-Z]/p' debian/control | tr ',' '\n' | sed 's/^Build-Depends://') &&
       grep -qw -- "$dev" tools/deps.sh; echo $?)"
done
finish
