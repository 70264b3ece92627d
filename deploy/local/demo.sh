#!/usr/bin/env bash
# Runs certflow's main job locally, from a fresh machine: starts the AWS emulator and, in
# front of it, a simulated SSM fleet (the emulator has no managed servers: `fleet-proxy`
# answers SSM's Run Command operations the way AWS does, for 60 servers tagged
# Environment=Demo and 8 tagged Environment=Canary whose first server fails), creates the
# resources (`certflow bootstrap`), starts a worker, requests an exportable certificate and
# tags it to allow both targets (certflow:targets), then sends two export requests to the
# intake queue:
#   1. Environment=Demo: a staged rollout over 60 servers — the canary alone, then
#      batches of 6 — followed to SUCCEEDED, with a page of its servers and the inventory row;
#   2. Environment=Canary: the canary fails, so no other server is sent anything and the
#      job FAILS naming it.
# Then stops everything.
#
#   deploy/local/demo.sh             # the export job
#   DEMO=engine deploy/local/demo.sh # the engine's demo workflow instead (timers, retries, a failure)
#   CONSOLE=1 deploy/local/demo.sh   # then the jobs in the web console, http://127.0.0.1:8080/
#                                    # (CONSOLE_PORT to choose the port), until Ctrl-C
#   CONSOLE=1 SCREENSHOTS=docs/img deploy/local/demo.sh  # screenshots of its pages instead
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 2; }
if [ -n "${SCREENSHOTS:-}" ]; then
  cargo build --locked -p certflow -p certflow-tests --bin certflow --bin fleet-proxy --bin console-shots
else
  cargo build --locked -p certflow -p certflow-tests --bin certflow --bin fleet-proxy
fi
bin="${CARGO_TARGET_DIR:-$root/target}/debug/certflow"
fleet_bin="${CARGO_TARGET_DIR:-$root/target}/debug/fleet-proxy"

export MOTO_ACM_VALIDATION_WAIT="${MOTO_ACM_VALIDATION_WAIT:-3}"
deploy/local/emulator.sh start
worker_pid=""
fleet_pid=""
console_pid=""
cleanup() {
  if [ -n "$console_pid" ]; then kill -TERM "$console_pid" 2>/dev/null && wait "$console_pid" 2>/dev/null || true; fi
  if [ -n "$worker_pid" ]; then kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true; fi
  if [ -n "$fleet_pid" ]; then kill -TERM "$fleet_pid" 2>/dev/null && wait "$fleet_pid" 2>/dev/null || true; fi
  deploy/local/emulator.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
# shellcheck disable=SC1091
source "$root/.local/emulator.env"
aws() { "$root/.venv/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL" --region "$AWS_REGION" "$@"; }

# The simulated fleet, in front of the emulator; certflow talks to it from here on.
"$fleet_bin" --upstream "$AWS_ENDPOINT_URL" \
  --servers 60:Environment=Demo --servers 8:Environment=Canary \
  --fail "Environment=Canary:0:certflow-install: error: reloading nginx failed (exit 1); previous certificate restored" \
  >"$root/.local/demo-fleet.url" 2>"$root/.local/demo-fleet.log" &
fleet_pid=$!
for _ in $(seq 1 50); do grep -q '^FLEET_PROXY_URL=' "$root/.local/demo-fleet.url" && break; sleep 0.1; done
fleet_url=$(sed -n 's/^FLEET_PROXY_URL=//p' "$root/.local/demo-fleet.url")
[ -n "$fleet_url" ] || { echo "fleet-proxy did not start: $(cat "$root/.local/demo-fleet.log")" >&2; exit 1; }
echo "simulated fleet at $fleet_url: 60 servers tagged Environment=Demo, 8 tagged Environment=Canary (log .local/demo-fleet.log)"
export AWS_ENDPOINT_URL="$fleet_url"
# Text for people, even when the output is piped to a file.
export CERTFLOW_OUTPUT=table

"$bin" bootstrap
"$bin" worker --poll-wait-secs 1 >"$root/.local/demo-worker.log" 2>&1 &
worker_pid=$!
echo "worker running (pid $worker_pid, log .local/demo-worker.log)"

if [ "${DEMO:-export}" = engine ]; then
  "$bin" demo --jobs "${DEMO_JOBS:-3}"
  exit 0
fi

arn=$(aws acm request-certificate --domain-name shop.example.com --validation-method DNS \
  --options Export=ENABLED --query CertificateArn --output text)
echo "certificate $arn (pending validation for ${MOTO_ACM_VALIDATION_WAIT}s)"
# The certificate's owner lists where it may go; certflow refuses any other target.
aws acm add-tags-to-certificate --certificate-arn "$arn" \
  --tags Key=certflow:targets,Value="Environment=Demo Environment=Canary"

echo
echo "==> certflow submit --wait: 60 servers, canary 1, then batches of 10% (the reference payload, on the intake queue)"
"$bin" submit --certificate-arn "$arn" --cert-name shop --target Environment=Demo --wait

job=$("$bin" jobs list --status SUCCEEDED -o json | "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["Jobs"][0]["JobId"])')
echo
echo "==> certflow jobs show $job --servers all --limit 8 (a page of its servers)"
"$bin" jobs show "$job" --servers all --limit 8 | sed -n '/^Rollout/,$p'

echo
echo "==> inventory row"
aws dynamodb get-item --table-name certflow-inventory \
  --key "{\"TagKeyValue\":{\"S\":\"Environment#Demo\"},\"CertificateArnCertName\":{\"S\":\"$arn#shop\"}}" \
  --query Item --output json

echo
echo "==> certflow submit --wait: 8 servers whose canary fails (the job must FAIL, the other 7 untouched)"
if "$bin" submit --certificate-arn "$arn" --cert-name shop --target Environment=Canary --wait; then
  echo "expected the canary to stop the rollout" >&2
  exit 1
fi
echo "(the rollout stopped at the canary, as it should: exit status 1 above is the job's FAILED)"

if [ -n "${CONSOLE:-}" ]; then
  echo
  echo "==> a message that is not a request, for the console's dead letters page"
  aws sqs send-message --queue-url "$(aws sqs get-queue-url --queue-name certflow-intake --query QueueUrl --output text)" \
    --message-body 'RENEW shop.example.com PLEASE' --query MessageId --output text
  echo
  echo "==> certflow console: the jobs above in a browser"
  "$bin" console --port "${CONSOLE_PORT:-8080}" >"$root/.local/demo-console.url" &
  console_pid=$!
  for _ in $(seq 1 50); do grep -q '^certflow console: ' "$root/.local/demo-console.url" && break; sleep 0.1; done
  console_url=$(sed -n 's/^certflow console: //p' "$root/.local/demo-console.url")
  [ -n "$console_url" ] || { echo "the console did not start (is port ${CONSOLE_PORT:-8080} free? CONSOLE_PORT=… picks another)" >&2; exit 1; }
  if [ -n "${SCREENSHOTS:-}" ]; then
    sleep 3 # the worker dead-letters the message above
    "${CARGO_TARGET_DIR:-$root/target}/debug/console-shots" "$console_url" "$SCREENSHOTS"
  else
    echo "open $console_url — Ctrl-C stops the console, the worker and the emulator"
    wait "$console_pid"
  fi
fi
