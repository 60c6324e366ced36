#!/usr/bin/env bash
# scripts/test-env.sh — throwaway PostgreSQL, Prosody and ejabberd (XMPP) servers on loopback for
# the tests.
#
# Usage
#   source scripts/test-env.sh          start them all, export the variables below into the calling
#                                       shell; they are stopped when that shell exits (EXIT trap).
#                                       This is what scripts/test.sh does.
#   scripts/test-env.sh --check         start them all, check them for real (SQL query, XMPP login
#                                       of every test user and their rosters, on both Prosodys and
#                                       ejabberd, STARTTLS on the TLS one, no epmd left), stop,
#                                       exit 0 if all ok.
#   scripts/test-env.sh CMD [ARG...]    start them all, run CMD with the variables set, stop; exits
#                                       with CMD's status. E.g. `scripts/test-env.sh cargo test foo`.
#   scripts/test-env.sh                 start them all, print the exports, wait for Ctrl-C, stop.
#
# Servers: one PostgreSQL and two Prosodys with the same users and rosters: a plain one (no TLS at
# all) and a TLS one that requires STARTTLS before login, with a certificate for "localhost" from a
# throwaway CA made at start-up with openssl (its key is deleted once the certificate is signed).
# The TLS one also has a direct TLS port (XEP-0368: TLS from the first byte) and hosts a second
# domain, switchboard.test (certificate for it too; users ann and ben, no contacts), whose SRV
# records the DNS plugin (scripts/servers/dns.sh) serves.
# And one ejabberd, a second XMPP server implementation, plain (no TLS), with only the connector
# tests' users ann, ben, cid, dot, eve and their rosters, so that tests/xmpp.rs holds the
# connector to two independent servers.
#
# Exported (all on 127.0.0.1, ports chosen free at start):
#   SWITCHBOARD_TEST_DATABASE_URL  postgres://postgres@127.0.0.1:PORT/postgres  (trust auth)
#   SWITCHBOARD_TEST_XMPP_SERVER   127.0.0.1:PORT   (Prosody c2s, plain TCP, no TLS offered)
#   SWITCHBOARD_TEST_XMPP_DOMAIN   localhost        (both Prosodys)
#   SWITCHBOARD_TEST_XMPP_TLS_SERVER  127.0.0.1:PORT  (Prosody c2s, STARTTLS required)
#   SWITCHBOARD_TEST_XMPP_TLS_CA   PEM file of the CA that issued the TLS Prosody's certificate
#   SWITCHBOARD_TEST_XMPP_DIRECT_TLS_SERVER  127.0.0.1:PORT  (the TLS Prosody's direct TLS port)
#   SWITCHBOARD_TEST_XMPP_SRV_DOMAIN  switchboard.test  (the TLS Prosody's second domain)
#   SWITCHBOARD_TEST_EJABBERD_SERVER  127.0.0.1:PORT  (ejabberd c2s, plain TCP, no TLS offered;
#                                  domain localhost too)
#   SWITCHBOARD_TEST_XMPP_SPARE_SERVER  127.0.0.1:PORT  (a third plain Prosody, same users and
#                                  rosters, with mod_offline (the others have none),
#                                  configured but NOT started: tests run it themselves
#   SWITCHBOARD_TEST_XMPP_SPARE_CONFIG  with `prosody -F --config FILE` to take a server down
#                                  and bring it back)
#   SWITCHBOARD_TEST_TMPDIR        the temporary folder holding data and logs of all servers
#
# Knobs: SWITCHBOARD_PG_BIN (folder with initdb/pg_ctl; default: newest /usr/lib/postgresql/*/bin),
#        SWITCHBOARD_TEST_KEEP_TMP=1 (keep the temporary folder, e.g. to read the logs).
#
# Why this exists: CI runs on a fresh Debian machine as root, where none of the servers may be
# installed, and nothing may listen on anything but loopback. So we install what is missing with
# apt (without letting the packages start their system services), then run private instances of
# the servers out of a temporary folder and tear everything down at exit.
#
# XMPP test users, the same on both Prosodys, all on domain "localhost"; the password of each is
# "<name>-pw-7Q":
#   alice, alice2, bob, carol, dave, mallory      (e.g. alice@localhost / alice-pw-7Q), for the
#   API tests, and ann, ben, cid, dot, eve, for the connector tests (tests/xmpp.rs), which
#   change presence and so keep to users of their own. ejabberd has ann, ben, cid, dot, eve only.
#   fay, gus, hal, ivy (no contacts, on ejabberd too): the connector's chat tests (messages sent
#   while the user is logged out, archive catch-up), which must be alone in their archives.
#   jan, kit (no contacts): the API's message request test, which changes jan's roster.
#   lea, mia (no contacts): the API's restart tests, which count their sessions on the server.
#
# Rosters. They come from Prosody's mod_groups (a groups_file). mod_groups makes every member of a
# group a contact of every other member of that group, with subscription "both", and puts the
# contact in a roster group named after the group. To get exactly the rosters wanted, every group
# below has exactly two members, so every group is one mutual contact relation. Resulting rosters
# (contact JID — display name — roster group), exactly, nothing else in them:
#   alice@localhost:    bob@localhost "Bob" [Friends]; carol@localhost "Carol" [Family];
#                       dave@localhost "Dave" [Work]
#   alice2@localhost:   bob@localhost "Bob" [Club]; carol@localhost "Carol" [Neighbours]
#   bob@localhost:      alice@localhost "Alice" [Friends]; alice2@localhost "Alice2" [Club];
#                       mallory@localhost "Mallory" [Chess]
#   carol@localhost:    alice@localhost "Alice" [Family]; alice2@localhost "Alice2" [Neighbours]
#   dave@localhost:     alice@localhost "Alice" [Work]
#   mallory@localhost:  bob@localhost "Bob" [Chess]
#   ann, ben, cid, dot, eve: one group [Pals] of five: each has the other four, named "Ann",
#                       "Ben", "Cid", "Dot", "Eve".
# Note: roster items from mod_groups are not stored (persist=false) and cannot be removed by a
# client; contacts a client adds itself are stored normally and disappear with the temp folder.
# ejabberd has no groups file: the Pals rosters there are ordinary stored roster items, made with
# `ejabberdctl push_roster_all` (same names, group and subscription), which a client can change.
# The `--check` mode logs in as each user and asserts exactly these rosters.
#
# vCards (XEP-0054, vcard-temp): served by both implementations, as a typical deployment does —
# Prosody with mod_vcard_legacy (vcard-temp mapped onto the vCard4 and avatar PEP nodes, which
# it loads mod_pep for; it also adds the XEP-0153 avatar hash to its users' presence), ejabberd
# with mod_vcard (Mnesia; no vjud search service). No user has a vCard at start: the tests
# that need one publish it as that user.
#
# Message archives (XEP-0313 MAM): Prosody's mod_mam (default policy: archive everything; no
# mod_offline, so a message to a logged-out user is archived and not bounced) and ejabberd's
# mod_mam (`default: always`, Mnesia). Every message a user receives gets a <stanza-id> there.
#
# Sourcing sets `set -euo pipefail` and EXIT/INT/TERM traps in the calling shell; its own names
# are prefixed with _sbt_ to stay out of the caller's way.

set -euo pipefail

# Sourced a second time into the same shell: the servers of the first time are still running.
if [[ ${BASH_SOURCE[0]} != "$0" && -n ${_sbt_prosody_pids[*]:-} ]]; then
	printf '[test-env] already running in this shell (%s)\n' "${SWITCHBOARD_TEST_TMPDIR:-}" >&2
	return 0
