#!/usr/bin/env bash
# Benchmark: streamsink against PostgreSQL's own ceiling, the naive per-event design, latency at
# a fixed rate, and (with --rss) peak memory. Runs against local Redis and PostgreSQL (started or
# installed by services.sh) in fresh databases and streams it removes afterwards.
#
#   scripts/bench.sh                 # 200 000 events
#   scripts/bench.sh --events 5000   # a quick run
#   scripts/bench.sh --rss           # also peak RSS while draining 1 000 000 events
#
# Extra arguments go to streamsink-bench (--help lists them). STREAMSINK_* variables in the
# environment reach the worker under test. Method and figures: BENCHMARKS.md.
# STREAMSINK_BENCH_BIN=path runs that bench binary (with the streamsink next to it) instead of
# building the release ones (the test suite uses it for a small run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
if [ -n "${STREAMSINK_BENCH_BIN:-}" ]; then
    exec "$STREAMSINK_BENCH_BIN" "$@"
fi
# The naive baseline is a test hook (src/hooks.rs): build the binaries with it, in a target
# directory of their own, so target/release/streamsink (what README installs) never has hooks.
cargo build --release --quiet --bins --features test-hooks --target-dir target/bench
exec ./target/bench/release/streamsink-bench "$@"
