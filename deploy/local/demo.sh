#!/usr/bin/env bash
# Runs certflow's main job locally, from a fresh machine: starts the AWS emulator, creates
# the resources (`certflow bootstrap`), starts a worker, requests an exportable certificate
# and tags it to allow Environment=Demo (certflow:targets), starts two EC2 instances tagged Environment=Demo, sends the reference export payload to the
# intake queue, follows the job to SUCCEEDED and prints its history and the inventory row.
# Then stops everything.
#
#   deploy/local/demo.sh             # the export job
#   DEMO=engine deploy/local/demo.sh # the engine's demo workflow instead (timers, retries, a failure)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 2; }
cargo build --locked -p certflow
bin="${CARGO_TARGET_DIR:-$root/target}/debug/certflow"

export MOTO_ACM_VALIDATION_WAIT="${MOTO_ACM_VALIDATION_WAIT:-3}"
deploy/local/emulator.sh start
worker_pid=""
cleanup() {
  if [ -n "$worker_pid" ]; then kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true; fi
  deploy/local/emulator.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
# shellcheck disable=SC1091
source "$root/.local/emulator.env"
aws() { "$root/.venv/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL" --region "$AWS_REGION" "$@"; }

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
  --tags Key=certflow:targets,Value="Environment=Demo"
aws ec2 run-instances --image-id ami-12345678 --count 2 \
  --tag-specifications 'ResourceType=instance,Tags=[{Key=Environment,Value=Demo}]' \
  --query 'Instances[].InstanceId' --output text | sed 's/^/instances /'

echo
echo "==> certflow submit --wait (the reference payload, on the intake queue)"
"$bin" submit --certificate-arn "$arn" --cert-name shop --target Environment=Demo --wait

echo
echo "==> inventory row"
aws dynamodb get-item --table-name certflow-inventory \
  --key "{\"TagKeyValue\":{\"S\":\"Environment#Demo\"},\"CertificateArnCertName\":{\"S\":\"$arn#shop\"}}" \
  --query Item --output json
