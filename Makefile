# coalmine: `make demo` tells the story against the local AWS, `make test` runs every test.
# Both install what they need on first run (scripts/setup), idempotently.

SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build test unit lint fmt demo local-aws-start local-aws-stop ci clean

setup:
	@scripts/setup

# Debug bootstraps for this machine: MiniStack runs them as the Lambda functions.
build: setup
	$(CARGO) build --workspace --bins

test: build
	scripts/with-local-aws $(CARGO) test --workspace --no-fail-fast

# Tests that need no local AWS: unit and aws-smithy-mocks tests.
unit:
	$(CARGO) test --workspace --lib

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	node_modules/.bin/asl-validator --json-path infra/statemachine/release.asl.json

fmt:
	$(CARGO) fmt --all

demo: build
	@scripts/with-local-aws $(CARGO) run --quiet -p coalmine-tests --bin demo

local-aws-start: setup
	scripts/local-aws start

local-aws-stop:
	scripts/local-aws stop

ci: lint test

clean:
	scripts/local-aws stop || true
	$(CARGO) clean
