#!/usr/bin/env bash
# Installs what chainfs needs to build and test, from Debian 12's packages.
# Installs only what is missing; needs root (or sudo) when something is.
set -euo pipefail

packages=(g++ cmake make pkg-config libfmt-dev libpugixml-dev libboost-dev libfuse3-dev fuse3
          libgtest-dev qemu-utils libvirt0 libxml2-utils jq groff-base man-db util-linux
          e2fsprogs procps zlib1g-dev libzstd-dev)
# Guest tools the data-view tests run on VOL/data (fdisk/sfdisk, file).
packages+=(fdisk file)
# qemu-storage-daemon (in-use tests hold an image open with it).
packages+=(qemu-system-common)
# A real libvirtd and QEMU (TCG) for the domain tests, which start their own
# daemons as plain processes (tests/util/libvirt_daemon.h).
packages+=(libvirt-daemon-system libvirt-clients qemu-system-x86)
# Packaging (tools/package.sh, tests/packaging, .ci/run): the Debian build
# tools and lintian, systemd-analyze for the unit, bash-completion's loader.
packages+=(dpkg-dev debhelper lintian systemd bash-completion git)
# Scripting and pictures (issue 15): Prometheus' own text-format parser for
# .chainfs/metrics, Graphviz's dot for `chainctl tree --dot`.
packages+=(python3-prometheus-client graphviz)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "deps: apt-get update" >&2
$sudo apt-get update -qq
echo "deps: apt-get install (${#missing[@]} packages and what they need; can take minutes)" >&2
# Packages must not start their services (libvirtd, virtlogd): the tests
# start and end their own. policy-rc.d is Debian's switch for that.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  made_policy=1
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
echo "deps: installed" >&2
