# Sourced by the scripts: starts a moto server (DynamoDB, SQS, SSM emulator; requests
# serialized, see moto_server.py) on a free loopback port, exports the AWS SDK's
# standard variables for it, and stops it on exit.
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cleanup_pids=()
trap 'for pid in "${cleanup_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_moto() {
  local python="$root/.venv/bin/python" port log
  [ -x "$root/.venv/bin/moto_server" ] || { echo "moto is not installed: run 'make dev-env' first" >&2; exit 1; }
  port=$(free_port)
  log=$(mktemp -t moto.XXXXXX.log)
  "$python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  cleanup_pids+=("$!")
  for _ in $(seq 1 100); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/"; then break; fi
    kill -0 "$!" 2>/dev/null || { cat "$log" >&2; echo "moto failed to start" >&2; exit 1; }
    sleep 0.1
  done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
  export AWS_EC2_METADATA_DISABLED=true
}
