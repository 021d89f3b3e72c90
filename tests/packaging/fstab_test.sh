# fstab lines mounted by mount(8) from an fstab file (mount -T), through
# fuse3's mount.fuse, which runs `chainfs chainfs MOUNTPOINT -o OPTIONS`;
# umount ends the daemon. mount(8) runs its helpers with a PATH of its own,
# so these lines name the installed binary in the type-fuse form
# (PROGRAM#SOURCE); the documented form (type fuse.chainfs, chainfs from
# /usr/bin) is mounted the same way by .ci/run once the package is
# installed, and through mount.fuse3 by MountTest.FstabFormThroughMountFuse3Works.
# shellcheck source=tests/packaging/lib.sh
source "$(dirname "$0")/lib.sh"
need cmake qemu-img mount umount fusermount3 timeout /sbin/mount.fuse3
if [[ $(id -u) != 0 ]]; then
  echo "FAIL: mount(8) with an fstab line needs root (tools/test.sh runs as root)"
  exit 1
fi
install_tree
chainfs=$root/usr/bin/chainfs
mnt=$scratch/mnt
pool=$scratch/pool
defs=$scratch/defs
mkdir -p "$mnt" "$pool" "$defs"
qemu-img create -q -f qcow2 "$pool/base.qcow2" 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$pool/top.qcow2"
printf "<pool type='dir'><name>p</name><target><path>%s</path></target></pool>\n" "$pool" >"$defs/p.xml"

mounted() { grep -qs " $mnt fuse.chainfs " /proc/self/mounts; }
# Prints the PIDs of the installed chainfs serving $mnt, started by
# mount.fuse3 (the daemon and its wedge guardian).
daemon_pids() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    tr '\0' ' ' 2>/dev/null <"$f" | grep -qF "$chainfs chainfs $mnt " && echo "$pid"
  done
  return 0
}
cleanup() {
  if mounted; then fusermount3 -uz "$mnt"; fi
  local pid
  for pid in $(daemon_pids); do kill -TERM "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

# One fstab line per form: the documented one, and one with the options an
# admin adds to an fstab line (defaults, nofail, _netdev), which mount.fuse3
# or mount(8) consume.
n=0
for options in "pool_dir=$defs,ro,allow_other" "defaults,nofail,_netdev,pool_dir=$defs,ro"; do
  n=$((n + 1))
  printf '%s#chainfs  %s  fuse  %s  0  0\n' "$chainfs" "$mnt" "$options" >"$scratch/fstab"
  out=$(PATH=$root/usr/bin:$PATH timeout 60 mount -T "$scratch/fstab" "$mnt" 2>&1) && rc=0 || rc=$?
  check "line $n ($options): mount -T FSTAB MOUNTPOINT exits 0" "$rc" "$out"
  for _ in $(seq 200); do [[ -e $mnt/.chainfs/version ]] && break; sleep 0.05; done
  check_equal "line $n: the pool's chain shows" "base.qcow2" "$(timeout 10 cat "$mnt/p/top.qcow2/backing" 2>&1)"
  check "line $n: ro is the daemon's (a change is refused with EROFS)" \
    "$(out=$(timeout 10 mkdir "$mnt/p/newdir" 2>&1); [[ $out == *"Read-only file system"* ]]; echo $?)"
  pids=$(daemon_pids)
  check "line $n: the daemon runs as chainfs chainfs MOUNTPOINT -o ..." "$([[ -n $pids ]]; echo $?)"
  out=$(timeout 30 umount "$mnt" 2>&1) && rc=0 || rc=$?
  check "line $n: umount exits 0" "$rc" "$out"
  gone=1
  for _ in $(seq 300); do [[ -z $(daemon_pids) ]] && { gone=0; break; }; sleep 0.05; done
  check "line $n: the daemon exits after umount" "$gone" "$(daemon_pids)"
  check "line $n: nothing is left mounted" "$(! mounted; echo $?)"
done
finish
