#!/usr/bin/env bash
# scripts/run.sh — the project's run command: `scripts/run.sh [serve args...]`.
# Installs the GraphiQL browser files if needed (served at GET /graphql from local files, never a
# CDN), then builds and runs the server in release mode: `switchboard serve "$@"`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# Its list of asset paths goes to stderr: stdout stays the server's own.
bash scripts/web-assets.sh >&2
export SWITCHBOARD_WEB_ASSETS=${SWITCHBOARD_WEB_ASSETS:-$repo/web/node_modules}

exec cargo run --release -- serve "$@"
