#!/bin/sh
# Install the Debian packages gcrelay needs to build, run and test, when
# missing.  Used by `make run`, `make check` and `make bench` (the bench's
# canned upstreams need libnginx-mod-http-echo for echo_sleep; make deb and
# its test need dpkg-dev, debhelper, lintian and devscripts'
# hardening-check; make compile_commands.json needs bear).  Needs root (or
# sudo) only when something is missing.
set -eu

pkgs="build-essential pkg-config libfcgi-dev libcurl4-openssl-dev
libjansson-dev libssl-dev libconfig-dev libsqlite3-dev sqlite3
libpq-dev postgresql
libcmocka-dev nginx-light openssl ca-certificates python3 valgrind
clang libclang-rt-14-dev clang-format wrk libnginx-mod-http-echo
mandoc faketime dpkg-dev debhelper fakeroot lintian devscripts bear"
# promtool (check metrics, check/test rules) comes with the server package;
# the server itself must not run here (see below).  systemd-analyze
# verifies the unit file.
pkgs="$pkgs prometheus systemd"

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
	# Installing prometheus would start a server on :9090 and enable it
	# at boot: deny service starts while apt runs (policy-rc.d), unless
	# the machine already has its own policy.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
		printf '#!/bin/sh\nexit 101\n' |
		    $SUDO tee /usr/sbin/policy-rc.d >/dev/null
		$SUDO chmod 755 /usr/sbin/policy-rc.d
	fi
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
	    --no-install-recommends $missing
	case " $missing " in
	*" prometheus "*)
		# Only the one we just installed: not an operator's server.
		if [ -d /run/systemd/system ]; then
			$SUDO systemctl disable --now prometheus.service
		fi
		;;
	esac
fi

# The Standard Webhooks reference signer, for the interoperability test.
if [ ! -d tests/node_modules/standardwebhooks ]; then
	echo "deps: installing the standardwebhooks npm package into tests/"
	if ! (cd tests && npm install --silent --no-audit --no-fund \
	    --no-package-lock standardwebhooks >/dev/null); then
		echo "deps: npm install standardwebhooks failed: the" \
		    "interoperability test needs it" >&2
		exit 1
	fi
fi

# The OpenAPI linter and the contract test's JSON Schema validator and
# YAML parser (tests/ship/test_openapi.py), pinned.  Like the above, a
# failed install fails: the contract test must never be skipped.
openapi_pkgs="@redocly/cli@2.77.0 ajv@8.20.0 ajv-formats@3.0.1 yaml@2.9.1"
for spec in $openapi_pkgs; do
	name=${spec%@*}
	want=${spec##*@}
	have=$(node -p "require('./tests/node_modules/$name/package.json').version" \
	    2>/dev/null || true)
	if [ "$have" != "$want" ]; then
		echo "deps: installing the OpenAPI test tools into tests/"
		(cd tests && npm install --silent --no-audit --no-fund \
		    --no-package-lock --no-save $openapi_pkgs >/dev/null) || {
			echo "deps: npm install $openapi_pkgs failed" >&2
			exit 1
		}
		break
	fi
done