fi

# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

_sbt_log() { printf '[test-env] %s\n' "$*" >&2; }

# Exit (the whole calling shell when sourced: a test run without its services must fail loudly).
_sbt_die() {
	_sbt_log "ERROR: $*"
	_sbt_logs_shown=1 # the failing step showed its log already; cleanup need not repeat it
	exit 1
}

# Print the last lines of a log file, framed, so a failed start in CI shows why.
_sbt_tail() {
	local file=$1 lines=${2:-40}
	[[ -s $file ]] || return 0
	printf '[test-env] ---- last %s lines of %s ----\n' "$lines" "$file" >&2
	tail -n "$lines" "$file" >&2 || true
	printf '[test-env] ---- end of %s ----\n' "$file" >&2
}

# Newest PostgreSQL server binaries folder (Debian puts them in /usr/lib/postgresql/VERSION/bin,
# not on PATH). Not hard-coded to 15 so a newer Debian works too.
_sbt_pg_bindir() {
	if [[ -n ${SWITCHBOARD_PG_BIN:-} ]]; then
		[[ -x $SWITCHBOARD_PG_BIN/initdb ]] && { echo "$SWITCHBOARD_PG_BIN"; return 0; }
		return 1
	fi
	local dir
	for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
		if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
			echo "$dir"
			return 0
		fi
	done
	return 1
}

# Run a command as the `postgres` user: initdb and postgres refuse to run as root, and there is no
# sudo on these machines. setpriv (util-linux, on every Debian) switches user and then execs the
# command, so a `&` job's $! is the server's own pid. `env -C`: the postgres user cannot read
# /root, and PostgreSQL wants a readable working directory. As a non-root user we run it as
# ourselves. Filled in by _sbt_start.
_sbt_pg_prefix=()
_sbt_as_pg() { "${_sbt_pg_prefix[@]}" "$@"; }

