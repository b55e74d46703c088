#!/bin/sh
# Installs what batchfs needs to build, run and test on Debian 12 (as root, or with sudo).
set -eu
pkgs="meson ninja-build pkg-config gcc libfuse3-dev fuse3 libcurl4-openssl-dev libcjson-dev
libsqlite3-dev libinih-dev libssl-dev libsystemd-dev python3-pytest python3-pytest-xdist rsync openssl clang-format vim-tiny jq
bsdutils clang ed"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "batchfs: installing:$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
