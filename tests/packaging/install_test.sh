# `cmake --install` puts exactly the programs, man pages, completion scripts,
# systemd unit and defaults file in place, and nothing from tests/.
# shellcheck source=tests/packaging/lib.sh
source "$(dirname "$0")/lib.sh"
need cmake
install_tree

want="/etc/default/chainfs
/usr/bin/chainctl
/usr/bin/chainfs
/usr/lib/systemd/system/chainfs.service
/usr/share/bash-completion/completions/chainctl
/usr/share/bash-completion/completions/chainfs
/usr/share/man/man1/chainctl.1
/usr/share/man/man1/chainfs.1"
check_equal "the installed files" "$want" "$(cd "$root" && find . -type f -o -type l | sed 's|^\.||' | LC_ALL=C sort)"

check "chainfs and chainctl are executable" \
  "$([[ -x $root/usr/bin/chainfs && -x $root/usr/bin/chainctl ]]; echo $?)"
modes=$(cd "$root" && stat -c '%a %n' etc/default/chainfs usr/share/man/man1/*.1 \
  usr/share/bash-completion/completions/* usr/lib/systemd/system/chainfs.service | awk '{print $1}' | sort -u)
check_equal "data files are mode 644" "644" "$modes"
check_equal "the installed man pages are the source's" "" \
  "$(cmp "$source_dir/man/chainfs.1" "$root/usr/share/man/man1/chainfs.1" 2>&1;
     cmp "$source_dir/man/chainctl.1" "$root/usr/share/man/man1/chainctl.1" 2>&1)"
version=$("$root/usr/bin/chainctl" --version)
check "the installed chainctl runs" "$([[ $version == "chainctl "* ]]; echo $?)" "$version"

# The unit names the binary and the defaults file of the prefix given at
# install time.
unit=$root/usr/lib/systemd/system/chainfs.service
check "ExecStart runs /usr/bin/chainfs in the foreground" \
  "$(grep -qx 'ExecStart=/usr/bin/chainfs -f $CHAINFS_OPTS ${CHAINFS_MOUNTPOINT}' "$unit"; echo $?)" "$(grep Exec "$unit")"
check "EnvironmentFile is /etc/default/chainfs" \
  "$(grep -qx 'EnvironmentFile=-/etc/default/chainfs' "$unit"; echo $?)"
other=$scratch/other
DESTDIR=$other cmake --install "$build_dir" --prefix /opt/chainfs >/dev/null
check "another prefix: ExecStart and EnvironmentFile follow it" \
  "$(grep -q '^ExecStart=/opt/chainfs/bin/chainfs ' "$other/opt/chainfs/lib/systemd/system/chainfs.service" &&
     grep -qx 'EnvironmentFile=-/opt/chainfs/etc/default/chainfs' "$other/opt/chainfs/lib/systemd/system/chainfs.service";
     echo $?)"

# What the defaults file sets is what the unit expects, and it is valid shell.
defaults=$(env -i bash -c "set -a; . '$root/etc/default/chainfs'; echo \"\$CHAINFS_MOUNTPOINT|\$CHAINFS_OPTS\"")
check_equal "the defaults file sets the mountpoint and no options" "/run/chainfs|" "$defaults"
finish
