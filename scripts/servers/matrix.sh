# scripts/servers/matrix.sh — test-env plugin: a throwaway Synapse (Matrix homeserver) on loopback.
# Sourced by scripts/test-env.sh, which calls _sbt_matrix_missing_packages, _sbt_matrix_start
# and, for --check, _sbt_matrix_check.
#
# Synapse comes from PyPI (pinned below) in a venv under
# ${SWITCHBOARD_TEST_CACHE:-/var/cache/switchboard-test}/synapse-venv, installed only when missing
# or when the pin changed (≈ 25–35 s; pip's output goes to pip.log beside it). The server runs out
# of $_sbt_tmp/matrix with a homeserver.yaml written here, not --generate-config (which binds ::1,
# enables federation and trusts an outside key server): client listeners on 127.0.0.1, one plain
# HTTP and one HTTPS (certificate for "localhost" from a throwaway CA made here), sqlite, no federation, no open registration (users are made with the shared secret),
# rate limits off, bcrypt_rounds 4 (logins ≈ 0.1 s instead of 0.35 s), presence on.
#
# Exported:
#   SWITCHBOARD_TEST_MATRIX_SERVER         http://127.0.0.1:PORT   (homeserver base URL)
#   SWITCHBOARD_TEST_MATRIX_DOMAIN         localhost               (server_name: @ann:localhost)
#   SWITCHBOARD_TEST_MATRIX_SHARED_SECRET  the registration shared secret of this run, with which
#                                          tests register throwaway users of their own
#                                          (/_synapse/admin/v1/register, HMAC-SHA1)
#   SWITCHBOARD_TEST_MATRIX_TLS_SERVER     https://localhost:PORT  (the same server over HTTPS,
#                                          certificate for "localhost" from a throwaway CA)
#   SWITCHBOARD_TEST_MATRIX_TLS_CA         PEM file of that CA
#
# Users, password "<name>-pw-7Q" each, display name the capitalised name ("Ann", "Alice"):
#   ann, ben, cid, dot, eve        for the connector tests (tests/matrix.rs)
#   alice, bob, carol, dave        for the API tests
# Direct-message rooms, each made by the first user of the pair with is_direct, joined by the
# second, and listed in the m.direct account data of both (that is the Matrix "contact list"):
#   ann–ben, ann–cid, dot–eve, alice–bob, alice–carol, alice–dave
# So: ann has ben and cid; ben has ann; cid has ann; dot has eve; eve has dot; alice has bob,
# carol and dave; bob, carol and dave each have alice. `--check` logs in as every user and asserts
# exactly these m.direct contacts and display names.

_sbt_matrix_synapse_version=1.163.0

_sbt_matrix_venv() {
	echo "${SWITCHBOARD_TEST_CACHE:-/var/cache/switchboard-test}/synapse-venv"
}

_sbt_matrix_missing_packages() {
	command -v openssl >/dev/null || echo openssl
	command -v python3 >/dev/null || { echo python3 python3-venv; return 0; }
	# Debian splits ensurepip (needed by `python3 -m venv`) into python3-venv.
	python3 -c 'import ensurepip' 2>/dev/null || echo python3-venv
	command -v flock >/dev/null || echo util-linux
}

# Creates the venv with the pinned Synapse unless it is already there. A lock keeps two test
# runs from building it at once; a half-built venv has no stamp and is rebuilt.
_sbt_matrix_install() {
	local venv stamp want=$_sbt_matrix_synapse_version started=$EPOCHREALTIME
	venv=$(_sbt_matrix_venv)
	stamp=$venv/.switchboard-synapse-version
	[[ $(cat "$stamp" 2>/dev/null) == "$want" ]] && return 0
	mkdir -p "$(dirname "$venv")"
	exec {_sbt_matrix_lock}>"$venv.lock"
	flock "$_sbt_matrix_lock"
	if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
		_sbt_log "installing matrix-synapse $want from PyPI into $venv"
		rm -rf "$venv"
		local log=$venv.pip.log
		if ! { python3 -m venv "$venv" &&
			"$venv/bin/pip" install --disable-pip-version-check --no-input -q \
				"matrix-synapse==$want"; } >"$log" 2>&1; then
			exec {_sbt_matrix_lock}>&-
			_sbt_tail "$log" 40
			_sbt_die "could not install matrix-synapse $want (full log: $log)"
		fi
		echo "$want" >"$stamp"
		_sbt_log "installed matrix-synapse $want ($(_sbt_since "$started"))"
	fi
	exec {_sbt_matrix_lock}>&-
}

