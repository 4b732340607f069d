#!/bin/sh
# systemd-root.sh DIR: a minimal Debian of this host's release with systemd, in DIR, for
# deploy's TestDebianPackageUnderSystemd to boot with systemd-nspawn. Built from the host's own
# package sources by mmdebstrap, into a directory beside DIR, then renamed: an interrupted
# build leaves no half-made DIR. .ci/run calls it as root with the other installs.
set -eu
dir=${1:?usage: systemd-root.sh DIR}
. /etc/os-release
[ -d "$dir" ] && exit 0
mkdir -p "$(dirname "$dir")"
tmp=$(mktemp -d "$dir.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase --include=systemd,systemd-sysv,dbus "$VERSION_CODENAME" "$tmp"
chmod 0755 "$tmp"
mv "$tmp" "$dir"
trap - EXIT
