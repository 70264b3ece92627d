#!/usr/bin/env bash
# The whole test suite, from a fresh machine: creates the Python venv with the pinned
# emulator, starts it on loopback, checks formatting and lints, runs every test against
# it, and stops it again (also on failure or Ctrl-C).
#
#   deploy/local/test.sh            # everything
#   deploy/local/test.sh -p certflow-engine   # extra arguments go to `cargo test`
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 2; }

echo "==> formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> building"
cargo build --workspace --bins --locked

echo "==> starting the AWS emulator"
# Certificates the tests request stay PENDING_VALIDATION this long (seconds).
export MOTO_ACM_VALIDATION_WAIT="${MOTO_ACM_VALIDATION_WAIT:-3}"
deploy/local/emulator.sh start
trap 'deploy/local/emulator.sh stop >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$root/.local/emulator.env"

echo "==> tests (emulator at $AWS_ENDPOINT_URL)"
cargo test --workspace --locked "$@"
