#!/usr/bin/env bash
# `make test`'s test run. The exactly-once invariant test is bound by moto, which serves
# one request at a time, not by the CPU: it runs next to all the other tests, each with its
# own moto, so the run takes about as long as the longer of the two instead of their sum.
# The operator commands' tests (tests/ops: make status, make dlq-redrive, make smoke against
# the double; Python, about 15 s, mostly waiting) run next to them too, on a moto of their own.
set -uo pipefail
cd "$(dirname "$0")/.."
invariant=every_discount_ends_exactly_once_whatever_happens_on_the_way
log=target/invariant-test.log
ops_log=target/ops-test.log

# One build for all three runs: `--workspace` everywhere, so features unify the same way.
cargo test --workspace --locked --no-run || exit 1
mkdir -p target
scripts/with-moto.sh cargo test --workspace --locked --test exactly_once_invariant -- --nocapture >"$log" 2>&1 &
invariant_pid=$!
scripts/with-moto.sh .venv/bin/python -m unittest discover -s tests/ops -t tests/ops -v >"$ops_log" 2>&1 &
ops_pid=$!
scripts/with-moto.sh cargo test --workspace --locked --no-fail-fast -- --skip "$invariant"
rest=$?
wait "$invariant_pid"
invariant_status=$?
wait "$ops_pid"
ops_status=$?
echo "---- exactly_once_invariant ($log) ----"
cat "$log"
echo "---- operator commands: tests/ops ($ops_log) ----"
cat "$ops_log"
[ "$rest" -eq 0 ] && [ "$invariant_status" -eq 0 ] && [ "$ops_status" -eq 0 ]
