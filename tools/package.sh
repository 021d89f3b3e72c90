#!/usr/bin/env bash
# Builds the Debian package from a clean copy of the committed tree (HEAD)
# and prints the absolute path of the .deb. The copy and the build live in a
# temporary folder; the .deb, .buildinfo and .changes land in build-package/
# (git-ignored). Needs dpkg-dev, debhelper and the Build-Depends of
# debian/control (bash tools/deps.sh installs them all).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
step() { echo "package: $*" >&2; }

out=$(realpath -m "${PACKAGE_OUT_DIR:-$repo/build-package}")
jobs=${PACKAGE_JOBS:-$(nproc)}
version=$(sed -n 's/^project(chainfs VERSION \([0-9.]*\) .*/\1/p' CMakeLists.txt)
deb_version=$(dpkg-parsechangelog -l debian/changelog -S Version)
if [[ ${deb_version%-*} != "$version" ]]; then
  echo "package: debian/changelog's version $deb_version does not match CMakeLists.txt's $version" >&2
  exit 1
fi
commit=$(git rev-parse --short HEAD)
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
  step "note: building HEAD ($commit); uncommitted changes are not in the package"
fi

work=$(mktemp -d /tmp/chainfs-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/chainfs-$version
step "copying HEAD ($commit) to $src (git archive)"
mkdir "$src"
git archive --format=tar HEAD | tar -x -C "$src"

step "dpkg-buildpackage -b -us -uc -j$jobs (several minutes)"
log=$work/build.log
if ! (cd "$src" && dpkg-buildpackage -b -us -uc -j"$jobs") >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "package: dpkg-buildpackage failed (the last 60 lines of its output are above)" >&2
  exit 1
fi
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=chainfs_${deb_version}_${arch}.deb
mkdir -p "$out"
for f in "$work/$deb" "$work/chainfs_${deb_version}_${arch}.buildinfo" "$work/chainfs_${deb_version}_${arch}.changes"; do
  cp "$f" "$out/"
done
# The debug symbols package, if debhelper made one, goes along.
for f in "$work"/chainfs-dbgsym_"${deb_version}"_"${arch}".deb; do
  [[ -e $f ]] && cp "$f" "$out/"
done
step "built $deb"
echo "$out/$deb"