_sbt_matrix_start() {
	_sbt_matrix_install
	local venv dir=$_sbt_tmp/matrix port tls_port secret started=$EPOCHREALTIME
	venv=$(_sbt_matrix_venv)
	read -r port tls_port <<<"$(_sbt_free_ports 2)" || _sbt_die "could not find free ports for Synapse"
	[[ -n $tls_port ]] || _sbt_die "could not find free ports for Synapse"
	# A CA of its own for the HTTPS listener: the tests hold the connector's certificate checks
	# to a real server.
	_sbt_make_certs "$dir/tls" "Matrix test"
	secret=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
	mkdir -p "$dir/media"
	# Every rc_* limit very high: the tests log in, sync and send far faster than a person.
	local rc name
	rc=""
	for name in rc_message rc_registration rc_registration_token_validity rc_joins_per_room \
		rc_3pid_validation rc_third_party_invite rc_media_create rc_presence \
		rc_delayed_event_mgmt rc_room_creation rc_reports rc_send_to_device \
		rc_key_requests rc_admin_redaction; do
		rc+="$name: {per_second: 10000, burst_count: 100000, per_user: {per_second: 10000, burst_count: 100000}}"$'\n'
	done
	cat >"$dir/homeserver.yaml" <<-EOF
		# Generated by scripts/servers/matrix.sh: a throwaway loopback homeserver for tests.
		server_name: localhost
		pid_file: $dir/homeserver.pid
		public_baseurl: http://127.0.0.1:$port/
		listeners:
		  - port: $port
		    bind_addresses: ['127.0.0.1']
		    type: http
		    tls: false
		    x_forwarded: false
		    resources:
		      - names: [client]
		        compress: false
		  - port: $tls_port
		    bind_addresses: ['127.0.0.1']
		    type: http
		    tls: true
		    x_forwarded: false
		    resources:
		      - names: [client]
		        compress: false
		tls_certificate_path: $dir/tls/localhost.crt
		tls_private_key_path: $dir/tls/localhost.key
		database:
		  name: sqlite3
		  args:
		    database: $dir/homeserver.db
		media_store_path: $dir/media
		signing_key_path: $dir/localhost.signing.key
		registration_shared_secret: "$secret"
		macaroon_secret_key: "$secret-macaroon"
		form_secret: "$secret-form"
		enable_registration: false
		report_stats: false
		enable_metrics: false
		url_preview_enabled: false
		trusted_key_servers: []
		suppress_key_server_warning: true
		federation_domain_whitelist: []
		allow_public_rooms_over_federation: false
		bcrypt_rounds: 4
		presence:
		  enabled: true
		$rc
		rc_login:
		  address: {per_second: 10000, burst_count: 100000}
		  account: {per_second: 10000, burst_count: 100000}
		  failed_attempts: {per_second: 10000, burst_count: 100000}
		rc_joins:
		  local: {per_second: 10000, burst_count: 100000}
		  remote: {per_second: 10000, burst_count: 100000}
		rc_invites:
		  per_room: {per_second: 10000, burst_count: 100000}
		  per_user: {per_second: 10000, burst_count: 100000}
		  per_issuer: {per_second: 10000, burst_count: 100000}
		rc_federation:
		  window_size: 1000
		  sleep_limit: 1000
		  sleep_delay: 1
		  reject_limit: 1000
		  concurrent: 1000
	EOF
	# The signing key in signedjson's format (what --generate-keys writes, without its 2 s start):
	# algorithm, key version, unpadded base64 of a random ed25519 seed. Never used: no federation.
	python3 -c 'import base64, os; print("ed25519 a_test " + base64.b64encode(os.urandom(32)).decode().rstrip("="))' \
		>"$dir/localhost.signing.key"
	# Without log_config Synapse logs to stderr; exec keeps $! the server's own pid.
	(cd "$dir" && exec "$venv/bin/python" -m synapse.app.homeserver -c homeserver.yaml) \
		</dev/null >"$dir/synapse.log" 2>&1 &
	_sbt_extra_pids+=($!)
	_sbt_extra_logs+=("$dir/synapse.log")
	_sbt_matrix_pid=$!

	local url=http://127.0.0.1:$port
	if ! "$venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/matrix-setup.py" setup "$url" "$secret" \
		"$_sbt_matrix_pid" >"$dir/setup.log" 2>&1; then
		_sbt_tail "$dir/setup.log"
		_sbt_tail "$dir/synapse.log"
		_sbt_die "Synapse did not come up, or the test users could not be made"
	fi
	export SWITCHBOARD_TEST_MATRIX_SERVER=$url
	export SWITCHBOARD_TEST_MATRIX_DOMAIN=localhost
	export SWITCHBOARD_TEST_MATRIX_SHARED_SECRET=$secret
	export SWITCHBOARD_TEST_MATRIX_TLS_SERVER=https://localhost:$tls_port
	export SWITCHBOARD_TEST_MATRIX_TLS_CA=$dir/tls/ca.pem
	_sbt_exports+=(SWITCHBOARD_TEST_MATRIX_SERVER SWITCHBOARD_TEST_MATRIX_DOMAIN
		SWITCHBOARD_TEST_MATRIX_SHARED_SECRET SWITCHBOARD_TEST_MATRIX_TLS_SERVER
		SWITCHBOARD_TEST_MATRIX_TLS_CA)
	_sbt_log "Synapse $_sbt_matrix_synapse_version up: $url (domain localhost; $(tail -n 1 "$dir/setup.log"); ready $(_sbt_since "$started") after launch)"
}


_sbt_matrix_check() {
	_sbt_log "check: Matrix (Synapse) listens on 127.0.0.1 only; every user logs in; m.direct contacts and names"
	local fail=0
	if command -v ss >/dev/null; then
		local line
		while read -r line; do
			_sbt_log "  $line"
			[[ $line == 127.0.0.1:* ]] || { _sbt_log "FAIL: Synapse listens beyond loopback: $line"; fail=1; }
		done < <(ss -Hltnp | awk -v pid="pid=$_sbt_matrix_pid," 'index($0, pid) { print $4 }')
	fi
	"$(_sbt_matrix_venv)/bin/python" "$(dirname "${BASH_SOURCE[0]}")/matrix-setup.py" check \
		"$SWITCHBOARD_TEST_MATRIX_SERVER" "$SWITCHBOARD_TEST_MATRIX_SHARED_SECRET" \
		"$SWITCHBOARD_TEST_MATRIX_TLS_SERVER" "$SWITCHBOARD_TEST_MATRIX_TLS_CA" >&2 || fail=1
	((fail == 0))
}
