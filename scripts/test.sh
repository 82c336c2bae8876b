#!/usr/bin/env bash
# Runs the whole test suite against real Redis and PostgreSQL (started or installed by
# services.sh): formatting, lints, unit and integration tests, then the .deb under a real
# systemd (scripts/vm-test.sh). Extra arguments go to the
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

status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --features test-hooks --no-fail-fast "$@" || status=$?
else
    cargo test --features test-hooks --no-fail-fast "$@" || status=$?
fi

# The package under a real systemd (a Debian container; about two minutes, once more the first
# time to build its root file system). Skipped when a test filter was given, or with
# STREAMSINK_VM_TEST=0; it skips itself, saying why, where the machine cannot boot a container.
if [ $# -eq 0 ] && [ "${STREAMSINK_VM_TEST:-1}" != 0 ]; then
    bash scripts/vm-test.sh || status=1
fi
exit $status
