#!/bin/sh
# Install the Debian packages gcrelay needs to build, run and test, when
# missing.  Used by `make run`, `make check` and `make bench` (the bench's
# canned upstreams need libnginx-mod-http-echo for echo_sleep).  Needs root (or sudo) only
# when something is missing.
set -eu

pkgs="build-essential pkg-config libfcgi-dev libcurl4-openssl-dev
libjansson-dev libssl-dev libconfig-dev libsqlite3-dev sqlite3
libpq-dev postgresql
libcmocka-dev nginx-light openssl ca-certificates python3 valgrind
clang libclang-rt-14-dev clang-format wrk libnginx-mod-http-echo"

missing=""
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
	    grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

# Node may come from elsewhere (nodesource bundles npm): check commands.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
	echo "deps: installing:$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
	    --no-install-recommends $missing
fi

# The Standard Webhooks reference signer, for the interoperability test.
if [ ! -d tests/node_modules/standardwebhooks ]; then
	echo "deps: installing the standardwebhooks npm package into tests/"
	(cd tests && npm install --silent --no-audit --no-fund \
	    --no-package-lock standardwebhooks >/dev/null) ||
	    echo "deps: warning: npm install standardwebhooks failed"
fi
