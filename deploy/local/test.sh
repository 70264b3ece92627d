#!/usr/bin/env bash
# The whole test suite, from a fresh machine: creates the Python venv with the pinned
# emulator, starts it on loopback, checks formatting and lints (the CloudFormation template
# too), installs headless Chromium and chromedriver (Debian's packages, for the console's
# browser tests) when missing, builds the release binary of the container image, runs every
# test against the emulator, and stops it again (also on failure or Ctrl-C).
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

echo "==> linting the CloudFormation template (cfn-lint, checkov)"
# cfn-lint runs from the emulator's venv (.venv, pinned in requirements.txt); checkov
# from a venv of its own (.venv-lint, requirements-lint.txt), whose pins conflict
# with moto's. Both are created or refreshed here when their requirements change.
deploy/local/emulator.sh setup
lint_venv="$root/.venv-lint"
lint_reqs="$root/deploy/local/requirements-lint.txt"
lint_stamp="$lint_venv/.certflow-requirements.sha256"
lint_want="$("${PYTHON:-python3}" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$lint_reqs")"
if [ ! -x "$lint_venv/bin/checkov" ] || [ "$(cat "$lint_stamp" 2>/dev/null)" != "$lint_want" ]; then
  echo "installing ${lint_reqs#"$root/"} into .venv-lint"
  rm -rf "$lint_venv"
  "${PYTHON:-python3}" -m venv "$lint_venv"
  "$lint_venv/bin/python" -m pip install --disable-pip-version-check -q -r "$lint_reqs"
  echo "$lint_want" >"$lint_stamp"
fi
template=deploy/cloudformation/certflow.yaml
.venv/bin/cfn-lint "$template"
# checkov evaluates Conditions with the parameters' defaults, so the optional REST
# endpoint (EnableApi, default "false") is also scanned in a copy defaulting to "true".
mkdir -p .local
with_api=.local/certflow-with-api.yaml
sed '/^  EnableApi:$/,/^  [A-Za-z]/ s/^    Default: "false"$/    Default: "true"/' "$template" >"$with_api"
if cmp -s "$template" "$with_api"; then
  echo "could not switch EnableApi's default in a copy of $template" >&2
  exit 1
fi
# Likewise the optional alerts topic (AlertEmail, default empty).
with_alerts=.local/certflow-with-alerts.yaml
sed '/^  AlertEmail:$/,/^  [A-Za-z]/ s/^    Default: ""$/    Default: "ops@example.com"/' "$template" >"$with_alerts"
if cmp -s "$template" "$with_alerts"; then
  echo "could not switch AlertEmail's default in a copy of $template" >&2
  exit 1
fi
LOG_LEVEL=ERROR .venv-lint/bin/checkov --quiet --compact --skip-download \
  --framework cloudformation -f "$template" -f "$with_api" -f "$with_alerts"

echo "==> browser for the console tests"
# The console's end-to-end tests drive headless Chromium through chromedriver
# (tests/src/browser.rs). Debian's packages, installed only when either is missing.
if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then
  echo "chromium and chromedriver already installed"
else
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian's chromium and chromium-driver"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver
  echo "installed: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?'); $(/usr/bin/chromedriver --version 2>/dev/null || echo 'chromedriver ?')"
fi

echo "==> building"
cargo build --workspace --bins --locked
# The release binary deploy/Dockerfile copies into the image (about 7 minutes from clean,
# with the whole-program optimisation of Cargo.toml's release profile; there is no Docker
# engine in CI, so this is how far a broken image build is caught).
cargo build --release --locked -p certflow

echo "==> starting the AWS emulator"
# Certificates the tests request stay PENDING_VALIDATION this long (seconds).
export MOTO_ACM_VALIDATION_WAIT="${MOTO_ACM_VALIDATION_WAIT:-3}"
deploy/local/emulator.sh start
trap 'deploy/local/emulator.sh stop >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$root/.local/emulator.env"

echo "==> tests (emulator at $AWS_ENDPOINT_URL)"
cargo test --workspace --locked "$@"
