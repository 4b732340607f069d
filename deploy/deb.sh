#!/bin/sh
# Builds the Debian package of a release binary, healthdns_DEBVERSION_ARCH.deb, into OUTDIR, and
# prints its path. deploy/release.sh runs it for each linux binary it builds.
#
#   deploy/deb.sh v0.2.0 amd64 dist/coredns-healthdns-v0.2.0-linux-amd64 dist [dist/healthdnsctl-v0.2.0-linux-amd64]
#
# CTL, when given, is healthdnsctl's binary, packaged as /usr/bin/healthdnsctl with its manual.
# ARCH is Debian's name: amd64, arm64 or armhf (the linux/arm v7 binary). The tag v0.2.0 becomes
# the version 0.2.0-1, and a pre-release v0.3.0-rc1 becomes 0.3.0~rc1-1, which apt orders before
# 0.3.0-1. The package holds the binary as /usr/bin/coredns-healthdns, the systemd unit of
# deploy/systemd with that ExecStart, and a default Corefile (a conffile) that answers and probes
# on loopback only. dpkg-deb builds it, with no debhelper: the binary is built already.
set -eu

usage() { echo "usage: $0 VERSION ARCH BINARY OUTDIR [CTL]   (VERSION like v0.2.0; ARCH amd64, arm64 or armhf)" >&2; exit 2; }
[ $# -eq 4 ] || [ $# -eq 5 ] || usage
version=$1 arch=$2 binary=$3 out=$4 ctl=${5:-}
case $version in
v[0-9]*) ;;
*) usage ;;
esac
case $arch in
amd64 | arm64 | armhf) ;;
*) echo "$0: unknown ARCH '$arch'; want amd64, arm64 or armhf" >&2; exit 2 ;;
esac
upstream=$(echo "${version#v}" | tr - '~')
case $upstream in
*[!0-9A-Za-z.+~]*) echo "$0: VERSION '$version' has characters a Debian version cannot hold" >&2; exit 2 ;;
esac
debversion=$upstream-1
[ -f "$binary" ] || { echo "$0: no binary at $binary" >&2; exit 1; }
[ -z "$ctl" ] || [ -f "$ctl" ] || { echo "$0: no healthdnsctl at $ctl" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
src=$here/debian
maintainer=${DEBFULLNAME:-healthdns maintainers}" <"${DEBEMAIL:-healthdns@users.noreply.github.com}">"
# The changelog's date and the files' times are the commit's (or SOURCE_DATE_EPOCH's), so that two
# builds of one tag give the same package.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

umask 022
tree=$(mktemp -d)
chmod 0755 "$tree"
trap 'rm -rf "$tree"' EXIT
doc=$tree/usr/share/doc/healthdns
install -D -m 0755 "$binary" "$tree/usr/bin/coredns-healthdns"
install -d "$tree/lib/systemd/system" "$tree/usr/share/man/man8" "$doc" "$tree/DEBIAN"
# The packaged unit is deploy/systemd's, hardening and capabilities unchanged, with the path
# the package installs the binary at; its header's manual install steps do not apply here.
sed -e 's|^ExecStart=/usr/local/bin/coredns |ExecStart=/usr/bin/coredns-healthdns |' \
	-e '/^# Install:$/,/^#$/d' \
	"$here/systemd/healthdns.service" >"$tree/lib/systemd/system/healthdns.service"
grep -q '^ExecStart=/usr/bin/coredns-healthdns -conf /etc/coredns/Corefile$' "$tree/lib/systemd/system/healthdns.service" ||
	{ echo "$0: deploy/systemd/healthdns.service's ExecStart is not /usr/local/bin/coredns -conf /etc/coredns/Corefile any more: update the sed above" >&2; exit 1; }
chmod 0644 "$tree/lib/systemd/system/healthdns.service"
install -D -m 0644 "$src/Corefile" "$tree/etc/coredns/Corefile"
gzip -9n <"$src/coredns-healthdns.8" >"$tree/usr/share/man/man8/coredns-healthdns.8.gz"
if [ -n "$ctl" ]; then
	install -D -m 0755 "$ctl" "$tree/usr/bin/healthdnsctl"
	install -d "$tree/usr/share/man/man1"
	gzip -9n <"$src/healthdnsctl.1" >"$tree/usr/share/man/man1/healthdnsctl.1.gz"
	chmod 0644 "$tree/usr/share/man/man1/healthdnsctl.1.gz"
fi
install -m 0644 "$src/copyright" "$src/README.Debian" "$doc/"
install -D -m 0644 "$src/lintian-overrides" "$tree/usr/share/lintian/overrides/healthdns"
{
	printf 'healthdns (%s) unstable; urgency=medium\n\n' "$debversion"
	printf '  * Release %s: the tag %s of\n    https://github.com/healthdns/healthdns\n\n' "$version" "$version"
	printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$epoch")"
} | gzip -9n >"$doc/changelog.Debian.gz"
chmod 0644 "$tree/usr/share/man/man8/coredns-healthdns.8.gz" "$doc/changelog.Debian.gz"

install -m 0755 "$src/postinst" "$src/prerm" "$src/postrm" "$tree/DEBIAN/"
echo /etc/coredns/Corefile >"$tree/DEBIAN/conffiles"
(cd "$tree" && find usr lib -type f -exec md5sum {} + | LC_ALL=C sort -k2) >"$tree/DEBIAN/md5sums"
cat >"$tree/DEBIAN/control" <<CONTROL
Package: healthdns
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$tree" | cut -f1)
Section: net
Priority: optional
Homepage: https://github.com/healthdns/healthdns
Description: DNS answers for the backends that pass a health check
 CoreDNS with the healthdns plugin: for each zone it probes a pool of
 backends (ICMP, TCP, HTTP, HTTPS or a script) and answers queries with
 the addresses of those that pass, so that clients stop reaching a backend
 once it fails, without a floating IP address.
 .
 The package runs it as healthdns.service, as a transient user with only
 the capabilities to bind port 53 and to send ICMP probes. The default
 /etc/coredns/Corefile answers and probes on loopback only.
CONTROL
chmod 0644 "$tree/DEBIAN/control" "$tree/DEBIAN/conffiles" "$tree/DEBIAN/md5sums"
deb=$out/healthdns_${debversion}_$arch.deb
SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
echo "$deb"
