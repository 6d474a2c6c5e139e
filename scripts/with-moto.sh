#!/usr/bin/env bash
# Runs a command with a fresh moto server on loopback; every AWS SDK client in the
# command talks to it through AWS_ENDPOINT_URL.
# Usage: scripts/with-moto.sh COMMAND [ARGS...]
set -euo pipefail
source "$(dirname "$0")/moto.sh"
start_moto
"$@"
