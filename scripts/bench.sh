#!/usr/bin/env bash
# Benchmark: streamsink against PostgreSQL's own ceiling, the naive per-event design, latency at
# a fixed rate, and (with --rss) peak memory. Runs against local Redis and PostgreSQL (started or
# installed by services.sh) in fresh databases and streams it removes afterwards.
#
#   scripts/bench.sh                 # 200 000 events
#   scripts/bench.sh --events 5000   # a quick run
#   scripts/bench.sh --rss           # also peak RSS while draining 1 000 000 events
#   scripts/bench.sh --cluster       # only: 16 shards on the local Redis against the same on a
#                                    # private 3-master Redis Cluster (scripts/redis-cluster.sh)
#
# Extra arguments go to streamsink-bench (--help lists them). STREAMSINK_* variables in the
# environment reach the worker under test. Method and figures: BENCHMARKS.md.
# STREAMSINK_BENCH_BIN=path runs that bench binary (with the streamsink next to it) instead of
# building the release ones (the test suite uses it for a small run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
# --cluster: a private cluster for this run, stopped on exit; the bench gets its URL.
args=()
cluster_dir=
for arg in "$@"; do
    if [ "$arg" = --cluster ]; then
        cluster_dir=$(mktemp -d /tmp/streamsink-bench-cluster.XXXXXX)
    else
        args+=("$arg")
    fi
done
if [ -n "$cluster_dir" ]; then
    trap 'scripts/redis-cluster.sh stop "$cluster_dir"; rm -rf "$cluster_dir"' EXIT
    seeds=$(scripts/redis-cluster.sh start "$cluster_dir" | sed -n 's/^cluster: //p')
    args+=(--cluster-url "redis+cluster://$seeds")
fi
set -- "${args[@]}"
if [ -n "${STREAMSINK_BENCH_BIN:-}" ]; then
    "$STREAMSINK_BENCH_BIN" "$@"
    exit
fi
# The naive baseline is a test hook (src/hooks.rs): build the binaries with it, in a target
# directory of their own, so target/release/streamsink (what README installs) never has hooks.
cargo build --release --quiet --bins --features test-hooks --target-dir target/bench
./target/bench/release/streamsink-bench "$@"
