#!/usr/bin/env bash
# Installs what is missing, builds chainfs, mounts the built-in demo pool
# (chainfs --demo), explores it with ls, cat, grep and jq, repairs one broken
# chain with echo, and unmounts. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the script does goes to stderr as "demo: ..." lines, so that the
# minutes of a first build are never silent; the compiler's own output is
# kept in a log and shown only if the build fails.
step() { echo "demo: $*" >&2; }
# Turns cmake's "[ NN%] ..." (make) or "[N/M] ..." (ninja) lines on stdin into one progress line on a
# terminal ("\r" updates), or a line every 10% otherwise.
build_progress() {
  local tty=0
  if [ -t 2 ]; then tty=1; fi
  awk -v tty="$tty" '
    /^\[ *[0-9]+%\]/ || /^\[[0-9]+\/[0-9]+\]/ {
      if (match($0, /^\[ *[0-9]+%/)) {
        p = substr($0, 2, RLENGTH - 2) + 0
      } else {
        split(substr($0, 2, index($0, "]") - 2), n, "/"); p = n[2] > 0 ? int(n[1] * 100 / n[2]) : 0
      }
      if (tty && p != last) { printf "\rdemo: building chainfs %3d%%", p; fflush() }
      if (!tty && int(p / 10) != int(last / 10)) { printf "demo: building chainfs %d%%\n", p; fflush() }
      last = p
    }
    END { if (tty && last != "") { printf "\n"; fflush() } }' >&2
}
step "checking the build dependencies (tools/deps.sh)"
bash tools/deps.sh
buildlog=$(mktemp)
step "configuring a Release build in build/ (cmake)"
if ! cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCHAINFS_TESTS=OFF >"$buildlog" 2>&1; then
  cat "$buildlog" >&2
  rm -f "$buildlog"
  exit 1
fi
step "building with $(nproc) jobs (a few minutes the first time; log: $buildlog)"
if ! cmake --build build -j"$(nproc)" 2>&1 | tee -a "$buildlog" | build_progress; then
  cat "$buildlog" >&2
  rm -f "$buildlog"
  exit 1
fi
rm -f "$buildlog"
step "built build/chainfs"
top=$(pwd)

mnt=$(mktemp -d "${TMPDIR:-/tmp}/chainfs-demo-mnt-XXXXXX")
step "mounting the demo pool on $mnt (chainfs -f --demo)"
"$top/build/chainfs" -f --demo "$mnt" > "$mnt.log" 2>&1 &
pid=$!
cleanup() {
  cd /
  fusermount3 -u "$mnt" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
  rm -f "$mnt.log"
}
trap cleanup EXIT
for _ in $(seq 100); do
  [ -e "$mnt/.chainfs/version" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$mnt.log" >&2; exit 1; }
  sleep 0.1
done
[ -e "$mnt/.chainfs/version" ] || { echo "demo: mount did not come up" >&2; cat "$mnt.log" >&2; exit 1; }

show() {
  printf '\n$ %s\n' "$*"
  bash -c "$*" || true
}
cd "$mnt"
echo "chainfs demo: the demo pool is mounted on $mnt"
show "cat .chainfs/version"
show "ls demo"
show "ls demo/top.qcow2 demo/top.qcow2/chain"
show "cat demo/top.qcow2/format demo/top.qcow2/backing demo/top.qcow2/backing_format"
show "cat demo/top.qcow2/chain/*/path"
show "readlink demo/top.qcow2/chain/1/volume"
show "cat demo/top.qcow2/info"
show "jq -r '.[] | \"\\(.filename) \\(.format) \\(.\"virtual-size\")\"' demo/top.qcow2/info.json"
show "cat demo/top.qcow2/disk.xml"
show "grep -H . demo/*/problems"
printf '\n$ %s\n' "echo qcow2 > demo/noformat.qcow2/backing_format   # the fix 'problems' names"
if echo qcow2 > demo/noformat.qcow2/backing_format; then
  show "cat demo/noformat.qcow2/problems demo/noformat.qcow2/backing_format"
  show "cat demo/noformat.qcow2/chain/*/path"
fi
show "cat .chainfs/log | tail -5"
echo
echo "chainfs demo: done; unmounting."
