#!/usr/bin/env bash
# Runs a command with a fresh moto server (DynamoDB, SQS, SSM emulator) on loopback,
# exporting the AWS SDK's standard variables so that every client in the command uses it.
# Usage: scripts/with-moto.sh COMMAND [ARGS...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
moto="$root/.venv/bin/moto_server"
[ -x "$moto" ] || { echo "moto is not installed: run 'make dev-env' first" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp -t moto.XXXXXX.log)
"$moto" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null; wait "$moto_pid" 2>/dev/null; rm -f "$log"' EXIT

for _ in $(seq 1 100); do
  if curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/"; then break; fi
  kill -0 "$moto_pid" 2>/dev/null || { cat "$log" >&2; echo "moto failed to start" >&2; exit 1; }
  sleep 0.1
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_EC2_METADATA_DISABLED=true
"$@"
