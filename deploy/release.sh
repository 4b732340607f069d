#!/bin/sh
# Builds the release binaries: static CoreDNS with healthdns for linux/amd64, linux/arm64 and
# linux/arm (v7), stamped with VERSION, into DIR (default dist/), the Debian package of each
# (healthdns_0.2.0-1_amd64.deb, ...; deploy/deb.sh), and one SHA256SUMS over all.
#
#   deploy/release.sh v0.2.0 [DIR]
#
# coredns -version then prints CoreDNS-1.14.7+healthdns-v0.2.0. RELEASE_TARGETS narrows the
# build to some of the targets ("amd64", "arm64", "arm/7"): the test suite builds one, since
# three full builds take minutes on a busy machine.
set -eu

usage() { echo "usage: $0 VERSION [DIR]   (VERSION like v0.2.0)" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
version=$1
case $version in
v[0-9]*) ;;
*) usage ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
dist=${2:-$root/dist}
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)

# -trimpath keeps this machine's paths out of the binaries; -s -w drops the symbol tables
# (a third of the size), which panics' stack traces do not need.
ldflags="-s -w -X main.version=$version"
targets=${RELEASE_TARGETS:-amd64 arm64 arm/7}
for target in $targets; do
	case $target in
	amd64 | arm64 | arm/7) ;;
	*) echo "$0: unknown target '$target' in RELEASE_TARGETS; want amd64, arm64 or arm/7" >&2; exit 2 ;;
	esac
	arch=${target%/*}
	arm=
	name=coredns-healthdns-$version-linux-$arch
	if [ "$arch" != "$target" ]; then
		arm=${target#*/}
		name=${name}v$arm
	fi
	echo "building $name" >&2
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOARM=$arm \
		go build -trimpath -ldflags "$ldflags" -o "$dist/$name" ./build)
done

# Debian packages: one healthdns_DEBVERSION_ARCH.deb per linux binary built above (deploy/deb.sh).
debs=
for target in $targets; do
	case $target in
	amd64) debarch=amd64 binary=coredns-healthdns-$version-linux-amd64 ;;
	arm64) debarch=arm64 binary=coredns-healthdns-$version-linux-arm64 ;;
	arm/7) debarch=armhf binary=coredns-healthdns-$version-linux-armv7 ;;
	*) continue ;;
	esac
	echo "packaging $binary as a .deb" >&2
	deb=$(sh "$root/deploy/deb.sh" "$version" "$debarch" "$dist/$binary" "$dist")
	debs="$debs ${deb##*/}"
done

cd "$dist"
# $debs unquoted: a list of file names, which have no spaces.
sha256sum coredns-healthdns-"$version"-linux-* $debs >SHA256SUMS
cat SHA256SUMS
