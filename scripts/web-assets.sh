#!/usr/bin/env bash
# scripts/web-assets.sh — make sure the GraphiQL page's browser files are installed locally.
#
# The server serves GraphiQL at GET /graphql from these files (SWITCHBOARD_WEB_ASSETS, default
# web/node_modules), never from a CDN: the machines it runs on may have no internet, and a page
# that pulls scripts from elsewhere renders nothing there. The versions are pinned in
# web/package.json and locked in web/package-lock.json; `npm ci` installs exactly the lock.
#
# Installs only when a file is missing or the lock changed since the last install, so it is cheap
# to run before every test run or server start. Prints the paths of the four files on success.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
web=$repo/web
modules=$web/node_modules

# The files the GraphiQL page loads, relative to web/node_modules. graphiql 3.x ships its UMD
# bundle (React and ReactDOM are taken from globals; graphql and codemirror are bundled in) and its
# stylesheet (fonts inlined as data: URLs) at the package root, not under dist/.
assets=(
	"react/umd/react.production.min.js"
	"react-dom/umd/react-dom.production.min.js"
	"graphiql/graphiql.min.js"
	"graphiql/graphiql.min.css"
)

need_install=""
for asset in "${assets[@]}"; do
	[[ -f $modules/$asset ]] || need_install=1
done
# npm records what it installed in node_modules/.package-lock.json; a newer package-lock.json
# (e.g. a version bump pulled from git) means node_modules is stale.
if [[ ! -f $modules/.package-lock.json || $web/package-lock.json -nt $modules/.package-lock.json ]]; then
	need_install=1
fi

if [[ -n $need_install ]]; then
	if ! command -v npm >/dev/null; then
		# Node.js and npm come with the machine image; on a bare Debian, take Debian's.
		if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
			echo "[web-assets] npm not found: installing Debian's nodejs and npm" >&2
			DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
			DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
				--no-install-recommends nodejs npm >/dev/null
		else
			echo "[web-assets] ERROR: npm is needed to install web/node_modules" >&2
			exit 1
		fi
	fi
	echo "[web-assets] npm ci in web/ (from web/package-lock.json)" >&2
	npm ci --no-audit --no-fund --prefix "$web" >&2
fi

missing=0
for asset in "${assets[@]}"; do
	if [[ -f $modules/$asset ]]; then
		echo "web/node_modules/$asset"
	else
		echo "[web-assets] ERROR: missing web/node_modules/$asset" >&2
		missing=1
	fi
done
exit "$missing"
