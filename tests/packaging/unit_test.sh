# chainfs.service: `systemd-analyze verify` is clean, and its commands, run
# as systemd runs them with the installed defaults file, mount a pool, reload
# it on SIGHUP (ExecReload) and unmount on SIGTERM (the stop), exiting 0.
# shellcheck source=tests/packaging/lib.sh
source "$(dirname "$0")/lib.sh"
need cmake systemd-analyze man fusermount3 qemu-img timeout
install_tree
unit=$root/usr/lib/systemd/system/chainfs.service

# systemd-analyze checks that every command and man page exists: point the
# binary at the installed copy and man at the installed pages. Nothing else
# in the unit is changed.
mkdir -p "$scratch/verify"
sed "s|=/usr/bin/chainfs |=$root/usr/bin/chainfs |" "$unit" >"$scratch/verify/chainfs.service"
out=$(cd "$scratch/verify" && MANPATH=$root/usr/share/man: timeout 60 systemd-analyze verify ./chainfs.service 2>&1) && rc=0 || rc=$?
check "systemd-analyze verify exits 0 and prints nothing" "$([[ $rc == 0 && -z $out ]]; echo $?)" "exit $rc: $out"
for directive in 'Type=simple' 'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' \
  'KillMode=mixed' 'WantedBy=multi-user.target' 'Environment=CHAINFS_MOUNTPOINT=/run/chainfs'; do
  check "the unit has $directive" "$(grep -qxF "$directive" "$unit"; echo $?)"
done

# The unit's own lines, expanded with the defaults file's variables (the
# mountpoint and options changed to a temporary pool, as an admin would).
exec_line() { sed -n "s/^$1=//p" "$unit"; }
pool=$scratch/pool
defs=$scratch/defs
mkdir -p "$pool" "$defs"
qemu-img create -q -f qcow2 "$pool/base.qcow2" 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$pool/top.qcow2"
printf "<pool type='dir'><name>p</name><target><path>%s</path></target></pool>\n" "$pool" >"$defs/p.xml"
env_file=$scratch/default
sed -e "s|^CHAINFS_MOUNTPOINT=.*|CHAINFS_MOUNTPOINT=$scratch/run/chainfs|" \
  -e "s|^CHAINFS_OPTS=.*|CHAINFS_OPTS=\"--pool-dir $defs -o ro\"|" "$root/etc/default/chainfs" >"$env_file"
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
set -f  # systemd splits $CHAINFS_OPTS into words but does not glob
# Prints the command of the unit's line $1 (a leading '-', "failure is
# ignored", dropped), the binary pointed at the installed copy.
unit_command() { exec_line "$1" | sed -e 's|^-||' -e "s|^/usr/bin/chainfs |$root/usr/bin/chainfs |"; }
run_unit_line() { eval "$(unit_command "$1")"; }
daemon=""
cleanup_mount() {
  if [[ -n $daemon ]] && kill -0 "$daemon" 2>/dev/null; then kill -TERM "$daemon"; sleep 1; kill -KILL "$daemon" 2>/dev/null || true; fi
  if grep -qs " $CHAINFS_MOUNTPOINT fuse.chainfs " /proc/self/mounts; then fusermount3 -uz "$CHAINFS_MOUNTPOINT"; fi
  rm -rf "$scratch"
}
trap cleanup_mount EXIT

run_unit_line ExecStartPre
check "ExecStartPre makes the mountpoint" "$([[ -d $CHAINFS_MOUNTPOINT ]]; echo $?)"
(eval "exec $(unit_command ExecStart)") >"$scratch/daemon.log" 2>&1 &
daemon=$!
mounted() { grep -qs " $CHAINFS_MOUNTPOINT fuse.chainfs " /proc/self/mounts; }
for _ in $(seq 200); do mounted && break; sleep 0.05; done
check "ExecStart mounts and stays in the foreground" "$(mounted && kill -0 "$daemon"; echo $?)" "$(cat "$scratch/daemon.log")"
check_equal "the pool's chain shows" "base.qcow2" "$(timeout 10 cat "$CHAINFS_MOUNTPOINT/p/top.qcow2/backing" 2>&1)"

# ExecReload: a pool defined since the start shows after SIGHUP.
mkdir -p "$scratch/pool2"
printf "<pool type='dir'><name>q</name><target><path>%s</path></target></pool>\n" "$scratch/pool2" >"$defs/q.xml"
MAINPID=$daemon run_unit_line ExecReload
for _ in $(seq 100); do [[ -d $CHAINFS_MOUNTPOINT/q ]] && break; sleep 0.05; done
check "ExecReload (SIGHUP) rereads the pool definitions" "$([[ -d $CHAINFS_MOUNTPOINT/q ]]; echo $?)" "$(ls "$CHAINFS_MOUNTPOINT")"

# Stop: KillMode=mixed sends SIGTERM to the daemon; it unmounts and exits 0.
kill -TERM "$daemon"
rc=0
timeout 30 tail --pid="$daemon" -f /dev/null || rc=$?
wait "$daemon" && status=0 || status=$?
check "after SIGTERM the daemon exits 0" "$([[ $rc == 0 && $status == 0 ]]; echo $?)" "wait: $rc, exit status $status; $(cat "$scratch/daemon.log")"
check "after SIGTERM nothing is mounted" "$(! mounted; echo $?)"
daemon=""
out=$(run_unit_line ExecStopPost 2>&1) && rc=0 || rc=$?
check "ExecStopPost on a clean stop is quiet (its failure is ignored: '-')" \
  "$([[ -z $out ]] && exec_line ExecStopPost | grep -q '^-'; echo $?)" "$out"
finish
