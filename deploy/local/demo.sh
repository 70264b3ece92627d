#!/usr/bin/env bash
# Runs certflow's main job locally, from a fresh machine: starts the AWS emulator, creates
# the resources, starts a worker, pushes a few demo jobs through it and prints their final
# status and history; then stops everything.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 2; }
cargo build --locked -p certflow
bin="${CARGO_TARGET_DIR:-$root/target}/debug/certflow"

deploy/local/emulator.sh start
worker_pid=""
cleanup() {
  if [ -n "$worker_pid" ]; then kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true; fi
  deploy/local/emulator.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
# shellcheck disable=SC1091
source "$root/.local/emulator.env"

"$bin" bootstrap
"$bin" worker --poll-wait-secs 1 >"$root/.local/demo-worker.log" 2>&1 &
worker_pid=$!
echo "worker running (pid $worker_pid, log .local/demo-worker.log)"
"$bin" demo --jobs "${DEMO_JOBS:-3}"
