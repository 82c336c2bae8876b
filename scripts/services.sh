#!/usr/bin/env bash
# Makes sure Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) are running locally:
# starts them if stopped, installs them with apt-get if missing. Idempotent; safe to re-run.
# Also installs redis-server/initdb binaries the fault tests use for private instances, and
# systemd-analyze, which the unit file test needs (it fails without it).
#
# Sourced by run.sh and test.sh; run directly to just bring the services up.
# Exports TEST_REDIS_URL and TEST_DATABASE_URL for the test suite.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0

log() { echo "services: $*" >&2; }

apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
    local what=$1 secs=$2
    shift 2
    for _ in $(seq $((secs * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "$what did not come up within ${secs}s"
    return 1
}

# --- Redis -------------------------------------------------------------------------------
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting redis-server on 127.0.0.1:6379"
    mkdir -p /tmp/streamsink-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/streamsink-redis --logfile /tmp/streamsink-redis/redis.log
    wait_for "redis" 10 redis-cli -h 127.0.0.1 -p 6379 ping
fi

# --- systemd-analyze (tests/systemd.rs verifies the unit with it) ------------------------
command -v systemd-analyze >/dev/null || apt_install systemd

# --- PostgreSQL --------------------------------------------------------------------------
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bindir)" ] || ! command -v psql >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql postgresql-client
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$version" ]; then
        version=$(basename "$(dirname "$(pg_bindir)")")
        log "creating cluster $version/main"
        $SUDO pg_createcluster "$version" main >/dev/null
    fi
    log "starting postgresql $version/main"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for "postgresql" 30 pg_isready -h 127.0.0.1 -p 5432 -q
fi

# The tests and the worker connect as postgres over TCP. Where the server wants a password
# (a fresh Debian install), give the role the one the URLs below carry; trust auth ignores it.
export PGCONNECT_TIMEOUT=5
if ! psql "postgres://postgres:postgres@127.0.0.1:5432/postgres" -qAtc "select 1" >/dev/null 2>&1; then
    log "setting a local password for role postgres"
    $SUDO runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
fi

export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
log "redis and postgresql are up"
