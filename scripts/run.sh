#!/usr/bin/env bash
# Runs the worker in the foreground against local Redis and PostgreSQL (started or installed
# by services.sh), reading the stream events:incoming into the database "streamsink".
# Extra arguments go to `streamsink run` (e.g. --workers 8). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/streamsink}"
db=$(psql "$TEST_DATABASE_URL" -qAtc "select 1 from pg_database where datname = 'streamsink'")
if [ "$db" != "1" ]; then
    psql "$TEST_DATABASE_URL" -qc "CREATE DATABASE streamsink"
fi
cargo build --release --quiet
exec ./target/release/streamsink run "$@"
