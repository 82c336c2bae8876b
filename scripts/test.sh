#!/usr/bin/env bash
# Runs the whole test suite against real Redis and PostgreSQL (started or installed by
# services.sh): formatting, lints, unit and integration tests. Extra arguments go to the
# test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; fi
# Lints for the release build and for the test build (which adds the test hooks, src/hooks.rs).
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --all-targets --quiet -- -D warnings
    cargo clippy --all-targets --quiet --features test-hooks -- -D warnings
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --features test-hooks --no-fail-fast "$@"
else
    cargo test --features test-hooks --no-fail-fast "$@"
fi
