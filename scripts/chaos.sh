#!/usr/bin/env bash
# Chaos run: drains EVENTS events (default 200000) through streamsink while breaking things
# for real: repeated kill -9 of the worker, a PostgreSQL restart, a Redis restart (AOF on).
# Everything runs against private redis-server and PostgreSQL instances on their own ports,
# in a temporary directory; the shared services are never touched.
#
#   scripts/chaos.sh [EVENTS]
#
# Ends with one line:
#   chaos: published=… rows=… duplicates=… lost=… dead_lettered=… pending=… seconds=…
# and exits non-zero if anything was lost, duplicated, dead-lettered or left pending.
# CHAOS_BIN=path uses that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh >/dev/null 2>&1 || source scripts/services.sh

EVENTS=${1:-${CHAOS_EVENTS:-200000}}
if [ -n "${CHAOS_BIN:-}" ]; then
    BIN=$CHAOS_BIN
else
    cargo build --release --quiet
    BIN=target/release/streamsink
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
WORK=$(mktemp -d /tmp/streamsink-chaos.XXXXXX)
STREAM="chaos:events"
STARTED=$(date +%s)
WORKER_PID=""
RUN=0

say() { echo "chaos: $*" >&2; }

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    say "no free port found"
    exit 1
}

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

RPORT=$(free_port)
PPORT=$(free_port)
chmod 755 "$WORK"
mkdir -p "$WORK/redis" "$WORK/pg"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$WORK/pg"

cleanup() {
    [ -n "$WORKER_PID" ] && kill -9 "$WORKER_PID" 2>/dev/null || true
    redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
    as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    if [ "${CHAOS_KEEP:-}" = "1" ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_redis() {
    redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
        --appendonly yes --appendfsync everysec --daemonize yes \
        --pidfile "$WORK/redis/redis.pid" --logfile "$WORK/redis/redis.log"
    wait_for "private redis" 10 redis-cli -p "$RPORT" ping
}

start_postgres() {
    as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg/data" -w -t 60 -l "$WORK/pg/server.log" \
        -o "-p $PPORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
}

sql() { psql "postgres://postgres@127.0.0.1:$PPORT/chaos" -qAtc "$1" 2>/dev/null; }
rows() { sql "SELECT count(*) FROM events" || echo 0; }
pending() { redis-cli -p "$RPORT" XPENDING "$STREAM" event-processors 2>/dev/null | head -n 1; }

start_worker() {
    RUN=$((RUN + 1))
    REDIS_URL="redis://127.0.0.1:$RPORT" \
        DATABASE_URL="postgres://postgres@127.0.0.1:$PPORT/chaos" \
        STREAMSINK_STREAMS="$STREAM" STREAMSINK_CLAIM_MIN_IDLE=2s STREAMSINK_CLAIM_INTERVAL=1s \
        STREAMSINK_BLOCK=1s STREAMSINK_STATS_INTERVAL=5s \
        "$BIN" run >"$WORK/worker-$RUN.log" 2>&1 &
    WORKER_PID=$!
    say "worker run $RUN started (pid $WORKER_PID)"
}

worker_alive() {
    if ! kill -0 "$WORKER_PID" 2>/dev/null; then
        say "the worker exited on its own; its log:"
        tail -n 20 "$WORK/worker-$RUN.log" >&2
        exit 1
    fi
}

wait_rows() { # wait_rows N: until at least N rows (the worker must stay up)
    local deadline=$(($(date +%s) + 900))
    while [ "$(rows)" -lt "$1" ]; do
        worker_alive
        [ "$(date +%s)" -lt "$deadline" ] || { say "timed out waiting for $1 rows"; exit 1; }
        sleep 0.2
    done
}

kill_worker() {
    kill -9 "$WORKER_PID"
    wait "$WORKER_PID" 2>/dev/null || true
    say "kill -9 at $(rows) rows, $(pending) pending"
}

# --- set up ------------------------------------------------------------------------------
as_postgres "$PGBIN/initdb" -D "$WORK/pg/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
start_postgres
psql "postgres://postgres@127.0.0.1:$PPORT/postgres" -qc "CREATE DATABASE chaos"
start_redis

say "publishing $EVENTS events"
awk -v n="$EVENTS" -v s="$STREAM" 'BEGIN {
    for (i = 0; i < n; i++) {
        if (i % 10 == 0)      ev = sprintf("{\"id\":\"chaos-%d\",\"type\":\"session.start\",\"session_id\":\"s-%d\",\"data\":{\"i\":%d}}", i, i, i);
        else if (i % 10 == 1) ev = sprintf("{\"id\":\"chaos-%d\",\"type\":\"session.end\",\"session_id\":\"s-%d\",\"data\":{\"reason\":\"done\"}}", i, i - 1);
        else                  ev = sprintf("{\"id\":\"chaos-%d\",\"type\":\"page.view\",\"session_id\":\"s-%d\",\"data\":{\"i\":%d,\"path\":\"/p/%d\"}}", i, i - i % 10, i, i % 97);
        printf "*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$5\r\nevent\r\n$%d\r\n%s\r\n", length(s), s, length(ev), ev;
    }
}' | redis-cli -p "$RPORT" --pipe >/dev/null
[ "$(redis-cli -p "$RPORT" XLEN "$STREAM")" -eq "$EVENTS" ] || { say "publishing failed"; exit 1; }

# --- break things while it drains --------------------------------------------------------
pct() { echo $((EVENTS * $1 / 100)); }
start_worker
wait_rows "$(pct 10)"; kill_worker; start_worker
wait_rows "$(pct 25)"; kill_worker; start_worker
wait_rows "$(pct 40)"
say "restarting postgres at $(rows) rows"
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null
sleep 3
worker_alive
start_postgres
wait_rows "$(pct 55)"; kill_worker; start_worker
wait_rows "$(pct 70)"
say "restarting redis (AOF) at $(rows) rows"
redis-cli -p "$RPORT" shutdown >/dev/null 2>&1 || true
# Down means down: the old server has let go of its port (a loaded machine may take a while).
wait_for "the old redis to stop" 30 bash -c "! redis-cli -p $RPORT ping"
sleep 2
worker_alive
start_redis

# --- wait for the end, then count --------------------------------------------------------
deadline=$(($(date +%s) + 900))
until [ "$(rows)" -ge "$EVENTS" ] && [ "$(pending)" = "0" ]; do
    worker_alive
    [ "$(date +%s)" -lt "$deadline" ] || { say "timed out draining"; break; }
    sleep 0.5
done
kill -TERM "$WORKER_PID"
wait "$WORKER_PID" || say "worker exit code $?"
WORKER_PID=""

rows_total=$(sql "SELECT count(*) FROM events")
distinct=$(sql "SELECT count(DISTINCT id) FROM events WHERE id LIKE 'chaos-%'")
duplicates=$((rows_total - distinct))
lost=$((EVENTS - distinct))
dead=$(redis-cli -p "$RPORT" XLEN "$STREAM:dlq")
left=$(pending)
seconds=$(($(date +%s) - STARTED))
echo "chaos: published=$EVENTS rows=$rows_total duplicates=$duplicates lost=$lost dead_lettered=$dead pending=$left seconds=$seconds"
[ "$duplicates" -eq 0 ] && [ "$lost" -eq 0 ] && [ "$dead" -eq 0 ] && [ "$left" = "0" ]
