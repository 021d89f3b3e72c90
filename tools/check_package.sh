#!/usr/bin/env bash
# Checks a built chainfs .deb end to end, as .ci/run does after
# tools/package.sh: lintian (errors fail), dpkg -i, a smoke test from the
# installed paths (versions, man pages, the unit, completion, chainfs --demo,
# the fstab line through mount(8)), then dpkg -r (every file but the
# conffiles goes) and dpkg -P (those too). Needs root; installs and removes
# the package chainfs on this machine.
# Usage: bash tools/check_package.sh PATH/chainfs_VERSION_ARCH.deb
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "check_package: $*" >&2; }
fail() { echo "check_package: FAIL: $*" >&2; exit 1; }
deb=${1:?usage: check_package.sh DEB}
[[ -f $deb ]] || fail "'$deb' is not a file"
step "package: $deb"

step "lintian (errors fail the run; warnings are shown)"
timeout 900 lintian --fail-on error --tag-display-limit 0 "$deb"

step "dpkg -i"
if dpkg-query -W -f='${Status}' chainfs 2>/dev/null | grep -q 'install ok installed'; then
  timeout 300 dpkg -P chainfs >/dev/null  # a leftover of an earlier run on this machine
fi
timeout 300 dpkg -i "$deb"
files=$(mktemp /tmp/chainfs-check-files.XXXXXX)
scratch=$(mktemp -d /tmp/chainfs-check.XXXXXX)
mnt=$scratch/mnt
mkdir "$mnt"
# chainfs daemonizes: prints the PID of the daemon whose command line
# starts with $1 (of the processes with it, the one whose parent is not one
# of them: the daemon forks a wedge guardian with the same command line).
daemon_pid() {
  local f pid pids=() ppid
  for f in /proc/[0-9]*/cmdline; do
    if [[ $(tr '\0' ' ' 2>/dev/null <"$f") == "$1"* ]]; then
      pid=${f#/proc/}
      pids+=("${pid%/cmdline}")
    fi
  done
  for pid in "${pids[@]}"; do
    ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || continue
    [[ " ${pids[*]} " == *" $ppid "* ]] || echo "$pid"
  done
}
mounted() { grep -qs " $mnt fuse.chainfs " /proc/self/mounts; }
cleanup() {
  if mounted; then fusermount3 -uz "$mnt"; fi
  rm -rf "$files" "$scratch"
}
trap cleanup EXIT
# What the package installed (files, not the folders it shares: with
# /usr merged, /lib is a link to one),
# and which of them are conffiles (kept by dpkg -r, removed by dpkg -P).
dpkg -L chainfs | while IFS= read -r p; do [[ -d $p ]] || echo "$p"; done >"$files"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' chainfs | awk 'NF {print $1}')
step "installed $(wc -l <"$files") files; conffiles: $(echo $conffiles)"
sed 's/^/check_package:   /' "$files" >&2

step "smoke test from the installed paths"
[[ $(command -v chainfs) == /usr/bin/chainfs ]] || fail "chainfs is not /usr/bin/chainfs: $(command -v chainfs)"
[[ $(command -v chainctl) == /usr/bin/chainctl ]] || fail "chainctl is not /usr/bin/chainctl"
version=$(sed -n 's/^project(chainfs VERSION \([0-9.]*\) .*/\1/p' CMakeLists.txt)
[[ $(timeout 30 chainfs --version) == "chainfs $version" ]] || fail "chainfs --version"
[[ $(timeout 30 chainctl --version) == "chainctl $version" ]] || fail "chainctl --version"
timeout 30 chainctl --help >/dev/null || fail "chainctl --help"
[[ $(timeout 60 man -w chainfs) == /usr/share/man/man1/chainfs.1.gz ]] || fail "man -w chainfs: $(man -w chainfs 2>&1)"
[[ $(timeout 60 man -w chainctl) == /usr/share/man/man1/chainctl.1.gz ]] || fail "man -w chainctl"
timeout 60 man -P cat chainfs >"$scratch/man.txt" 2>&1 || fail "man chainfs: $(cat "$scratch/man.txt")"
grep -q 'chainfs.service' "$scratch/man.txt" || fail "man chainfs does not show the unit in FILES"
out=$(timeout 60 systemd-analyze verify /lib/systemd/system/chainfs.service 2>&1) ||
  fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify is not clean: $out"
out=$(timeout 60 bash --norc -c '. /usr/share/bash-completion/bash_completion
  __load_completion chainctl && __load_completion chainfs && complete -p chainctl chainfs
  COMP_LINE="chainctl ch" COMP_POINT=11 COMP_WORDS=(chainctl ch) COMP_CWORD=1
  _chainctl chainctl ch chainctl && echo "${COMPREPLY[*]}"')
[[ $out == $'complete -F _chainctl chainctl\ncomplete -F _chainfs chainfs\nchain check' ]] ||
  fail "completion: $out"
[[ -f /etc/default/chainfs ]] || fail "/etc/default/chainfs is missing"

out=$(timeout 60 chainfs --demo "$mnt") || fail "chainfs --demo: $out"
demo_dir=${out#chainfs: demo pool in }
pid=$(daemon_pid "chainfs --demo $mnt ")
[[ -n $pid ]] || fail "no chainfs daemon after chainfs --demo"
[[ $(timeout 30 cat "$mnt/.chainfs/version") == "chainfs $version" ]] || fail "MOUNT/.chainfs/version"
timeout 30 ls "$mnt/demo" >&2
timeout 30 cat "$mnt/demo/top.qcow2/backing" >&2 || fail "MOUNT/demo/top.qcow2/backing"
timeout 60 fusermount3 -u "$mnt" || fail "fusermount3 -u"
timeout 60 tail --pid="$pid" -f /dev/null || { kill -KILL "$pid"; fail "daemon $pid still running 60 s after the unmount"; }
! mounted || fail "still mounted after fusermount3 -u"
[[ ! -e $demo_dir ]] || fail "the demo pool $demo_dir was left behind"

step "the fstab line of chainfs(1), mounted by mount(8) through mount.fuse3"
mkdir -p "$scratch/pool" "$scratch/defs"
timeout 60 qemu-img create -q -f qcow2 "$scratch/pool/base.qcow2" 1M
timeout 60 qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$scratch/pool/top.qcow2"
printf "<pool type='dir'><name>p</name><target><path>%s</path></target></pool>\n" "$scratch/pool" \
  >"$scratch/defs/p.xml"
printf 'chainfs  %s  fuse.chainfs  pool_dir=%s,ro,allow_other,nofail  0  0\n' "$mnt" "$scratch/defs" \
  | tee "$scratch/fstab" >&2
timeout 60 mount -T "$scratch/fstab" "$mnt" || fail "mount -T FSTAB $mnt"
pid=$(daemon_pid "/usr/bin/chainfs chainfs $mnt -o ")
[[ -n $pid ]] || pid=$(daemon_pid "chainfs chainfs $mnt -o ")
[[ -n $pid ]] || fail "no daemon after mount -T"
[[ $(timeout 30 cat "$mnt/p/top.qcow2/backing") == base.qcow2 ]] || fail "MOUNT/p/top.qcow2/backing"
timeout 60 umount "$mnt" || fail "umount $mnt"
timeout 60 tail --pid="$pid" -f /dev/null || { kill -KILL "$pid"; fail "daemon $pid still running 60 s after umount"; }
! mounted || fail "still mounted after umount"

step "dpkg -r: every file but the conffiles goes"
timeout 300 dpkg -r chainfs
left=""
while IFS= read -r p; do
  grep -qxF "$p" <<<"$conffiles" && continue
  if ls -d "$p" >/dev/null 2>&1; then left+=" $p"; fi
done <"$files"
[[ -z $left ]] || fail "left behind after dpkg -r:$left"
step "dpkg -P: the conffiles go too"
timeout 300 dpkg -P chainfs
left=""
while IFS= read -r p; do
  if ls -d "$p" >/dev/null 2>&1; then left+=" $p"; fi
done <"$files"
[[ ! -e /etc/systemd/system/multi-user.target.wants/chainfs.service ]] || left+=" (the unit's enable link)"
[[ -z $left ]] || fail "left behind after dpkg -P:$left"
step "built, lintian-clean, installed, smoke-tested, removed and purged"
