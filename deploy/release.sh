#!/bin/sh
# Builds the release binaries: static CoreDNS with healthdns for linux/amd64, linux/arm64 and
# linux/arm (v7), and zips of it for windows/amd64 and windows/arm64, stamped with VERSION,
# into DIR (default dist/), with their SHA256SUMS.
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

# Windows: coredns-healthdns-VERSION-windows-ARCH.zip, the .exe and the README (whose Windows
# section says how to run it as a service). WINDOWS_TARGETS narrows them ("amd64", "arm64");
# set but empty, none are built (the test suite's TestRelease builds none: TestWindowsWine
# builds the .exe itself).
windows_targets=${WINDOWS_TARGETS-amd64 arm64}
for arch in $windows_targets; do
	case $arch in
	amd64 | arm64) ;;
	*) echo "$0: unknown target '$arch' in WINDOWS_TARGETS; want amd64 or arm64" >&2; exit 2 ;;
	esac
	name=coredns-healthdns-$version-windows-$arch
	echo "building $name" >&2
	(cd "$root" && CGO_ENABLED=0 GOOS=windows GOARCH=$arch \
		go build -trimpath -ldflags "$ldflags" -o "$dist/$name.exe" ./build)
	rm -f "$dist/$name.zip"
	(cd "$dist" && zip -q -j "$name.zip" "$name.exe" "$root/README.md" && rm "$name.exe")
done

cd "$dist"
released=
for f in coredns-healthdns-"$version"-linux-* coredns-healthdns-"$version"-windows-*.zip; do
	[ ! -e "$f" ] || released="$released $f" # a pattern that matched nothing stays as it is
done
# shellcheck disable=SC2086 # the names have no spaces: split on purpose
sha256sum $released >SHA256SUMS
cat SHA256SUMS