# Print N distinct free TCP ports on 127.0.0.1. python3 binds port 0 N times while holding all the
# sockets, so the kernel hands out N distinct unused ports. Fallback without python: random ports
# on which nothing accepts a connection (bash's /dev/tcp).
_sbt_free_ports() {
	local n=$1 out
	if out=$(python3 - "$n" 2>/dev/null <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
	) && [[ -n $out ]]; then
		echo "$out"
		return 0
	fi
	local ports=() port tries=0
	while ((${#ports[@]} < n)); do
		((++tries < 1000)) || return 1
		port=$((20000 + RANDOM % 30000))
		[[ " ${ports[*]} " == *" $port "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			ports+=("$port")
		fi
	done
	echo "${ports[*]}"
}

# "N.N s" since $1, an earlier $EPOCHREALTIME.
_sbt_since() {
	local now=$EPOCHREALTIME
	local ms=$(((${now//[!0-9]/} - ${1//[!0-9]/}) / 1000)) # "." or "," by locale
	printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

# True once something accepts TCP connections on 127.0.0.1:$1.
_sbt_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Args: PORT TENTHS PID. Waits up to TENTHS tenths of a second for 127.0.0.1:PORT to accept
# connections while process PID lives; false if it did not. For the plugins.
_sbt_wait_port() {
	local port=$1 tenths=$2 pid=$3 i
	for ((i = 0; i < tenths; i++)); do
		_sbt_port_open "$port" && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# ----------------------------------------------------------------------------------------------
# Install what is missing (Debian, as root)
# ----------------------------------------------------------------------------------------------

_sbt_install_missing() {
	local pkgs=() plugin
	for plugin in "${_sbt_plugins[@]}"; do
		# shellcheck disable=SC2207 # package names have no spaces
		pkgs+=($("_sbt_${plugin}_missing_packages"))
	done
	_sbt_pg_bindir >/dev/null || pkgs+=(postgresql)
	command -v psql >/dev/null || pkgs+=(postgresql-client)
	{ command -v prosody && command -v prosodyctl; } >/dev/null || pkgs+=(prosody)
	_sbt_ejabberdctl_bin >/dev/null || pkgs+=(ejabberd)
	command -v openssl >/dev/null || pkgs+=(openssl)
	((${#pkgs[@]} > 0)) || return 0

	[[ $EUID -eq 0 ]] || _sbt_die "missing ${pkgs[*]}: install them (apt-get install ${pkgs[*]}) or run as root"
	command -v apt-get >/dev/null || _sbt_die "missing ${pkgs[*]} and no apt-get to install them"

	# The packages would start their system services: Debian's Prosody listens on all interfaces,
	# and postgresql creates and starts a "main" cluster on port 5432. We want neither: only our own
	# loopback instances. A policy-rc.d that exits 101 tells invoke-rc.d/deb-systemd-invoke not to
	# start anything (Docker-style images already ship one; we add ours only if there is none,
	# and remove it afterwards). The cluster files are still created, but not running.
	local own_policy=""
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\n# Temporary, from switchboard scripts/test-env.sh: start no services during apt install.\nexit 101\n' \
			>/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		own_policy=1
	fi

	_sbt_log "installing ${pkgs[*]} with apt (services kept stopped)"
	local ok=1 aptlog=${TMPDIR:-/tmp}/switchboard-test-apt.$$.log started=$EPOCHREALTIME
	export DEBIAN_FRONTEND=noninteractive
	# apt-get update only now that something must be installed: a fresh machine has stale lists.
	if ! apt-get -o DPkg::Lock::Timeout=300 update -q >"$aptlog" 2>&1 ||
		! apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
			-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
			"${pkgs[@]}" >>"$aptlog" 2>&1; then
		ok=""
	fi
	[[ -z $own_policy ]] || rm -f /usr/sbin/policy-rc.d
	if [[ -z $ok ]]; then
		_sbt_tail "$aptlog" 60
		_sbt_die "apt-get install ${pkgs[*]} failed (full log: $aptlog)"
	fi
	rm -f "$aptlog"
	_sbt_log "installed ${pkgs[*]} ($(_sbt_since "$started"))"

	# Belt and braces, in case a service started anyway (e.g. no policy-rc.d support): whatever is
	# running now came from this install, since the package was not there before.
	if [[ " ${pkgs[*]} " == *" postgresql "* ]] && command -v pg_lsclusters >/dev/null; then
		local ver name _port status _rest
		while read -r ver name _port status _rest; do
			if [[ $status == online* ]]; then
				_sbt_log "stopping packaged PostgreSQL cluster $ver/$name started by the install"
				pg_ctlcluster "$ver" "$name" stop || true
			fi
		done < <(pg_lsclusters -h 2>/dev/null || true)
	fi
	if [[ " ${pkgs[*]} " == *" prosody "* && -s /run/prosody/prosody.pid ]]; then
		local pid
		pid=$(cat /run/prosody/prosody.pid)
		if kill -0 "$pid" 2>/dev/null; then
			_sbt_log "stopping packaged Prosody service started by the install"
			service prosody stop >/dev/null 2>&1 || kill -TERM "$pid" || true
		fi
	fi
	# Debian's ejabberd listens on all interfaces (c2s 5222, s2s 5269, HTTP 5280/5443) and its
	# Erlang VM starts an epmd daemon (port 4369, all interfaces) that outlives it.
	if [[ " ${pkgs[*]} " == *" ejabberd "* && -s /run/ejabberd/ejabberd.pid ]]; then
		local pid i
		pid=$(cat /run/ejabberd/ejabberd.pid)
		if kill -0 "$pid" 2>/dev/null; then
			_sbt_log "stopping packaged ejabberd service started by the install"
			service ejabberd stop >/dev/null 2>&1 || kill -TERM "$pid" || true
			for ((i = 0; i < 100; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
		fi
	fi
	_sbt_stop_new_epmds
}

# ----------------------------------------------------------------------------------------------
# Cleanup (EXIT trap): stop the servers, remove the temp folder. Keeps the exit status.
# ----------------------------------------------------------------------------------------------

_sbt_tmp=""
_sbt_prosody_pids=() # every Prosody started, plain and TLS
_sbt_pg_pid=""
_sbt_ejabberd_pid="" # the `ejabberdctl foreground` process; the Erlang VM is its child
_sbt_ejabberd_port=""
_sbt_ejabberd_started=""
_sbt_logs_shown=""
_sbt_extra_pids=() # servers started by the plugins in scripts/servers/ (stopped with SIGTERM)
_sbt_extra_logs=() # their logs, shown when a run fails
_sbt_exports=()    # names of the variables the plugins export, printed in the no-argument mode
_sbt_plugins=()    # plugin names, each with _sbt_NAME_missing_packages / _start / _check

# Every scripts/servers/NAME.sh is a plugin for one more kind of server: it defines
# _sbt_NAME_missing_packages (print the apt packages to install), _sbt_NAME_start (start in
# $_sbt_tmp/NAME, add pids to _sbt_extra_pids and logs to _sbt_extra_logs, export
# SWITCHBOARD_TEST_* and add their names to _sbt_exports) and _sbt_NAME_check (for --check).
for _sbt_plugin_file in "$(dirname "${BASH_SOURCE[0]}")"/servers/*.sh; do
	[[ -e $_sbt_plugin_file ]] || continue
	# shellcheck source=/dev/null
	source "$_sbt_plugin_file"
	_sbt_plugin_name=$(basename "$_sbt_plugin_file" .sh)
	_sbt_plugins+=("$_sbt_plugin_name")
done
unset _sbt_plugin_file _sbt_plugin_name

# SIGTERM to every pid given, then up to 10 s each for a clean shutdown, then SIGKILL; reaps.
_sbt_stop_pids() {
	local pid i
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

_sbt_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# A failing run (tests or start-up) shows the servers' last words before they disappear; not
	# when stopped on purpose by Ctrl-C (130) or SIGTERM (143).
	if ((rc != 0 && rc != 130 && rc != 143)) && [[ -z $_sbt_logs_shown && -n $_sbt_tmp && -d $_sbt_tmp ]]; then
		_sbt_tail "$_sbt_tmp/prosody/prosody.log" 20
		_sbt_tail "$_sbt_tmp/prosody-tls/prosody.log" 20
		_sbt_tail "$_sbt_tmp/ejabberd/error.log" 20
		_sbt_tail "$_sbt_tmp/pg/postgres.log" 20
		local log
		for log in "${_sbt_extra_logs[@]}"; do
			_sbt_tail "$log" 20
		done
	fi
	_sbt_stop_pids "${_sbt_extra_pids[@]}"
	_sbt_extra_pids=()
	# ejabberd first: SIGTERM makes its Erlang VM shut down cleanly, as `ejabberdctl stop` would
	# without starting a second VM for it. It takes ~1 s, which the others' stops overlap. The VM's
	# pid is in ejabberd.pid; before that is written, it is the ejabberdctl process's only child.
	local ejabberd_vm=""
	if [[ -n $_sbt_ejabberd_pid ]]; then
		ejabberd_vm=$(cat "$_sbt_tmp/ejabberd/ejabberd.pid" 2>/dev/null ||
			cat "/proc/$_sbt_ejabberd_pid/task/$_sbt_ejabberd_pid/children" 2>/dev/null || true)
		[[ -z $ejabberd_vm ]] || kill -TERM $ejabberd_vm 2>/dev/null || true
	fi
	_sbt_stop_pids "${_sbt_prosody_pids[@]}"
	_sbt_prosody_pids=()
	if [[ -n $_sbt_pg_pid ]]; then
		# "fast" shutdown: roll back open transactions, disconnect clients, stop. pg_ctl waits for
		# the postmaster to finish; then SIGKILL as a last resort, and reap it.
		if ! _sbt_as_pg "$_sbt_pg_bin/pg_ctl" -D "$_sbt_tmp/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
			kill -KILL "$_sbt_pg_pid" 2>/dev/null || true
		fi
		wait "$_sbt_pg_pid" 2>/dev/null || true
		_sbt_pg_pid=""
	fi
	if [[ -n $_sbt_ejabberd_pid ]]; then
		local i
		for ((i = 0; i < 200; i++)); do # up to 20 s for a clean shutdown; it takes ~1 s
			kill -0 "$_sbt_ejabberd_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$_sbt_ejabberd_pid" 2>/dev/null; then
			[[ -z $ejabberd_vm ]] || kill -KILL $ejabberd_vm 2>/dev/null || true
			kill -KILL "$_sbt_ejabberd_pid" 2>/dev/null || true
		fi
		wait "$_sbt_ejabberd_pid" 2>/dev/null || true
		_sbt_ejabberd_pid=""
	fi
	_sbt_stop_new_epmds
	if [[ -n $_sbt_tmp && -d $_sbt_tmp ]]; then
		if [[ ${SWITCHBOARD_TEST_KEEP_TMP:-} == 1 ]]; then
			_sbt_log "kept $_sbt_tmp"
		else
			rm -rf "$_sbt_tmp"
		fi
	fi
	return "$rc"
}

# ----------------------------------------------------------------------------------------------
# PostgreSQL: private cluster, trust auth, 127.0.0.1 only, unix socket inside the temp folder.
# ----------------------------------------------------------------------------------------------

_sbt_start_postgres() {
	local port=$1 dir=$_sbt_tmp/pg
	mkdir -p "$dir/data" "$dir/run"
	[[ $EUID -ne 0 ]] || chown -R postgres:postgres "$dir"

	if ! _sbt_as_pg "$_sbt_pg_bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
		--no-sync >"$dir/initdb.log" 2>&1; then
		_sbt_tail "$dir/initdb.log"
		_sbt_die "PostgreSQL initdb failed"
	fi
	# Settings for a disposable test database: durability off (fsync etc.) for speed; plenty of
	# connections because parallel tests each open a pool.
	cat >>"$dir/data/postgresql.conf" <<-EOF

		# --- scripts/test-env.sh ---
		listen_addresses = '127.0.0.1'
		port = $port
		unix_socket_directories = '$dir/run'
		max_connections = 300
		fsync = off
		synchronous_commit = off
		full_page_writes = off
	EOF

	# The postmaster runs as a child of this shell (not daemonized by `pg_ctl start`) so that this
	# shell reaps it when it stops: otherwise it lingers as a zombie until PID 1 gets round to it.
	"${_sbt_pg_prefix[@]}" "$_sbt_pg_bin/postgres" -D "$dir/data" </dev/null >"$dir/postgres.log" 2>&1 &
	_sbt_pg_pid=$!
	local i up=""
	for ((i = 0; i < 600; i++)); do # up to 60 s; it normally takes ~0.5 s
		if "$_sbt_pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
			up=1
			break
		fi
		kill -0 "$_sbt_pg_pid" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $up ]]; then
		_sbt_tail "$dir/postgres.log"
		_sbt_die "PostgreSQL did not start on 127.0.0.1:$port"
	fi
	export SWITCHBOARD_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
	_sbt_log "PostgreSQL $("$_sbt_pg_bin/postgres" --version | awk '{print $3}') up: $SWITCHBOARD_TEST_DATABASE_URL"
}

# ----------------------------------------------------------------------------------------------
# A throwaway CA and a certificate for "localhost" signed by it, for the TLS Prosody.
# ----------------------------------------------------------------------------------------------

# Args: DIR [WHAT [NAME...]]. Writes DIR/ca.pem (the CA certificate, for the tests to trust) and
# localhost.crt/localhost.key (the server's). EC P-256 keys: generated in milliseconds. The
# certificate names localhost, and each NAME given, in subjectAltName (TLS clients ignore the CN)
# and is a server certificate only. The CA's key is deleted once it has signed: nothing else can
# be issued. Plugins call it for CAs of their own (WHAT names it in the CA's subject and in errors).
_sbt_make_certs() {
	local dir=$1 what=${2:-test} names=DNS:localhost name
	for name in "${@:3}"; do
		names+=,DNS:$name
	done
	mkdir -p "$dir"
	if ! {
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj "/CN=Switchboard throwaway $what CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
			openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
				-subj /CN=localhost -keyout "$dir/localhost.key" -out "$dir/localhost.csr" &&
			openssl x509 -req -in "$dir/localhost.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
				-set_serial "0x$(openssl rand -hex 8)" -days 2 -out "$dir/localhost.crt" \
				-extfile <(printf '%s\n' "subjectAltName=$names" basicConstraints=critical,CA:FALSE \
					keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth)
	} >"$dir/openssl.log" 2>&1; then
		_sbt_tail "$dir/openssl.log"
		_sbt_die "creating the $what certificates with openssl failed"
	fi
	rm -f "$dir/ca.key" "$dir/localhost.csr"
}

# ----------------------------------------------------------------------------------------------
# Prosody: foreground processes, c2s on 127.0.0.1, no s2s, users + groups rosters. The plain one
# has no TLS at all; the TLS one requires STARTTLS (mod_tls) before any login.
# ----------------------------------------------------------------------------------------------

# user:Display name — the test users. Password of each: "<user>-pw-7Q".
_sbt_xmpp_users=(alice:Alice alice2:Alice2 bob:Bob carol:Carol dave:Dave mallory:Mallory
	ann:Ann ben:Ben cid:Cid dot:Dot eve:Eve
	fay:Fay gus:Gus hal:Hal ivy:Ivy jan:Jan kit:Kit lea:Lea mia:Mia)

# Each group but Pals has exactly two members, i.e. it is one mutual contact relation (see the
# header for the resulting rosters). Format: "Group:user1 user2". No comments or blank lines go into the
# generated file: mod_groups reads every line that is not a [Group] header as a member JID.
_sbt_xmpp_groups=(
	"Friends:alice bob"
	"Family:alice carol"
	"Work:alice dave"
	"Club:alice2 bob"
	"Neighbours:alice2 carol"
	"Chess:mallory bob"
	"Pals:ann ben cid dot eve"
)

# The XMPP domain that only the TLS Prosody hosts besides localhost, with users of its own (no
# contacts): the DNS plugin (scripts/servers/dns.sh) publishes its SRV records, so an account
# given as just this domain is found through DNS. Not under "localhost", which resolvers answer
# themselves (RFC 6761) without asking any DNS server.
_sbt_xmpp_srv_domain=switchboard.test
_sbt_xmpp_srv_users=(ann ben)

# Usage: _sbt_start_prosody PORT INSTANCE TLS — INSTANCE is its folder in the temp folder (and its
# name in messages), TLS is 1 for STARTTLS required (needs _sbt_make_certs first), 0 for no TLS.
# Args: PORT INSTANCE TLS(0|1) [START(1|0) [DIRECT_TLS_PORT]]. With START=0 only the configuration
# and the users are made: the tests start and stop that one themselves (to take a server down and
# back). With TLS=1 and a DIRECT_TLS_PORT, that port speaks TLS from the first byte (XEP-0368),
# and the server also hosts $_sbt_xmpp_srv_domain.
_sbt_start_prosody() {
	local port=$1 instance=$2 tls=$3 start=${4:-1} direct_tls_port=${5:-} dir=$_sbt_tmp/$2
	local cfg=$dir/prosody.cfg.lua
	mkdir -p "$dir/data" "$dir/certs" # certs stays empty without TLS, but Prosody wants the folder

	# Groups file: "[Group]" then "user@domain=Display name" lines.
	local entry group members member name u
	: >"$dir/groups.txt"
	for entry in "${_sbt_xmpp_groups[@]}"; do
		group=${entry%%:*}
		members=${entry#*:}
		printf '[%s]\n' "$group" >>"$dir/groups.txt"
		for member in $members; do
			name=$member
			for u in "${_sbt_xmpp_users[@]}"; do
				if [[ ${u%%:*} == "$member" ]]; then name=${u#*:}; fi
			done
			printf '%s@localhost=%s\n' "$member" "$name" >>"$dir/groups.txt"
		done
	done

	# What differs between the two: encryption and, with it, whether PLAIN may go in the clear.
	local tls_settings
	if ((tls)); then
		cp "$_sbt_tmp/tls/localhost.crt" "$_sbt_tmp/tls/localhost.key" "$dir/certs/"
		tls_settings=$(
			cat <<-EOF
				c2s_require_encryption = true
				allow_unencrypted_plain_auth = false
				ssl = { certificate = "$dir/certs/localhost.crt"; key = "$dir/certs/localhost.key" }
				modules_enabled = { "tls"; "roster"; "saslauth"; "disco"; "presence"; "message"; "iq"; "ping"; "posix"; "groups"; "vcard_legacy"; "mam" }
				modules_disabled = { "s2s"; "offline" }
			EOF
		)
	elif [[ -n $direct_tls_port ]]; then
		_sbt_die "Prosody ($instance): a direct TLS port needs TLS"
	else
		tls_settings=$(
			cat <<-EOF
				c2s_require_encryption = false
				allow_unencrypted_plain_auth = true
				modules_enabled = { "roster"; "saslauth"; "disco"; "presence"; "message"; "iq"; "ping"; "posix"; "groups"; "vcard_legacy"; "mam" }
				modules_disabled = { "s2s"; "tls"; "offline" }
			EOF
		)
	fi

	cat >"$cfg" <<-EOF
		-- Generated by scripts/test-env.sh: throwaway Prosody for tests, loopback only.
		run_as_root = true   -- CI runs as root; nothing here is worth a separate user
		pidfile = "$dir/prosody.pid"
		data_path = "$dir/data"
		interfaces = { "127.0.0.1" }
		local_interfaces = { "127.0.0.1" }
		c2s_ports = { $port }
		c2s_direct_tls_ports = { $direct_tls_port }
		s2s_ports = { }
		http_ports = { }
		https_ports = { }
		s2s_require_encryption = false
		authentication = "internal_hashed"
		storage = "internal"
		certificates = "$dir/certs"
		$tls_settings
		groups_file = "$dir/groups.txt"
		log = { { levels = { min = "info" }; to = "file"; filename = "$dir/prosody.log" } }
		VirtualHost "localhost"
	EOF
	local srv_users=()
	if [[ -n $direct_tls_port ]]; then
		printf 'VirtualHost "%s"\n' "$_sbt_xmpp_srv_domain" >>"$cfg"
		srv_users=("${_sbt_xmpp_srv_users[@]}")
	fi

	# The spare keeps messages for users who are offline (mod_offline), as real servers do: the
	# chat tests send to a contact who is not logged in. The others do not, so that messages of
	# one test never reach a later login of another.
	if [[ $instance == prosody-spare ]]; then
		sed -i 's/modules_disabled = { "s2s"; "tls"; "offline" }/modules_disabled = { "s2s"; "tls" }/' "$cfg"
		grep -q 'modules_disabled = { "s2s"; "tls" }' "$cfg" || _sbt_die "spare Prosody: mod_offline not enabled"
	fi

	# Accounts are created with the server down, straight into data_path.
	for u in "${_sbt_xmpp_users[@]}"; do
		u=${u%%:*}
		if ! prosodyctl --config "$cfg" register "$u" localhost "$u-pw-7Q" >>"$dir/prosodyctl.log" 2>&1; then
			_sbt_tail "$dir/prosodyctl.log"
			_sbt_die "prosodyctl register $u failed"
		fi
	done
	for u in "${srv_users[@]}"; do
		if ! prosodyctl --config "$cfg" register "$u" "$_sbt_xmpp_srv_domain" "$u-pw-7Q" >>"$dir/prosodyctl.log" 2>&1; then
			_sbt_tail "$dir/prosodyctl.log"
			_sbt_die "prosodyctl register $u@$_sbt_xmpp_srv_domain failed"
		fi
	done

	if ((!start)); then
		_sbt_log "Prosody ($instance) configured, not started: 127.0.0.1:$port ($cfg)"
		return 0
	fi
	prosody -F --config "$cfg" </dev/null >"$dir/prosody.stdout" 2>&1 &
	local pid=$!
	_sbt_prosody_pids+=("$pid")

	local i up=""
	for ((i = 0; i < 300; i++)); do # up to 30 s; it normally takes ~0.1 s
		if _sbt_port_open "$port" && { [[ -z $direct_tls_port ]] || _sbt_port_open "$direct_tls_port"; }; then
			up=1
			break
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $up ]]; then
		_sbt_tail "$dir/prosody.stdout"
		_sbt_tail "$dir/prosody.log"
		_sbt_die "Prosody ($instance) did not accept connections on 127.0.0.1:$port"
	fi
	local what="127.0.0.1:$port (domain localhost)"
	[[ -z $direct_tls_port ]] ||
		what="127.0.0.1:$port, direct TLS 127.0.0.1:$direct_tls_port (domains localhost, $_sbt_xmpp_srv_domain)"
	_sbt_log "Prosody ($instance) $(dpkg-query -W -f='${Version}' prosody 2>/dev/null || true) up: $what"
}

# ----------------------------------------------------------------------------------------------
# ejabberd: the second, independent XMPP server implementation (Erlang), for the connector tests.
# Plain c2s on 127.0.0.1 (no TLS offered), users ann..eve with the Pals roster, no s2s, no HTTP.
# ----------------------------------------------------------------------------------------------

# The roster groups ejabberd gets, as in _sbt_xmpp_groups: only the connector tests use ejabberd.
_sbt_ejabberd_groups=("Pals:ann ben cid dot eve")
# Users without contacts: the connector's chat tests (tests/xmpp.rs), on both implementations.
_sbt_ejabberd_loners=(fay gus hal ivy)

# ejabberdctl: in /usr/sbin, which is not on every user's PATH.
_sbt_ejabberdctl_bin() {
	local bin
	for bin in "$(command -v ejabberdctl 2>/dev/null)" /usr/sbin/ejabberdctl; do
		[[ -n $bin && -x $bin ]] && { echo "$bin"; return 0; }
	done
	return 1
}

# epmd, Erlang's port mapper daemon, listens on all interfaces (port 4369) and outlives the VM
# that started it. Our ejabberd is set up not to need one (ERL_DIST_PORT below), so normally none
# appears; these catch the packaged service, or a future ejabberdctl, starting one anyway.

# Pids of the epmd daemons running as the user ejabberd runs as (user ejabberd as root, else
# ourselves), one a line. No pgrep: procps is not on every machine.
_sbt_epmd_pids() {
	local uid comm name pid
	if [[ $EUID -eq 0 ]]; then
		uid=$(id -u ejabberd 2>/dev/null) || return 0 # no such user yet: no such epmd either
	else
		uid=$EUID
	fi
	for comm in /proc/[0-9]*/comm; do
		read -r name <"$comm" 2>/dev/null || continue
		[[ $name == epmd ]] || continue
		pid=${comm#/proc/}
		pid=${pid%/comm}
		[[ $(stat -c %u "/proc/$pid" 2>/dev/null) == "$uid" ]] && echo "$pid"
	done
	return 0
}

# The epmd pids of _sbt_epmd_pids that were not there when this script started.
_sbt_epmd_before=""
_sbt_new_epmds() {
	local pid
	for pid in $(_sbt_epmd_pids); do
		[[ " ${_sbt_epmd_before//$'\n'/ } " == *" $pid "* ]] || echo "$pid"
	done
	return 0
}

# Stops (by pid) every epmd that appeared since this script started.
_sbt_stop_new_epmds() {
	local pid
	for pid in $(_sbt_new_epmds); do
		_sbt_log "stopping epmd (pid $pid) started by ejabberd"
		kill -TERM "$pid" 2>/dev/null || true
	done
}

# Usage: _sbt_start_ejabberd C2S_PORT DIST_PORT — starts it; _sbt_finish_ejabberd completes it.
# Files in $_sbt_tmp/ejabberd, all owned by user ejabberd (as root; it runs as that user):
#   ejabberd.yml      its config;
#   ejabberdctl.cfg   the ctl config. It must be ours: without --ctl-config, ejabberdctl reads the
#                     packaged /etc/ejabberd/ejabberdctl.cfg, whose settings silently override ours
#                     (pid file, config path) and whose Erlang distribution listens on all
#                     interfaces;
#   ctl               ejabberdctl with both files, as user ejabberd: e.g. `ctl status`,
#                     `ctl get_roster ann localhost` (keep the folder with SWITCHBOARD_TEST_KEEP_TMP=1);
#   roster-GROUP.erl  the members of a roster group, for push_roster_all;
#   .erlang.cookie    the Erlang cookie (HOME is this folder), readable by ejabberd only;
#   data/             the Mnesia database (users, rosters); ejabberd.log, error.log.
# No epmd: ERL_DIST_PORT makes the node listen for ejabberdctl on DIST_PORT (127.0.0.1 only, by
# inet_dist_use_interface) and ejabberdctl connect straight to it, so no epmd daemon is started,
# and a ctl call takes ~0.3 s instead of 1-2 s.
_sbt_start_ejabberd() {
	local port=$1 dist_port=$2 dir=$_sbt_tmp/ejabberd
	local bin
	bin=$(_sbt_ejabberdctl_bin) || _sbt_die "ejabberdctl not found"
	mkdir -p "$dir/data"
	chmod 0700 "$dir"
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/.erlang.cookie"
	chmod 0400 "$dir/.erlang.cookie"

	cat >"$dir/ejabberdctl.cfg" <<-EOF
		# Generated by scripts/test-env.sh; used instead of /etc/ejabberd/ejabberdctl.cfg.
		ERLANG_NODE=switchboard-test@localhost
		ERL_DIST_PORT=$dist_port
		ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"
		EJABBERD_PID_PATH=$dir/ejabberd.pid
	EOF

	# Plain c2s: no certificates, so no STARTTLS offered (the STARTTLS tests use the TLS Prosody);
	# PLAIN and SCRAM logins (passwords stored as given, so every SCRAM variant is offered). No
	# s2s listener; no mod_offline, mod_stream_mgmt or mod_fail2ban (the tests log in with wrong
	# passwords on purpose, and must not be banned for it). mod_admin_extra: push_roster_all.
	# mod_mam archives every message (also those to a logged-out user) for the chat tests.
	cat >"$dir/ejabberd.yml" <<-EOF
		# Generated by scripts/test-env.sh: throwaway ejabberd for tests, loopback only.
		hosts:
		  - localhost
		loglevel: info
		log_rotate_count: 0
		hide_sensitive_log_data: true
		certfiles: []
		auth_method: internal
		auth_password_format: plain
		listen:
		  - port: $port
		    ip: "127.0.0.1"
		    module: ejabberd_c2s
		    starttls: false
		api_permissions:
		  "ejabberdctl":
		    from:
		      - ejabberd_ctl
		    who: all
		    what: "*"
		modules:
		  mod_admin_extra: {}
		  mod_disco: {}
		  mod_ping: {}
		  mod_roster: {}
		  mod_vcard:
		    search: false
		  mod_mam:
		    default: always
	EOF

	# ejabberdctl runs only as root (then it switches to user ejabberd with su, as a child that
	# we could not stop by pid) or as ejabberd: as root we switch with setpriv, like PostgreSQL.
	# As another user, a copy without that check runs it as ourselves.
	local run
	if [[ $EUID -eq 0 ]]; then
		id ejabberd >/dev/null 2>&1 || _sbt_die "no ejabberd user (is the ejabberd package installed?)"
		chown -R ejabberd:ejabberd "$dir"
		run="setpriv --reuid=ejabberd --regid=ejabberd --init-groups -- env -C '$dir' HOME='$dir' '$bin'"
	else
		sed 's/^INSTALLUSER=.*/INSTALLUSER=/' "$bin" >"$dir/ejabberdctl"
		chmod 0700 "$dir/ejabberdctl"
		run="env -C '$dir' HOME='$dir' '$dir/ejabberdctl'"
	fi
	cat >"$dir/ctl" <<-EOF
		#!/bin/sh
		# Generated by scripts/test-env.sh: ejabberdctl for the throwaway ejabberd in this folder.
		exec $run --config '$dir/ejabberd.yml' --ctl-config '$dir/ejabberdctl.cfg' \\
			--spool '$dir/data' --logs '$dir' "\$@"
	EOF
	chmod 0755 "$dir/ctl"

	# In the foreground, as a child of this shell: $! is ejabberdctl, whose child is the Erlang VM
	# (its pid lands in ejabberd.pid). "-quiet": only critical messages on stdout, the rest goes
	# to ejabberd.log.
	_sbt_ejabberd_started=$EPOCHREALTIME
	_sbt_ejabberd_port=$port
	"$dir/ctl" foreground-quiet </dev/null >"$dir/ejabberd.stdout" 2>&1 &
	_sbt_ejabberd_pid=$!
}

# Waits for the ejabberd of _sbt_start_ejabberd to accept connections (its Erlang VM takes ~1 s
# to boot, which the other servers' start-up overlaps), then creates the users and rosters.
_sbt_finish_ejabberd() {
	local port=$_sbt_ejabberd_port dir=$_sbt_tmp/ejabberd started=$_sbt_ejabberd_started
	local i up=""
	for ((i = 0; i < 300; i++)); do # up to 30 s; it normally takes ~1 s
		if _sbt_port_open "$port"; then
			up=1
			break
		fi
		kill -0 "$_sbt_ejabberd_pid" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $up ]]; then
		_sbt_tail "$dir/ejabberd.stdout"
		_sbt_tail "$dir/error.log"
		_sbt_die "ejabberd did not accept connections on 127.0.0.1:$port"
	fi

	# Users, then rosters. Every ctl call starts an Erlang VM (~0.3 s), so: the registrations a
	# few at a time, and one call per roster group instead of one per contact: push_roster_all
	# (mod_admin_extra) reads a list of {User, Server, Group, Nick} and gives every user in it all
	# the others, under their Group and Nick, with subscription "both" — what mod_groups does for
	# Prosody. (add_rosteritem, one side of one relation per call, would take 20 calls for Pals.)
	local entry group members member name u users=() rosters=()
	for entry in "${_sbt_ejabberd_groups[@]}"; do
		group=${entry%%:*}
		members=${entry#*:}
		local terms=()
		for member in $members; do
			[[ " ${users[*]} " == *" $member "* ]] || users+=("$member")
			name=$member
			for u in "${_sbt_xmpp_users[@]}"; do
				if [[ ${u%%:*} == "$member" ]]; then name=${u#*:}; fi
			done
			terms+=("{<<\"$member\">>, <<\"localhost\">>, <<\"$group\">>, <<\"$name\">>}")
		done
		# An Erlang term: [T1, T2, ...].
		(IFS=,; printf '[%s].\n' "${terms[*]}") >"$dir/roster-$group.erl"
		rosters+=("push_roster_all $dir/roster-$group.erl")
	done
	[[ $EUID -ne 0 ]] || chown ejabberd:ejabberd "$dir"/roster-*.erl
	for u in "${_sbt_ejabberd_loners[@]}"; do
		[[ " ${users[*]} " == *" $u "* ]] || users+=("$u")
	done
	# The c2s port opens before ejabberd has created its database tables; on a loaded machine
	# the first commands then fail with `no_exists`. Wait until a harmless read succeeds.
	for ((i = 0; i < 120; i++)); do
		"$dir/ctl" registered_users localhost >>"$dir/ctl.log" 2>&1 && break
		sleep 0.5
	done
	if ! for u in "${users[@]}"; do echo "register $u localhost $u-pw-7Q"; done |
		xargs -P 4 -L 1 "$dir/ctl" >>"$dir/ctl.log" 2>&1 ||
		! printf '%s\n' "${rosters[@]}" | xargs -P 4 -L 1 "$dir/ctl" >>"$dir/ctl.log" 2>&1; then
		_sbt_tail "$dir/ctl.log"
		_sbt_tail "$dir/error.log"
		_sbt_die "ejabberdctl could not create the test users and rosters"
	fi
	if [[ -n $(_sbt_new_epmds) ]]; then
		_sbt_log "WARNING: ejabberd started an epmd daemon (all interfaces, port 4369); it is stopped at exit"
	fi
	_sbt_log "ejabberd $(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null || true) up: 127.0.0.1:$port (domain localhost; users ${users[*]}; ready $(_sbt_since "$started") after launch)"
}

# ----------------------------------------------------------------------------------------------
# Self-check (--check): the services answer, the users log in, the rosters are as documented.
# ----------------------------------------------------------------------------------------------

_sbt_self_check() {
	local fail=0
	_sbt_log "check: SQL via psql"
	local got
	got=$(psql "$SWITCHBOARD_TEST_DATABASE_URL" -Atc 'select 1' 2>&1) || true
	[[ $got == 1 ]] || { _sbt_log "FAIL: psql select 1 gave: $got"; fail=1; }
	got=$(psql "$SWITCHBOARD_TEST_DATABASE_URL" -Atc 'show max_connections' 2>&1) || true
	[[ $got == 300 ]] || { _sbt_log "FAIL: max_connections is $got"; fail=1; }

	_sbt_log "check: listening sockets of our servers are on 127.0.0.1 only"
	if command -v ss >/dev/null; then
		local line
		while read -r line; do
			_sbt_log "  $line"
			[[ $line == *"127.0.0.1:"* ]] || { _sbt_log "FAIL: not loopback: $line"; fail=1; }
		done < <(ss -Hltnp | awk -v pids="${_sbt_prosody_pids[*]} $_sbt_pg_pid $(cat "$_sbt_tmp/ejabberd/ejabberd.pid")" '
			BEGIN { n = split(pids, p, " ") }
			{ for (i = 1; i <= n; i++) if (index($0, "pid=" p[i] ",")) { print $4; next } }')
		# The packaged services must not be running (they would listen on 5222/5269/5432, and
		# ejabberd's HTTP on 5280/5443).
		if ss -Hltn | awk '{print $4}' | grep -Eq ':(5222|5269|5280|5443|5432)$'; then
			_sbt_log "FAIL: something listens on a default XMPP/PostgreSQL port:"
			ss -Hltnp | grep -E ':(5222|5269|5280|5443|5432) ' >&2 || true
			fail=1
		fi
	fi
	local epmds
	epmds=$(_sbt_new_epmds)
	if [[ -n $epmds ]]; then
		_sbt_log "FAIL: ejabberd started an epmd daemon (pid ${epmds//$'\n'/ }), which listens on all interfaces"
		fail=1
	else
		_sbt_log "  no epmd daemon started: ok"
	fi

	_sbt_log "check: XMPP stream features, STARTTLS, login of every user, rosters (both Prosodys, ejabberd)"
	# The expected rosters below must match the header of this file.
	python3 - "$SWITCHBOARD_TEST_XMPP_SERVER" "$SWITCHBOARD_TEST_XMPP_DOMAIN" \
		"$SWITCHBOARD_TEST_XMPP_TLS_SERVER" "$SWITCHBOARD_TEST_XMPP_TLS_CA" \
		"$SWITCHBOARD_TEST_EJABBERD_SERVER" <<'PY' >&2 || fail=1
import base64, socket, ssl, sys, xml.etree.ElementTree as ET

plain_server, domain, tls_server, ca_file, ejabberd_server = sys.argv[1:6]
expected = {
    "alice":   {"bob": ("Bob", "Friends"), "carol": ("Carol", "Family"), "dave": ("Dave", "Work")},
    "alice2":  {"bob": ("Bob", "Club"), "carol": ("Carol", "Neighbours")},
    "bob":     {"alice": ("Alice", "Friends"), "alice2": ("Alice2", "Club"), "mallory": ("Mallory", "Chess")},
    "carol":   {"alice": ("Alice", "Family"), "alice2": ("Alice2", "Neighbours")},
    "dave":    {"alice": ("Alice", "Work")},
    "mallory": {"bob": ("Bob", "Chess")},
}
pals = ["ann", "ben", "cid", "dot", "eve"]
for pal in pals:
    expected[pal] = {other: (other.capitalize(), "Pals") for other in pals if other != pal}
loners = ["fay", "gus", "hal", "ivy"]
for loner in loners:
    expected[loner] = {}
OPEN = ("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % domain)
# Trusts only the throwaway CA; the certificate must be for the domain, not for 127.0.0.1.
trusting_ca = ssl.create_default_context(cafile=ca_file)

class Conn:
    def __init__(self, server):
        host, port = server.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
    def send(self, text):
        self.s.sendall(text.encode())
    def until(self, *markers):
        while not any(m.encode() in self.buf for m in markers):
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed; got: %r" % self.buf)
            self.buf += chunk
        out, self.buf = self.buf.decode(), b""
        return out
    def starttls(self, context):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        if "<proceed" not in self.until("<proceed", "<failure"):
            raise RuntimeError("the server refused STARTTLS")
        self.s = context.wrap_socket(self.s, server_hostname=domain)

def login(server, tls, user, password):
    c = Conn(server)
    c.send(OPEN)
    feats = c.until("</stream:features>")
    if tls:
        if "<starttls" not in feats or "<required" not in feats:
            raise RuntimeError("STARTTLS is not offered as required: " + feats)
        if "<mechanism>" in feats:
            raise RuntimeError("login is offered before TLS: " + feats)
        c.starttls(trusting_ca)
        c.send(OPEN)
        feats = c.until("</stream:features>")
    elif "starttls" in feats:
        raise RuntimeError("TLS is offered, expected none: " + feats)
    if "<mechanism>PLAIN</mechanism>" not in feats:
        raise RuntimeError("no PLAIN mechanism offered: " + feats)
    cred = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % cred)
    r = c.until("<success", "<failure")
    return c, "<success" in r

ok = True
for label, server, tls, users in (("Prosody (plain)", plain_server, False, list(expected)),
                                  ("Prosody (tls)", tls_server, True, list(expected)),
                                  ("ejabberd", ejabberd_server, False, pals + loners)):
    print("  %s on %s" % (label, server))
    for user in users:
        want = expected[user]
        c, success = login(server, tls, user, user + "-pw-7Q")
        if not success:
            print("FAIL: %s could not log in" % user); ok = False; continue
        c.send(OPEN); c.until("</stream:features>")
        c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<resource>check</resource></bind></iq>")
        c.until("</iq>")
        c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        text = c.until("</iq>", "/></iq>")
        start = text.index("<iq")
        iq = ET.fromstring(text[start:text.index("</iq>", start) + 5])
        got = {}
        for item in iq.iter("{jabber:iq:roster}item"):
            groups = [g.text for g in item.iter("{jabber:iq:roster}group")]
            got[item.get("jid").split("@")[0]] = (item.get("name"), ",".join(groups))
            if item.get("subscription") != "both" or not item.get("jid").endswith("@" + domain):
                print("FAIL: %s: unexpected item %s" % (user, item.attrib)); ok = False
        print("    %-8s roster: %s" % (user, ", ".join("%s@%s %r [%s]" % (j, domain, n, g)
                                                      for j, (n, g) in sorted(got.items()))))
        if got != want:
            print("FAIL: %s roster %r != expected %r" % (user, got, want)); ok = False
        c.send("</stream:stream>"); c.s.close()

    # vCards are served (XEP-0054): one user publishes its own, a contact reads it.
    vcard_users = []
    for user in (users[-1], users[-2]):
        c, success = login(server, tls, user, user + "-pw-7Q")
        c.send(OPEN); c.until("</stream:features>")
        c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<resource>check</resource></bind></iq>")
        c.until("</iq>")
        vcard_users.append(c)
    owner, reader = vcard_users
    owner.send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><NICKNAME>Checked</NICKNAME>"
               "</vCard></iq>")
    text = owner.until("id='v1'", 'id="v1"')
    if "result" not in text:
        print("FAIL: %s could not publish its vCard: %s" % (users[-1], text)); ok = False
    reader.send("<iq type='get' id='v2' to='%s@%s'><vCard xmlns='vcard-temp'/></iq>"
                % (users[-1], domain))
    text = reader.until("</iq>", "/>")
    if "<NICKNAME>Checked</NICKNAME>" not in text:
        print("FAIL: %s cannot read %s's vCard: %s" % (users[-2], users[-1], text)); ok = False
    else:
        print("    vCard published by %s, read by %s: ok" % (users[-1], users[-2]))
    for c in vcard_users:
        c.send("</stream:stream>"); c.s.close()

    # Message archives (XEP-0313): the account advertises MAM on disco#info of its bare JID.
    c, success = login(server, tls, users[0], users[0] + "-pw-7Q")
    c.send(OPEN); c.until("</stream:features>")
    c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           "<resource>check</resource></bind></iq>")
    c.until("</iq>")
    c.send("<iq type='get' id='d1' to='%s@%s'><query xmlns='http://jabber.org/protocol/disco#info'/>"
           "</iq>" % (users[0], domain))
    text = c.until("</iq>")
    if "urn:xmpp:mam:2" not in text:
        print("FAIL: %s's account does not advertise urn:xmpp:mam:2: %s" % (users[0], text)); ok = False
    else:
        print("    message archive (urn:xmpp:mam:2) advertised: ok")
    c.send("</stream:stream>"); c.s.close()

    c, success = login(server, tls, users[0], "wrong-password")
    if success:
        print("FAIL: login with a wrong password succeeded"); ok = False
    else:
        print("    wrong password refused: ok")

# The tests rely on the certificate failing without the throwaway CA (the machine's roots only).
c = Conn(tls_server)
c.send(OPEN); c.until("</stream:features>")
try:
    c.starttls(ssl.create_default_context())
    print("FAIL: the TLS Prosody's certificate is trusted without the test CA"); ok = False
except ssl.SSLCertVerificationError as e:
    print("  certificate refused without the test CA: ok (%s)" % e.verify_message)
sys.exit(0 if ok else 1)
PY
	((fail == 0)) || _sbt_die "self-check failed"
	_sbt_log "check: all ok"
}

# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

_sbt_start() {
	_sbt_epmd_before=$(_sbt_epmd_pids)
	_sbt_install_missing
	_sbt_pg_bin=$(_sbt_pg_bindir) || _sbt_die "no PostgreSQL server binaries (initdb) found"
	command -v prosody >/dev/null || _sbt_die "prosody not found"
	_sbt_ejabberdctl_bin >/dev/null || _sbt_die "ejabberdctl not found"
	command -v openssl >/dev/null || _sbt_die "openssl not found"
	if [[ $EUID -eq 0 ]]; then
		command -v setpriv >/dev/null || _sbt_die "setpriv (util-linux) is needed to run PostgreSQL as user postgres"
		id postgres >/dev/null 2>&1 || _sbt_die "no postgres user (is the postgresql package installed?)"
	fi

	trap _sbt_cleanup EXIT
	# Turn Ctrl-C / kill into a normal exit so the EXIT trap stops the servers.
	trap 'exit 130' INT
	trap 'exit 143' TERM

	_sbt_tmp=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-test.XXXXXX")
	chmod 0711 "$_sbt_tmp" # the postgres user must be able to reach its subfolder
	export SWITCHBOARD_TEST_TMPDIR=$_sbt_tmp
	if [[ $EUID -eq 0 ]]; then
		_sbt_pg_prefix=(setpriv --reuid=postgres --regid=postgres --init-groups --
			env -C "$_sbt_tmp/pg" HOME="$_sbt_tmp/pg")
	fi

	local ports pg_port xmpp_port xmpp_tls_port ejabberd_port ejabberd_dist_port spare_port
	local xmpp_direct_tls_port
	ports=$(_sbt_free_ports 7) || _sbt_die "could not find free ports on 127.0.0.1"
	read -r pg_port xmpp_port xmpp_tls_port ejabberd_port ejabberd_dist_port spare_port \
		xmpp_direct_tls_port <<<"$ports"

	_sbt_start_ejabberd "$ejabberd_port" "$ejabberd_dist_port" # boots while the others start
	_sbt_start_postgres "$pg_port"
	_sbt_start_prosody "$xmpp_port" prosody 0
	export SWITCHBOARD_TEST_XMPP_SERVER="127.0.0.1:$xmpp_port"
	export SWITCHBOARD_TEST_XMPP_DOMAIN="localhost"
	_sbt_make_certs "$_sbt_tmp/tls" test "$_sbt_xmpp_srv_domain"
	export SWITCHBOARD_TEST_XMPP_TLS_CA=$_sbt_tmp/tls/ca.pem
	_sbt_start_prosody "$xmpp_tls_port" prosody-tls 1 1 "$xmpp_direct_tls_port"
	export SWITCHBOARD_TEST_XMPP_TLS_SERVER="127.0.0.1:$xmpp_tls_port"
	export SWITCHBOARD_TEST_XMPP_DIRECT_TLS_SERVER="127.0.0.1:$xmpp_direct_tls_port"
	export SWITCHBOARD_TEST_XMPP_SRV_DOMAIN=$_sbt_xmpp_srv_domain
	_sbt_start_prosody "$spare_port" prosody-spare 0 0
	export SWITCHBOARD_TEST_XMPP_SPARE_SERVER="127.0.0.1:$spare_port"
	export SWITCHBOARD_TEST_XMPP_SPARE_CONFIG="$_sbt_tmp/prosody-spare/prosody.cfg.lua"
	local plugin
	for plugin in "${_sbt_plugins[@]}"; do
		"_sbt_${plugin}_start"
	done
	_sbt_finish_ejabberd
	export SWITCHBOARD_TEST_EJABBERD_SERVER="127.0.0.1:$ejabberd_port"
}

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
	# Sourced: start and leave the variables and the EXIT trap in the caller's shell. The caller's
	# positional arguments are not ours to interpret.
	_sbt_start
else
	case ${1:-} in
	--check)
		_sbt_start
		_sbt_self_check
		for _sbt_plugin_name in "${_sbt_plugins[@]}"; do
			"_sbt_${_sbt_plugin_name}_check" || _sbt_die "self-check of $_sbt_plugin_name failed"
		done
		;;
	-h | --help)
		sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
		;;
	"")
		_sbt_start
		printf 'export SWITCHBOARD_TEST_DATABASE_URL=%q\n' "$SWITCHBOARD_TEST_DATABASE_URL"
		printf 'export SWITCHBOARD_TEST_XMPP_SERVER=%q\n' "$SWITCHBOARD_TEST_XMPP_SERVER"
		printf 'export SWITCHBOARD_TEST_XMPP_DOMAIN=%q\n' "$SWITCHBOARD_TEST_XMPP_DOMAIN"
		printf 'export SWITCHBOARD_TEST_XMPP_TLS_SERVER=%q\n' "$SWITCHBOARD_TEST_XMPP_TLS_SERVER"
		printf 'export SWITCHBOARD_TEST_XMPP_TLS_CA=%q\n' "$SWITCHBOARD_TEST_XMPP_TLS_CA"
		printf 'export SWITCHBOARD_TEST_XMPP_DIRECT_TLS_SERVER=%q\n' "$SWITCHBOARD_TEST_XMPP_DIRECT_TLS_SERVER"
		printf 'export SWITCHBOARD_TEST_XMPP_SRV_DOMAIN=%q\n' "$SWITCHBOARD_TEST_XMPP_SRV_DOMAIN"
		printf 'export SWITCHBOARD_TEST_EJABBERD_SERVER=%q\n' "$SWITCHBOARD_TEST_EJABBERD_SERVER"
		printf 'export SWITCHBOARD_TEST_XMPP_SPARE_SERVER=%q\n' "$SWITCHBOARD_TEST_XMPP_SPARE_SERVER"
		printf 'export SWITCHBOARD_TEST_XMPP_SPARE_CONFIG=%q\n' "$SWITCHBOARD_TEST_XMPP_SPARE_CONFIG"
		for _sbt_var in "${_sbt_exports[@]}"; do
			printf 'export %s=%q\n' "$_sbt_var" "${!_sbt_var}"
		done
		_sbt_log "servers running; press Ctrl-C to stop them"
		# Short sleeps: bash runs a trap only between commands, so a TERM is handled within 1 s.
		while :; do sleep 1; done
		;;
	*)
		_sbt_start
		rc=0
		"$@" || rc=$?
		exit "$rc"
		;;
	esac
fi
