# One place for every developer and CI command. `make help` lists them.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(HOME)/.cargo/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install build proto dev test test-rust test-py lint format bench bench-quick clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

.stamp-install: $(BIN)/python pyproject.toml sdk/pyproject.toml
	$(BIN)/pip install --quiet -e "./sdk[encryption]" -e ".[dev]"
	touch $@

install: .stamp-install ## create .venv and install the SDK, the daemon and dev tools

.stamp-build: .stamp-install $(shell find core_rs/src core_rs/Cargo.toml -type f 2>/dev/null)
	rm -f service/durably_server/_core*.so
	cd $(CURDIR) && VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/maturin develop --release --quiet --skip-install
	touch $@

build: .stamp-build ## build the Rust core into the virtualenv (release)

proto: install ## regenerate the Python stubs from proto/
	$(BIN)/python proto/generate.py

dev: build ## set up, then start `durably dev` on 127.0.0.1:7070 with ./.durably/dev.db
	$(BIN)/durably dev

test-rust: ## cargo test of the Rust core
	cargo test --quiet --manifest-path core_rs/Cargo.toml

test-py: build ## pytest: unit and black-box tests with real daemon and worker processes
	$(BIN)/pytest -q

lint: install ## ruff, mypy --strict, cargo fmt --check, clippy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MYPYPATH=service:sdk $(BIN)/mypy service/durably_server sdk/durably bench
	cargo fmt --manifest-path core_rs/Cargo.toml --check
	cargo fmt --manifest-path bench/native/Cargo.toml --check
	cargo fmt --manifest-path bench/native/gateway/Cargo.toml --check
	cargo clippy --quiet --manifest-path core_rs/Cargo.toml --all-targets -- -D warnings

test: build lint test-rust test-py ## set up from nothing, lint, and run every test (what CI runs)

format: install ## apply ruff and cargo fmt
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cargo fmt --manifest-path core_rs/Cargo.toml
	cargo fmt --manifest-path bench/native/Cargo.toml
	cargo fmt --manifest-path bench/native/gateway/Cargo.toml

bench: build ## run the benchmark suite (see bench/README.md)
	$(BIN)/python -m bench

bench-quick: build ## a short smoke run of the benchmarks
	$(BIN)/python -m bench --quick

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) core_rs/target .stamp-* service/durably_server/_core*.so
