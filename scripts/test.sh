#!/usr/bin/env bash
# scripts/test.sh — the project's test command: `scripts/test.sh [cargo test args...]`.
#
# 1. installs the GraphiQL browser files into web/node_modules (scripts/web-assets.sh), which tests
#    of GET /graphql serve;
# 2. starts on loopback a private PostgreSQL, two Prosodys (plain, and STARTTLS with a throwaway
#    CA) plus a spare one the tests run themselves, an ejabberd, and through the plugins in
#    scripts/servers/ a dnsmasq (SRV records), an ngIRCd, an InspIRCd with Atheme, a Synapse and a
#    nostr-relay
#    (scripts/test-env.sh, sourced so they run for the whole test run and are stopped when this
#    script exits, pass or fail; it installs what is missing with apt and pip) and exports their
#    SWITCHBOARD_TEST_* variables (printed below);
# 3. runs `cargo test --all-targets "$@"` and exits with its status.
#    SWITCHBOARD_TEST_CPU_HOGS=N keeps N busy loops running meanwhile (e.g. 2 on a 2-core
#    machine), to check that no test depends on idle CPUs; each loop ends with this script.
# If a server does not come up, it stops here with that server's log.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

echo "==> web assets (GraphiQL)"
bash scripts/web-assets.sh
export SWITCHBOARD_WEB_ASSETS=${SWITCHBOARD_WEB_ASSETS:-$repo/web/node_modules}

echo "==> test servers (PostgreSQL, Prosody, ejabberd, dnsmasq, ngIRCd, InspIRCd + Atheme, Synapse, nostr-relay)"
# shellcheck source=scripts/test-env.sh
source "$repo/scripts/test-env.sh"
echo "SWITCHBOARD_TEST_DATABASE_URL=$SWITCHBOARD_TEST_DATABASE_URL"
echo "SWITCHBOARD_TEST_XMPP_SERVER=$SWITCHBOARD_TEST_XMPP_SERVER"
echo "SWITCHBOARD_TEST_XMPP_DOMAIN=$SWITCHBOARD_TEST_XMPP_DOMAIN"
echo "SWITCHBOARD_TEST_XMPP_TLS_SERVER=$SWITCHBOARD_TEST_XMPP_TLS_SERVER"
echo "SWITCHBOARD_TEST_XMPP_TLS_CA=$SWITCHBOARD_TEST_XMPP_TLS_CA"
echo "SWITCHBOARD_TEST_XMPP_DIRECT_TLS_SERVER=$SWITCHBOARD_TEST_XMPP_DIRECT_TLS_SERVER"
echo "SWITCHBOARD_TEST_XMPP_SRV_DOMAIN=$SWITCHBOARD_TEST_XMPP_SRV_DOMAIN"
echo "SWITCHBOARD_TEST_EJABBERD_SERVER=$SWITCHBOARD_TEST_EJABBERD_SERVER"
echo "SWITCHBOARD_TEST_XMPP_SPARE_SERVER=$SWITCHBOARD_TEST_XMPP_SPARE_SERVER"
for var in "${_sbt_exports[@]}"; do # the servers of the plugins in scripts/servers/
	echo "$var=${!var}"
done

hogs=${SWITCHBOARD_TEST_CPU_HOGS:-0}
if [[ $hogs -gt 0 ]]; then
	echo "==> $hogs busy loops keep the CPUs busy during the tests"
	me=$$
	for ((i = 0; i < hogs; i++)); do
		# Busy, and gone within a moment of this script's end, pass, fail or interrupt.
		(while kill -0 "$me" 2>/dev/null; do for ((j = 0; j < 200000; j++)); do :; done; done) &
	done
fi

echo "==> cargo test --all-targets $*"
# Not `exec`: this shell must live on so its EXIT trap stops the servers afterwards.
rc=0
cargo test --all-targets "$@" || rc=$?
exit "$rc"
