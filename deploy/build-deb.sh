#!/bin/sh
# make deb: gcrelay_<version>_<arch>.deb into OUT (default build/), built by
# dpkg-buildpackage from deploy/debian in a temporary copy of the tree, so
# the repository's top level stays as it is.
set -eu
cd "$(dirname "$0")/.."
out=${1:-build}
for tool in dpkg-buildpackage dh; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "make deb: $tool is missing: apt-get install dpkg-dev" \
		    "debhelper (or sh deploy/deps.sh)" >&2
		exit 1
	}
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(dpkg-parsechangelog -l deploy/debian/changelog -S Version)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gcrelay-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
src="$tmp/gcrelay-$version"
mkdir "$src"
cp -a Makefile README.md app clients handlers include deploy nginx "$src/"
cp -a deploy/debian "$src/debian"
(cd "$src" && dpkg-buildpackage --build=binary --no-sign >"$tmp/build.log" 2>&1) || {
	tail -n 60 "$tmp/build.log" >&2
	echo "make deb: dpkg-buildpackage failed (log above)" >&2
	exit 1
}
[ -z "${GCRELAY_DEB_LOG:-}" ] || cp "$tmp/build.log" "$GCRELAY_DEB_LOG"
for deb in "$tmp"/gcrelay_"$version"_*.deb; do
	cp "$deb" "$out/"
	echo "$out/${deb##*/}"
done
