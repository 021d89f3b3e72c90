# Shared by the packaging tests (tests/packaging/*_test.sh, run by CTest as
# `bash X_test.sh SOURCE_DIR BUILD_DIR`). Sourced, not run.
# shellcheck shell=bash
set -euo pipefail

source_dir=$1
build_dir=$2
failures=0
checks=0
scratch=$(mktemp -d /tmp/chainfs-packaging.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# Records one check: prints "ok: WHAT" or "FAIL: WHAT" (with DETAIL).
check() {
  local what=$1 ok=$2 detail=${3:-}
  checks=$((checks + 1))
  if [[ $ok == 0 ]]; then
    echo "ok: $what"
  else
    echo "FAIL: $what${detail:+
$detail}"
    failures=$((failures + 1))
  fi
}

# Compares two texts; a check named WHAT.
check_equal() {
  local what=$1 want=$2 got=$3
  if [[ $want == "$got" ]]; then
    check "$what" 0
  else
    check "$what" 1 "$(diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") || true)"
  fi
}

# Fails the test at once: a tool it needs is missing (tools/deps.sh installs
# every one; a test never skips silently).
need() {
  local tool
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1 && [[ ! -e $tool ]]; then
      echo "FAIL: $tool is missing (bash tools/deps.sh installs it)"
      exit 1
    fi
  done
}

# Installs the build tree into $scratch/root with the prefix /usr, as the
# Debian package does; sets $root.
install_tree() {
  root=$scratch/root
  DESTDIR=$root cmake --install "$build_dir" --prefix /usr >"$scratch/install.log" 2>&1 || {
    echo "FAIL: cmake --install"
    cat "$scratch/install.log"
    exit 1
  }
}

# Ends the test: exit 0 only if every check passed.
finish() {
  echo "$((checks - failures)) passed, $failures failed"
  [[ $failures == 0 ]]
}
