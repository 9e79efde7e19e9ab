#!/bin/sh
# Install the Debian packages whose servers the tests start (redis-server, prometheus, chromium), only when one
# is missing: a machine that has them runs no apt at all. Called by `make test` (CI: .ci/run -> make test).
# Debian's packages try to start their system services on install; the tests never use those (they start their
# own processes on free loopback ports), so a policy-rc.d that forbids starting services is put in place for
# the install when the machine has none, and removed afterwards.
set -eu

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing test servers:$missing; install them as root: apt-get install$missing" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=1
fi
cleanup() { [ -z "$made_policy" ] || rm -f "$policy"; }
trap cleanup EXIT

echo "installing test servers:$missing"
apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
