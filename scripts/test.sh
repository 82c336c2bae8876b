#!/usr/bin/env bash
# Runs the whole test suite against real Redis and PostgreSQL (started or installed by
# services.sh): formatting, lints, unit and integration tests. Extra arguments go to the
# test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; fi
if cargo clippy --version >/dev/null 2>&1; then cargo clippy --all-targets --quiet -- -D warnings; fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast "$@"
else
    cargo test --no-fail-fast "$@"
fi
