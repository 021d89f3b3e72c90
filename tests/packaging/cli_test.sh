# The installed chainfs and chainctl answer --help and --version, and every
# line they print on stderr for an error starts with the program's name
# (or is the "Try 'PROG --help'" hint that follows a usage error).
# shellcheck source=tests/packaging/lib.sh
source "$(dirname "$0")/lib.sh"
need cmake qemu-img fusermount3 timeout
install_tree
chainfs=$root/usr/bin/chainfs
chainctl=$root/usr/bin/chainctl
mnt=$scratch/mnt
mkdir -p "$mnt" "$scratch/pool" "$scratch/empty"
qemu-img create -q -f qcow2 "$scratch/pool/base.qcow2" 1M
qemu-img create -q -f qcow2 -b "$scratch/pool/gone.qcow2" -F qcow2 -u "$scratch/pool/broken.qcow2" 1M
daemon=""
mounted() { grep -qs " $mnt fuse.chainfs " /proc/self/mounts; }
cleanup() {
  if [[ -n $daemon ]] && kill -0 "$daemon" 2>/dev/null; then kill -TERM "$daemon"; sleep 1; kill -KILL "$daemon" 2>/dev/null || true; fi
  if mounted; then fusermount3 -uz "$mnt"; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

for prog in chainfs chainctl; do
  bin=$root/usr/bin/$prog
  out=$("$bin" --help 2>"$scratch/err") && rc=0 || rc=$?
  check "$prog --help: exit 0, usage on stdout, nothing on stderr" \
    "$([[ $rc == 0 && $out == "Usage: $prog "* && ! -s $scratch/err ]]; echo $?)" "exit $rc: $out"
  out=$("$bin" --version 2>"$scratch/err") && rc=0 || rc=$?
  check_equal "$prog --version" "0 $prog $(sed -n 's/^project(chainfs VERSION \([0-9.]*\) .*/\1/p' "$source_dir/CMakeLists.txt")" "$rc $out"
done

# Runs PROG ARGS... (bounded), expects exit status WANT and a message whose
# every stderr line starts with "PROG: " or "Try 'PROG --help'".
expect_error() {
  local want=$1 prog=$2
  shift 2
  local err rc line bad="" before=no
  mounted && before=yes
  err=$(timeout 30 "$root/usr/bin/$prog" "$@" 2>&1 >/dev/null) && rc=0 || rc=$?
  if [[ $before == no ]] && mounted; then fusermount3 -uz "$mnt"; bad="it mounted"; fi
  [[ -n $err ]] || bad="nothing on stderr"
  while IFS= read -r line; do
    [[ $line == "$prog: "* || $line == "Try '$prog --help' for more information." ]] || bad="line: $line"
  done <<<"$err"
  check "$prog $* => exit $want, every stderr line names $prog" \
    "$([[ $rc == "$want" && -z $bad ]]; echo $?)" "exit $rc ${bad:+($bad)}: $err"
}

expect_error 2 chainfs --bogus "$mnt"
expect_error 2 chainfs
expect_error 2 chainfs a b c
expect_error 2 chainfs --pool-dir
expect_error 2 chainfs -o cache_timeout=x "$mnt"
expect_error 1 chainfs -f --pool nonsense "$mnt"
expect_error 1 chainfs -f --pool-dir "$scratch/nonexistent" "$mnt"
expect_error 1 chainfs -f --pool "p=$scratch/pool" "$scratch/nonexistent"
# libfuse's own message for an option it does not know, prefixed too.
expect_error 1 chainfs -f --pool "p=$scratch/pool" -o no_such_fuse_option "$mnt"

expect_error 2 chainctl --bogus
expect_error 2 chainctl
expect_error 2 chainctl frobnicate
expect_error 2 chainctl info
expect_error 2 chainctl info "$scratch/nonexistent.qcow2"
expect_error 2 chainctl --pool-dir "$scratch/nonexistent" pools
expect_error 2 chainctl --pool nonsense pools
expect_error 2 chainctl xml bogus "$scratch/pool/base.qcow2"
expect_error 2 chainctl create "$scratch/pool/new.qcow2"
expect_error 1 chainctl create -b "$scratch/pool/base.qcow2" "$scratch/pool/base.qcow2"
expect_error 2 chainctl map "$scratch/pool/broken.qcow2"
expect_error 2 chainctl --domain-dir "$scratch/empty" domain nosuchvm

# A second chainfs on a live mount is refused with the program's name.
"$chainfs" -f --pool "p=$scratch/pool" "$mnt" >"$scratch/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 200); do mounted && break; sleep 0.05; done
check "chainfs -f mounts" "$(mounted; echo $?)" "$(cat "$scratch/daemon.log")"
expect_error 1 chainfs -f --pool "p=$scratch/pool" "$mnt"
check "the first mount survives the refused second one" "$(mounted; echo $?)"
fusermount3 -u "$mnt"
timeout 30 tail --pid="$daemon" -f /dev/null && wait "$daemon" && rc=0 || rc=$?
check "after fusermount3 -u the daemon exits 0" "$rc" "$(cat "$scratch/daemon.log")"
daemon=""
finish
