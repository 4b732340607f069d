#!/bin/sh
# Builds the release binaries: static CoreDNS with healthdns for linux/amd64, linux/arm64 and
# linux/arm (v7), and zips of it for windows/amd64 and windows/arm64, stamped with VERSION,
# healthdnsctl for each (beside each linux binary as healthdnsctl-VERSION-linux-ARCH, in each zip),
# into DIR (default dist/), the Debian package of each linux binary (healthdns_0.2.0-1_amd64.deb,
# ...; deploy/deb.sh), and, where buildah or podman is installed, the container image of each
# linux binary as an OCI archive; one SHA256SUMS over all.
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
	# healthdnsctl, the API's command line, beside it: healthdnsctl-VERSION-linux-ARCH.
	ctl=healthdnsctl-${name#coredns-healthdns-}
	echo "building $ctl" >&2
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOARM=$arm \
		go build -trimpath -ldflags "-s -w" -o "$dist/$ctl" ./cmd/healthdnsctl)
done

# Windows: coredns-healthdns-VERSION-windows-ARCH.zip, the .exe and the README (whose Windows
# section says how to run it as a service). WINDOWS_TARGETS narrows them ("amd64", "arm64");
# set but empty, none are built (the test suite's TestRelease builds none: TestWindowsWine
# builds the .exe itself).
windows_targets=${WINDOWS_TARGETS-amd64 arm64}
if [ -n "$windows_targets" ] && ! command -v zip >/dev/null; then
	echo "$0: the windows zips need zip (apt-get install zip), or WINDOWS_TARGETS= for none" >&2
	exit 2
fi
for arch in $windows_targets; do
	case $arch in
	amd64 | arm64) ;;
	*) echo "$0: unknown target '$arch' in WINDOWS_TARGETS; want amd64 or arm64" >&2; exit 2 ;;
	esac
	name=coredns-healthdns-$version-windows-$arch
	echo "building $name" >&2
	(cd "$root" && CGO_ENABLED=0 GOOS=windows GOARCH=$arch \
		go build -trimpath -ldflags "$ldflags" -o "$dist/$name.exe" ./build &&
		CGO_ENABLED=0 GOOS=windows GOARCH=$arch \
			go build -trimpath -ldflags "-s -w" -o "$dist/healthdnsctl.exe" ./cmd/healthdnsctl)
	rm -f "$dist/$name.zip"
	(cd "$dist" && zip -q -j "$name.zip" "$name.exe" healthdnsctl.exe "$root/README.md" && rm "$name.exe" healthdnsctl.exe)
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
	deb=$(sh "$root/deploy/deb.sh" "$version" "$debarch" "$dist/$binary" "$dist" "$dist/healthdnsctl-${binary#coredns-healthdns-}")
	debs="$debs ${deb##*/}"
done

cd "$dist"
released=
for f in coredns-healthdns-"$version"-linux-* healthdnsctl-"$version"-linux-* coredns-healthdns-"$version"-windows-*.zip; do
	[ ! -e "$f" ] || released="$released $f" # a pattern that matched nothing stays as it is
done
# shellcheck disable=SC2086 # the names have no spaces: split on purpose
sha256sum $released $debs >SHA256SUMS

# --- Container image (deploy/image) ---------------------------------------------------------
# Each binary above in an image from scratch, as an OCI archive named localhost/healthdns:VERSION:
# healthdns-image-VERSION-linux-ARCH.oci.tar, added to SHA256SUMS. Only where buildah or podman
# is installed (Debian's packages); without them the release has no image, and says so. Nothing
# is pulled. The image's creation time is the last commit's, so that a tag rebuilds the same.
if command -v buildah >/dev/null || command -v podman >/dev/null; then
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || true)}
	export SOURCE_DATE_EPOCH
	images=
	for target in $targets; do
		suffix=${target%/*}
		platform=linux/$suffix
		if [ "$suffix" != "$target" ]; then
			platform=$platform/v${target#*/}
			suffix=${suffix}v${target#*/}
		fi
		image=healthdns-image-$version-linux-$suffix.oci.tar
		echo "building $image" >&2
		"$root/deploy/image/build.sh" "$version" "coredns-healthdns-$version-linux-$suffix" "$image" "$platform"
		images="$images $image"
	done
	sha256sum $images >>SHA256SUMS # split on purpose: the names hold no blanks
else
	echo "$0: neither buildah nor podman found: no container image (apt-get install buildah)" >&2
fi
# --- end of container image -----------------------------------------------------------------

cat SHA256SUMS
