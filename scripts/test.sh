#!/usr/bin/env bash
# `make test`'s run: the lint and every test. What waits runs next to what computes:
# - the Python tooling installs (pip, about a minute) while the invariant test builds, and
#   the other tests build while it runs;
# - the lint (fmt, clippy, the template checks, cargo deny) runs next to the tests, in a
#   target directory of its own so that clippy's build never holds the tests' build lock;
# - the exactly-once invariant test is bound by its moto serving one request at a time (one
#   core of Python) and by Polar's rate limit: it runs next to all the other tests, each
#   with its own moto, so the run takes about as long as the longer of the two instead of
#   their sum;
# - the operator commands' tests (tests/ops: make status, make dlq-list/dlq-redrive,
#   STACK= resolution, verify, pause/resume, reconcile-now, put-token against a stack in
#   moto's CloudFormation, the runbook check, make smoke against the double, the moto
#   wrapper; Python, mostly waiting) run next to them too, on a moto of their own.
set -uo pipefail
cd "$(dirname "$0")/.."
invariant=every_discount_ends_exactly_once_whatever_happens_on_the_way
mkdir -p target
log=target/invariant-test.log
ops_log=target/ops-test.log
lint_log=target/lint.log
dev_env_log=target/dev-env.log

make --no-print-directory dev-env >"$dev_env_log" 2>&1 &
dev_env_pid=$!
# The invariant test first (with the function binary it spawns), so that it starts as early
# as it can; the other tests build while it runs. `--workspace` everywhere, so that features
# unify the same way and nothing is built twice.
cargo test --workspace --locked --no-run --test exactly_once_invariant || exit 1
wait "$dev_env_pid" || { cat "$dev_env_log"; exit 1; }
scripts/with-moto.sh cargo test --workspace --locked --test exactly_once_invariant -- --nocapture >"$log" 2>&1 &
invariant_pid=$!

cargo test --workspace --locked --no-run || { kill "$invariant_pid"; exit 1; }
CARGO_TARGET_DIR=target/lint make --no-print-directory lint >"$lint_log" 2>&1 &
lint_pid=$!
scripts/with-moto.sh .venv/bin/python -m unittest discover -s tests/ops -t tests/ops -v >"$ops_log" 2>&1 &
ops_pid=$!
scripts/with-moto.sh cargo test --workspace --locked --no-fail-fast -- --skip "$invariant"
rest=$?
wait "$invariant_pid"
invariant_status=$?
wait "$ops_pid"
ops_status=$?
wait "$lint_pid"
lint_status=$?
echo "---- exactly_once_invariant ($log) ----"
cat "$log"
echo "---- operator commands: tests/ops ($ops_log) ----"
cat "$ops_log"
echo "---- lint: make lint ($lint_log) ----"
cat "$lint_log"
[ "$lint_status" -eq 0 ] || echo "LINT FAILED (exit $lint_status)"
[ "$rest" -eq 0 ] && [ "$invariant_status" -eq 0 ] && [ "$ops_status" -eq 0 ] && [ "$lint_status" -eq 0 ]
