#!/bin/sh
# Builds the container image from scratch, offline, into an OCI archive named
# localhost/healthdns:VERSION: a static coredns built on the host (deploy/release.sh's), the
# host's CA certificates, the default Corefile, and the non-root user.
#
#   deploy/image/build.sh VERSION BINARY ARCHIVE [PLATFORM]
#
# PLATFORM is the binary's, linux/amd64 by default (linux/arm64, linux/arm/v7). Building needs
# buildah, or podman (Debian's packages; tried as root only); nothing is pulled. The image is
# built under a name of the build's own and removed from the local store once in the archive,
# so an image named localhost/healthdns:VERSION already there is left alone: load the archive
# with `podman load -i ARCHIVE`.
# SOURCE_DATE_EPOCH, when set, is the image's creation time, so that rebuilding a tag gives the
# same archive, byte for byte. CA_CERTS names another certificate bundle than Debian's.
set -eu

usage() { echo "usage: $0 VERSION BINARY ARCHIVE [PLATFORM]   (VERSION like v0.2.0)" >&2; exit 2; }
[ $# -ge 3 ] && [ $# -le 4 ] || usage
version=$1 binary=$2 archive=$3 platform=${4:-linux/amd64}
case $version in
v[0-9]*) ;;
*) usage ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
certs=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}

if command -v buildah >/dev/null; then
	tool=buildah
elif command -v podman >/dev/null; then
	tool=podman
else
	echo "$0: neither buildah nor podman found (apt-get install buildah)" >&2
	exit 1
fi
[ -f "$binary" ] || { echo "$0: no binary at $binary" >&2; exit 1; }
[ -f "$certs" ] || { echo "$0: no CA certificates at $certs (apt-get install ca-certificates, or set CA_CERTS)" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here/Containerfile" "$here/Corefile" "$here/passwd" "$here/group" "$context/"
cp "$certs" "$context/ca-certificates.crt"
cp "$binary" "$context/coredns"
chmod 0755 "$context/coredns"
chmod 0644 "$context/Corefile" "$context/passwd" "$context/group" "$context/ca-certificates.crt"

# The build's own name: with SOURCE_DATE_EPOCH two builds of one tag make one image, and
# removing it by its id would pull it from under a build running beside this one; removing a
# name only removes the image with its last name.
build=localhost/healthdns-build:$$-$(basename "$context")
set -- --pull=never --layers=false --platform "$platform" --build-arg "VERSION=$version" --tag "$build"
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	set -- "$@" --timestamp "$SOURCE_DATE_EPOCH"
fi
status=0
$tool build "$@" -f "$context/Containerfile" "$context" >&2 || status=$?
[ "$status" != 0 ] || $tool push "$build" "oci:$context/layout:localhost/healthdns:$version" >&2 || status=$?
$tool rmi "$build" >/dev/null 2>&1 || true
[ "$status" = 0 ] || exit "$status"
# An oci-archive: push would stamp the archive's entries with the time of the push: packed in
# name order with the image's own time instead, a rebuilt tag has the same checksum.
set -- --sort=name --owner=0 --group=0 --numeric-owner --format=posix --pax-option=delete=atime,delete=ctime
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	set -- "$@" --mtime="@$SOURCE_DATE_EPOCH"
fi
tar -C "$context/layout" "$@" -cf "$archive.tmp" blobs index.json oci-layout
mv "$archive.tmp" "$archive"
