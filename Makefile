# coalmine: `make demo` tells the story against the local AWS, `make test` runs every test.
# Both install what they need on first run (scripts/setup), idempotently.

SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(CURDIR)/.venv/bin:$(HOME)/.cargo/bin:$(PATH)
INFRA := $(CURDIR)/.venv-infra/bin
CHECKOV := $(CURDIR)/.venv-checkov/bin/checkov
# SAM's rust-cargolambda build method is a beta feature; no telemetry from CI.
export SAM_CLI_BETA_RUST_CARGO_LAMBDA := 1
export SAM_CLI_TELEMETRY := 0
TEMPLATES := infra/template.yaml infra/example-alarms.yaml infra/router.yaml
ASL := infra/statemachine/release.asl.json


.PHONY: simulate bench setup setup-infra setup-browser bins build package deploy test test-rust test-infra unit lint lint-layers lint-docs lint-rust lint-infra fmt \
        demo local-aws-start local-aws-stop ci clean

setup:
	@scripts/setup

setup-infra: setup
	@scripts/setup-infra

# Chromium and playwright-core, for the test that opens `coalmine report`'s pages.
setup-browser: setup
	@scripts/setup-browser

TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

# Debug bootstraps for this machine (MiniStack runs them as the Lambda functions), the
# demo, and every test, in one invocation: the tests' dev-dependency features then apply
# to all of it, so `cargo test` rebuilds nothing (the SDK crates are the slow part).
bins: setup
	$(CARGO) build --workspace --all-targets

# Deployment bootstraps: release, arm64, in target/lambda/<function>/bootstrap.
build: setup
	$(CARGO) lambda build --release --arm64 --bin rollback --bin stepper --bin shadow

# `sam build`: the functions built by cargo-lambda for arm64 (the alert webhook is the
# rollback binary again), then checked to be arm64 ELF.
package: setup-infra
	$(INFRA)/sam build --template-file infra/template.yaml --build-dir .aws-sam/build --beta-features
	scripts/check-arm64 .aws-sam/build/RollbackFunction/bootstrap .aws-sam/build/StepperFunction/bootstrap \
	  .aws-sam/build/ShadowFunction/bootstrap .aws-sam/build/AlertWebhookFunction/bootstrap

# `sam deploy` with infra/samconfig.toml; the first time, a guided deploy that explains
# each parameter (scripts/deploy).
deploy: package
	scripts/deploy

test: test-rust test-infra

test-rust: bins setup-browser
	scripts/with-local-aws $(CARGO) test --workspace --no-fail-fast

# The template's tests, and a real `sam deploy` of it into the local AWS (which runs the
# debug bootstraps `bins` builds) with a release and a rollback through the stack.
test-infra: setup-infra bins
	scripts/with-local-aws $(INFRA)/python -m pytest -q tests/infra

# Tests that need no local AWS: unit and aws-smithy-mocks tests.
unit:
	$(CARGO) test --workspace --lib

lint: lint-layers lint-docs lint-rust lint-infra

# The library's layering (ARCHITECTURE.md's code map): which module may use which, release
# kinds as peers over the core, and no circle among its files.
lint-layers:
	scripts/check-layers

# Every relative link in README, ARCHITECTURE.md and docs/ resolves (file and heading).
lint-docs:
	scripts/check-links

lint-rust: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-infra: setup-infra
	node_modules/.bin/asl-validator --json-path $(ASL)
	$(INFRA)/sam validate --lint --region us-east-1 --template-file infra/template.yaml
	$(INFRA)/sam validate --lint --region us-east-1 --template-file infra/router.yaml
	$(INFRA)/cfn-lint $(TEMPLATES)
	$(CHECKOV) --framework cloudformation --compact --quiet --skip-download $(addprefix -f ,$(TEMPLATES))

fmt:
	$(CARGO) fmt --all

# Release builds, measurements against the local AWS, BENCHMARKS.md.
bench: setup
	scripts/bench

# The judge over thousands of simulated releases, both judges on identical traffic:
# false rollbacks and detection, written to SIMULATION.md (a few minutes).
simulate:
	$(CARGO) run --profile simulate -p coalmine-simulate

demo: bins
	@scripts/with-local-aws $(TARGET_DIR)/debug/demo

local-aws-start: setup
	scripts/local-aws start

local-aws-stop:
	scripts/local-aws stop

ci: lint test package

clean:
	scripts/local-aws stop || true
	$(CARGO) clean
	rm -rf .aws-sam
