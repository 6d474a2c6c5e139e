#!/usr/bin/env bash
# The local run: moto and the Polar double on loopback, tables and fixtures seeded, then
# the function binary is driven through the Lambda Runtime API with an event file twice:
# the first delivery syncs, the second (a duplicate) must change nothing. A DynamoDB
# Streams event (events/dynamodb-stream-*.json) is delivered, then the messages the relay
# sent to the queue (no delay locally) are delivered as the queue's event source would.
# Usage: scripts/local.sh [EVENT_FILE]   (default events/sqs-single.json)
set -euo pipefail
source "$(dirname "$0")/moto.sh"
event=${1:-events/sqs-single.json}
cd "$root"

echo "==> building the function and the dev tools"
# LOCAL_SKIP_BUILD=1: the binaries are built already (make test's own run of `make local`
# builds nothing while other cargo commands hold the build directory).
[ -n "${LOCAL_SKIP_BUILD:-}" ] || cargo build --quiet --workspace --bins

echo "==> starting moto and the Polar double"
start_moto
polar_out=$(mktemp -t polar-double.XXXXXX)
target/debug/polar-double --port 0 >"$polar_out" &
cleanup_pids+=("$!")
for _ in $(seq 1 100); do grep -q listening "$polar_out" && break; sleep 0.1; done
polar_url=$(sed -n 's/^listening on //p' "$polar_out")
[ -n "$polar_url" ] || { echo "the Polar double did not start" >&2; exit 1; }

export ORDERS_TABLE=orders SYNC_TABLE=polar-discount-sync-state
export POLAR_API_URL="$polar_url" POLAR_ACCESS_TOKEN=polar_oat_local_dev_token
# moto's account; the queues are created by the seed step.
export DEAD_LETTER_QUEUE_URL="$AWS_ENDPOINT_URL/123456789012/polar-discount-sync-dlq"
# The queue the stream relay sends to: the one the sample events come from.
export REDEMPTION_QUEUE_URL="$AWS_ENDPOINT_URL/123456789012/polar-discount-sync" STREAM_RELAY_DELAY_SECONDS=0
export RUST_LOG="${RUST_LOG:-info}"
fixtures=(.venv/bin/python scripts/local_fixtures.py --polar "${polar_url%/v1}" --fixtures events/fixtures.json --event "$event")

"${fixtures[@]}" seed
echo
"${fixtures[@]}" show "before"
stream=false
grep -q '"aws:dynamodb"' "$event" && stream=true
relayed_event=$(mktemp -t relayed-event.XXXXXX)
for delivery in 1 2; do
  echo
  echo "==> delivery $delivery of $event (function logs on stderr)"
  target/debug/lambda-invoke --event "$event" -- target/debug/polar-discount-sync
  if $stream; then
    echo "==> what the relay sent to the queue"
    "${fixtures[@]}" relayed "$relayed_event"
    if grep -q '"messageId"' "$relayed_event"; then
      echo "==> the queue delivers the relayed messages (function logs on stderr)"
      target/debug/lambda-invoke --event "$relayed_event" -- target/debug/polar-discount-sync
    fi
  fi
  "${fixtures[@]}" show "after delivery $delivery"
done
rm -f "$relayed_event"
