#!/usr/bin/env bash
# The package on a real systemd: boots a Debian container (systemd-nspawn, its own loopback,
# its own Redis and PostgreSQL), installs the .deb built by scripts/package.sh into it and
# checks what an operator does: start, status, journal, kill -9, watchdog, an outage, stop, a
# bad setting, the sandbox score, an upgrade and a removal. One line per check, then
# "vm-test: N passed, M failed"; exit 1 if any failed.
#
# The root file system is built once (debootstrap, ~1 min) and kept in $STREAMSINK_VM_ROOTFS
# (default /var/tmp/streamsink-rootfs); every run boots it as a throw-away overlay
# (--volatile=overlay), so runs never see each other's state. Skips (exit 0, one line saying
# why) only where this machine cannot boot a container: not root, not Linux, no cgroup file
# system, no way to install systemd-nspawn or debootstrap.
#
# Usage: scripts/vm-test.sh [--deb FILE --deb-upgrade FILE] [--keep]
#   --deb/--deb-upgrade  test these packages instead of building them (upgrade: same package,
#                        a higher version)
#   --keep               leave the container running at the end (prints how to enter it)
set -euo pipefail
cd "$(dirname "$0")/.."

# The container runs the host's Debian release, so the host-built .deb's libc fits.
CODENAME=$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)
CODENAME=${CODENAME:-bookworm}
ROOTFS=${STREAMSINK_VM_ROOTFS:-/var/tmp/streamsink-rootfs-$CODENAME}
NAME=streamsink-vm-$$
WORK="" NSPAWN_PID="" LEADER="" CGROUPS=""
DEB="" DEB_UPGRADE="" KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --deb) DEB=${2:?--deb needs a file}; shift 2 ;;
        --deb-upgrade) DEB_UPGRADE=${2:?--deb-upgrade needs a file}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) echo "vm-test: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done

say() { echo "vm-test: $*" >&2; }
fail() { echo "vm-test: $*"; exit 1; }
skip() { echo "vm-test: SKIPPED: $* (this machine cannot boot a systemd container)"; exit 0; }

# Powers the container off (SIGRTMIN+4 to its PID 1), then makes sure nothing of it is left:
# its processes (by cgroup), its cgroups, the work directory.
shutdown_container() {
    if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
        kill -s SIGRTMIN+4 "$LEADER" 2>/dev/null || true
    fi
    if [ -n "$NSPAWN_PID" ]; then
        for _ in $(seq 200); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    local cg
    for cg in $CGROUPS; do
        [ -d "$cg" ] || continue
        find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        for _ in $(seq 50); do
            find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$cg" ] || break
            sleep 0.1
        done
        [ -d "$cg" ] && echo "vm-test: could not remove the cgroup $cg" >&2
    done
    [ -z "$WORK" ] || rm -rf "$WORK"
}
on_exit() {
    if [ "$KEEP" -eq 1 ] && [ -n "$LEADER" ]; then
        say "container left running: nsenter -t $LEADER -a bash; power off: kill -s SIGRTMIN+4 $LEADER"
        return
    fi
    trap '' INT TERM # a second Ctrl-C does not cut the clean-up short
    shutdown_container
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK=$(mktemp -d /var/tmp/streamsink-vm.XXXXXX)

PASSED=0 FAILED=0
# check DESCRIPTION COMMAND...: runs the command, prints one line, counts the result.
check() {
    local what=$1
    shift
    local detail
    # Each check starts with systemd's start-rate counter at zero: the checks restart the unit
    # more often than StartLimitBurst= allows in its interval (one check tests that limit).
    [ -z "$LEADER" ] || vm systemctl reset-failed streamsink >/dev/null 2>&1 || true
    # In this shell, not a subshell: a check may advance TOTAL.
    if "$@" >"$WORK/check.out" 2>&1; then
        detail=$(tr '\n' ' ' <"$WORK/check.out" | sed 's/ *$//')
        PASSED=$((PASSED + 1))
        echo "ok   - $what${detail:+ ($detail)}"
    else
        detail=$(tr '\n' ' ' <"$WORK/check.out" | sed 's/ *$//')
        FAILED=$((FAILED + 1))
        echo "FAIL - $what${detail:+: $detail}"
    fi
}

# --- can this machine boot a container at all? ----------------------------------------------
[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" -eq 0 ] || skip "not root (systemd-nspawn needs root)"
[ -d /sys/fs/cgroup ] || skip "no cgroup file system"
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing debootstrap and systemd-container"
    # --no-install-recommends: systemd-container recommends libnss-mymachines, which rewrites
    # the host's /etc/nsswitch.conf.
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends debootstrap systemd-container >/dev/null; } ||
        skip "cannot install debootstrap and systemd-container with apt-get"
fi

# --- the root file system, built once -------------------------------------------------------
debian_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n 1 || true)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n 1 || true)
    echo "$uri"
}
if [ ! -x "$ROOTFS/usr/lib/systemd/systemd" ]; then
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || skip "no Debian mirror in apt's sources to debootstrap from"
    say "building the root file system in $ROOTFS from $mirror (once, about a minute)"
    partial=$ROOTFS.partial.$$
    rm -rf "$partial"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,redis-server,postgresql,procps,iproute2 \
        "$CODENAME" "$partial" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 20 "$WORK/debootstrap.log"; rm -rf "$partial"; fail "debootstrap failed (its log is above)"; }
    # Host names resolve through /etc/hosts (the worker is pointed at "localhost").
    [ -s "$partial/etc/hosts" ] ||
        printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$partial/etc/hosts"
    echo streamsink-vm >"$partial/etc/hostname"
    rm -rf "$ROOTFS"
    mv "$partial" "$ROOTFS"
fi

# --- the packages under test ----------------------------------------------------------------
if [ -z "$DEB" ]; then
    say "building the package (scripts/package.sh)"
    # The same build twice, the second a higher Debian revision: the upgrade under test.
    DEB=$(bash scripts/package.sh --output "$WORK/streamsink.deb")
    DEB_UPGRADE=$(bash scripts/package.sh --no-build --deb-revision 99 --output "$WORK/streamsink-upgrade.deb")
else
    [ -f "$DEB" ] && [ -f "$DEB_UPGRADE" ] || { echo "vm-test: --deb and --deb-upgrade must both name files"; exit 2; }
    cp "$DEB" "$WORK/streamsink.deb"
    cp "$DEB_UPGRADE" "$WORK/streamsink-upgrade.deb"
fi

# --- boot -----------------------------------------------------------------------------------

# nspawn must run from a cgroup of its own (no machined or system D-Bus on the host), with
# its own network namespace: the container's Redis and PostgreSQL take their standard ports.
# Hybrid hosts (these VMs) have a named systemd hierarchy and the unified one; a pure
# cgroup v2 host has only the root.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    CGROUPS=/sys/fs/cgroup/nspawn-$NAME
else
    for h in systemd unified; do
        [ -d /sys/fs/cgroup/$h ] && CGROUPS="$CGROUPS /sys/fs/cgroup/$h/nspawn-$NAME"
    done
fi
[ -n "$CGROUPS" ] || skip "no systemd or unified cgroup hierarchy under /sys/fs/cgroup"
for cg in $CGROUPS; do mkdir -p "$cg" || skip "cannot create the cgroup $cg"; done
setsid bash -c '
    for cg in '"$CGROUPS"'; do echo $$ > "$cg/cgroup.procs" || exit 97; done
    exec systemd-nspawn -D "'"$ROOTFS"'" --volatile=overlay -b --machine='"$NAME"' \
        --private-network --register=no --keep-unit --bind-ro="'"$WORK"'":/mnt/vm-test' \
    >"$WORK/boot.log" 2>&1 </dev/null &
NSPAWN_PID=$!

# The container's PID 1: nspawn's child in a pid namespace of its own (nspawn's first,
# short-lived child stays in ours).
container_init() {
    local p own
    own=$(readlink /proc/self/ns/pid)
    for p in $(pgrep -P "$NSPAWN_PID"); do
        [ "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" != "$own" ] || continue
        [ -n "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" ] && echo "$p" && return 0
    done
    return 1
}
for _ in $(seq 300); do
    LEADER=$(container_init || true)
    [ -n "$LEADER" ] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$LEADER" ]; then
    tail -n 20 "$WORK/boot.log"
    fail "systemd-nspawn did not start a container (its log is above)"
fi

# vm COMMAND...: runs a command inside the container, with a clean environment.
vm() {
    nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER=cat LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}
vmsh() { vm sh -c "$1"; }
# until SECONDS COMMAND...: true once the command succeeds, false at the deadline.
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

booted() { vm systemctl is-system-running 2>/dev/null | grep -qE '^(running|degraded)$'; }
if ! until_ok 90 booted; then
    tail -n 30 "$WORK/boot.log"
    fail "the container did not finish booting within 90 s (its log is above)"
fi
say "container booted (leader pid $LEADER)"

# --- the container's own Redis and PostgreSQL -----------------------------------------------
until_ok 30 vm redis-cli ping || { echo "vm-test: the container's Redis did not answer"; exit 1; }
PGPORT=$(vm pg_lsclusters -h | awk 'NR==1 {print $3}')
[ -n "$PGPORT" ] || { echo "vm-test: no PostgreSQL cluster in the container"; exit 1; }
until_ok 30 vm pg_isready -q -p "$PGPORT" || { echo "vm-test: the container's PostgreSQL did not answer"; exit 1; }
PGVERSION=$(vm pg_lsclusters -h | awk 'NR==1 {print $1}')
PASSWORD=vm-secret-$$-pw
sql() { vm runuser -u postgres -- psql -p "$PGPORT" -d "${2:-streamsink}" -qAtc "$1"; }
sql "CREATE ROLE streamsink LOGIN PASSWORD '$PASSWORD'" postgres
sql "CREATE DATABASE streamsink OWNER streamsink" postgres
# The worker reaches PostgreSQL over its unix socket, with a password (the sandbox has no
# account for peer authentication), and Redis over TCP by host name.
vmsh "sed -i '1i local streamsink streamsink scram-sha-256' /etc/postgresql/$PGVERSION/main/pg_hba.conf"
sql "SELECT pg_reload_conf()" postgres >/dev/null

# The cluster's own unit: stopping the postgresql.service wrapper returns before the cluster
# has stopped, and a test that publishes in that moment sees no outage at all.
pg_down() {
    vm systemctl stop "postgresql@$PGVERSION-main"
    until_ok 30 pg_silent || echo "vm-test: PostgreSQL still answers" >&2
}
pg_up() {
    vm systemctl start "postgresql@$PGVERSION-main"
    until_ok 30 vm pg_isready -q -p "$PGPORT" || echo "vm-test: PostgreSQL does not answer" >&2
}

ENV=/etc/streamsink/streamsink.env
STREAM=events:incoming
STARTING='^streamsink [0-9.]+ starting$'

rows() { sql "SELECT count(*) FROM events WHERE type = 'vm.test'"; }
pending() { vm redis-cli XPENDING "$STREAM" event-processors | head -n 1; }
unit() { vm systemctl show -p "$1" --value streamsink; }
# journal [journalctl args]: the unit's messages. Read whole into a variable before grepping:
# under pipefail, `journalctl | grep -q` fails when grep stops reading early (SIGPIPE).
journal() { vm journalctl -u streamsink --no-pager -o cat "$@"; }

# Conditions to wait for with until_ok (functions: they run in this shell).
state_is() { [ "$(unit ActiveState)" = "$1" ]; }
main_pid_changed_from() { local p; p=$(unit MainPID); [ "$p" != 0 ] && [ "$p" != "$1" ]; }
restarted_from() { main_pid_changed_from "$1" && state_is active; }
back_or_given_up() { state_is failed || restarted_from "$1"; }
status_has() { [[ $(unit StatusText) =~ $1 ]]; }
dead_letters_are() { [ "$(vm redis-cli XLEN "$STREAM:dlq")" = "$1" ]; }
rows_over() { [ "$(rows)" -gt "$1" ]; }
pg_silent() { ! vm pg_isready -q -p "$PGPORT"; }
# journal_matches PATTERN [journalctl args]
journal_matches() {
    local pattern=$1 out
    shift
    out=$(journal "$@")
    grep -q -- "$pattern" <<<"$out"
}

# publish FIRST COUNT: COUNT envelope events vm-FIRST.., sent in one pipeline.
publish() {
    local first=$1 count=$2 i file="$WORK/publish.resp"
    : >"$file"
    for ((i = first; i < first + count; i++)); do
        local json="{\"id\":\"vm-$i\",\"type\":\"vm.test\",\"timestamp\":\"2026-12-01T00:00:00Z\",\"data\":{\"n\":$i}}"
        printf '*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$5\r\nevent\r\n$%d\r\n%s\r\n' \
            "${#STREAM}" "$STREAM" "${#json}" "$json" >>"$file"
    done
    vm sh -c 'redis-cli --pipe < /mnt/vm-test/publish.resp' >/dev/null
}
wait_rows() { # wait_rows N SECONDS: prints what it saw
    local deadline=$((SECONDS + $2)) n
    while :; do
        n=$(rows 2>/dev/null || echo "?")
        if [ "$n" = "$1" ] && [ "$(pending)" = 0 ]; then echo "$n rows, 0 pending"; return 0; fi
        [ $SECONDS -lt $deadline ] || { echo "$n rows of $1, $(pending) pending after $2 s"; return 1; }
        sleep 0.3
    done
}

# --- install --------------------------------------------------------------------------------
check_installed_disabled() {
    vm apt-get install -y -qq /mnt/vm-test/streamsink.deb >"$WORK/apt.log" 2>&1 || { tail -n 5 "$WORK/apt.log"; return 1; }
    [ -x /proc/"$LEADER"/root/usr/bin/streamsink ] || { echo "no /usr/bin/streamsink"; return 1; }
    local enabled active mode
    enabled=$(vm systemctl is-enabled streamsink || true)
    active=$(vm systemctl is-active streamsink || true)
    mode=$(vm stat -c '%a %U' "$ENV")
    echo "is-enabled=$enabled is-active=$active env file=$mode"
    [ "$enabled" = disabled ] && [ "$active" = inactive ] && [ "$mode" = "600 root" ]
}
check "apt install ./streamsink_*.deb: /usr/bin/streamsink, unit shipped disabled, env file 0600" check_installed_disabled

vmsh "sed -i -e 's|^REDIS_URL=.*|REDIS_URL=redis://localhost:6379|' \
    -e 's|^DATABASE_URL=.*|DATABASE_URL=postgres://streamsink:$PASSWORD@%2Fvar%2Frun%2Fpostgresql:$PGPORT/streamsink|' \
    -e 's|^#STREAMSINK_STATS_INTERVAL=.*|STREAMSINK_STATS_INTERVAL=2s|' \
    -e 's|^#STREAMSINK_METRICS_ADDR=.*|STREAMSINK_METRICS_ADDR=127.0.0.1:9464|' $ENV"

# --- start: ready only when it can work -----------------------------------------------------
check_start_waits_for_ready() {
    pg_down
    vm systemctl enable streamsink >/dev/null 2>&1
    vm systemctl start --no-block streamsink
    # Postgres is down: the unit must stay "activating" (no READY=1) however long it waits.
    until_ok 10 state_is activating ||
        { echo "never activating: $(unit ActiveState)"; return 1; }
    local pid state sub restarts
    pid=$(unit MainPID)
    sleep 3
    state=$(unit ActiveState)
    sub=$(unit SubState)
    restarts=$(unit NRestarts)
    # Still the same process, waiting (not a worker that exited and is being restarted).
    [ "$state" = activating ] && [ "$sub" = start ] && [ "$restarts" = 0 ] && [ "$(unit MainPID)" = "$pid" ] ||
        { echo "with Postgres down: $state/$sub, NRestarts=$restarts, pid $pid -> $(unit MainPID)"; return 1; }
    pg_up
    # A blocking start returns only once READY=1 arrived: then it is active, migrated, grouped.
    vm systemctl start streamsink || { echo "systemctl start failed"; return 1; }
    state=$(unit ActiveState)
    local table group
    table=$(sql "SELECT to_regclass('events') IS NOT NULL")
    group=$(vm redis-cli XINFO GROUPS "$STREAM" | grep -c event-processors || true)
    echo "activating (one process, no restart) while Postgres was down; on return: $state, events table=$table, group=$group"
    [ "$state" = active ] && [ "$table" = t ] && [ "$group" = 1 ]
}
check "systemctl start returns only when ready (stays activating while Postgres is down)" check_start_waits_for_ready

check_status_text() {
    local text=""
    until_ok 15 status_has 'rate .*lag .*pending' || true
    text=$(unit StatusText)
    echo "StatusText=$text"
    [[ $text =~ ^rate\ [0-9]+/s,\ lag\ [0-9]+,\ pending\ [0-9]+.*(last\ commit|no\ commit\ yet) ]]
}
check "systemctl show -p StatusText carries the status line" check_status_text

# --- events, dead letters, the journal ------------------------------------------------------
TOTAL=0
check_events_land() {
    publish 0 1000
    TOTAL=1000
    wait_rows $TOTAL 60
}
check "published events land in Postgres (1000 envelopes)" check_events_land

# http PATH: the endpoint's reply (status line, headers, body), from inside the container
# (bash's /dev/tcp: the container has no curl).
http() {
    vm bash -c "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET $1 HTTP/1.0\r\n\r\n' >&3 && cat <&3"
}
check_endpoint() {
    local ready metrics inserted
    ready=$(http /health/ready) || { echo "no answer on 127.0.0.1:9464"; return 1; }
    [[ $ready =~ ^HTTP/1\.[01]\ 200 ]] || { echo "/health/ready: ${ready:0:80}"; return 1; }
    metrics=$(http /metrics)
    inserted=$(grep '^streamsink_events_inserted_total{group="event-processors"} ' <<<"$metrics" | awk '{print $2}')
    echo "/health/ready 200; /metrics: streamsink_events_inserted_total $inserted"
    [ "$inserted" = 1000 ]
}
check "under the sandbox, /health/ready answers 200 and /metrics counts the 1000 events" check_endpoint

check_cli() {
    local out code=0
    out=$(vm sh -c "set -a; . $ENV; exec streamsink check") || code=$?
    echo "exit $code; $(tail -n 1 <<<"$out"); $(grep "^$STREAM " <<<"$out" | tr -s ' ')"
    [ $code = 0 ] && grep -q "^postgres  ok" <<<"$out"
}
check "streamsink check with the service's env file (as the README shows): healthy" check_cli

BAD_ID=$(vm redis-cli XADD "$STREAM" '*' event '{not json')
check_dead_letter_warning() {
    until_ok 20 dead_letters_are 1 || { echo "no dead letter"; return 1; }
    local warn all
    warn=$(journal -p warning)
    all=$(journal)
    grep -q "malformed entry $BAD_ID" <<<"$warn" || { echo "no dead-letter warning under -p warning"; return 1; }
    # The info line `streamsink <version> starting` (a warning may quote Postgres's "the
    # database system is starting up", so the whole line is matched).
    grep -qE "$STARTING" <<<"$all" || { echo "no info line at all in the journal"; return 1; }
    if grep -qE "$STARTING" <<<"$warn"; then echo "info lines shown under -p warning"; return 1; fi
    # Priorities as DESIGN.md states them: warning 4, info 6 (not notice), debug 7.
    local info
    info=$(journal -p info..info)
    grep -qE "$STARTING" <<<"$info" ||
        { echo "the info line 'starting' is not at priority 6"; return 1; }
    echo "warning shown, info lines filtered out (they are at priority 6)"
}
check "journalctl -u streamsink -p warning: the dead-letter warning, no info lines" check_dead_letter_warning

check_structured_fields() {
    local hit
    hit=$(journal STREAM="$STREAM" ENTRY_ID="$BAD_ID")
    grep -q "malformed entry $BAD_ID" <<<"$hit" || { echo "STREAM=$STREAM ENTRY_ID=$BAD_ID finds: $hit"; return 1; }
    # An event Postgres rejects (jsonb has no \u0000) is dead-lettered under its event id.
    vm redis-cli XADD "$STREAM" '*' event '{"id":"vm-rejected","type":"vm.test","data":{"s":"a\u0000b"}}' >/dev/null
    until_ok 20 dead_letters_are 2 || { echo "the rejected row was not dead-lettered"; return 1; }
    local by_event
    by_event=$(journal EVENT_ID=vm-rejected)
    grep -q "dead-lettering" <<<"$by_event" || { echo "EVENT_ID=vm-rejected finds: $by_event"; return 1; }
    echo "STREAM= ENTRY_ID=: ${hit:0:60}; EVENT_ID=: ${by_event:0:60}"
}
check "structured field filters find the dead letters (STREAM=, ENTRY_ID=, EVENT_ID=)" check_structured_fields

# streamsink CMD ARGS...: an operator's command with the service's env file (as the README shows).
as_operator() { vm sh -c "set -a; . $ENV; exec streamsink $*"; }
check_operator_commands() {
    local status dlq published drained
    status=$(as_operator status --json) || { echo "status failed: $status"; return 1; }
    grep -q '"group":"event-processors"' <<<"$status" || { echo "status lacks the group: ${status:0:200}"; return 1; }
    dlq=$(as_operator dlq list --stream "$STREAM") || { echo "dlq list failed: $dlq"; return 1; }
    # Listed under its original id (the dead letter has an id of its own).
    grep -q "  $BAD_ID  " <<<"$dlq" || { echo "dlq list lacks $BAD_ID: $dlq"; return 1; }
    published=$(echo '{"id":"vm-published","type":"vm.test","data":{}}' | as_operator publish --stream "$STREAM")
    [ "$published" = "published=1 failed=0" ] || { echo "publish: $published"; return 1; }
    TOTAL=$((TOTAL + 1))
    drained=$(wait_rows $TOTAL 30) || { echo "the published event: $drained"; return 1; }
    echo "status lists the group, dlq list the dead letter, a published event landed ($drained)"
}
check "operator commands with the service's env file: status, dlq list, publish (README, Operating streams)" check_operator_commands

check_rust_log_filters() {
    local debug_lines='read [0-9]* entries from'
    local all debug
    all=$(journal)
    debug=$(journal -p debug..debug)
    grep -qE "$STARTING" <<<"$all" || { echo "cannot read the journal"; return 1; }
    if grep -q "$debug_lines" <<<"$debug"; then
        echo "debug records in the journal at RUST_LOG's default (info)"
        return 1
    fi
    vm mkdir -p /etc/systemd/system/streamsink.service.d
    printf '[Service]\nEnvironment=RUST_LOG=debug\n' | vm tee /etc/systemd/system/streamsink.service.d/rust-log.conf >/dev/null
    vm systemctl daemon-reload
    vm systemctl restart streamsink
    publish $TOTAL 10
    TOTAL=$((TOTAL + 10))
    local found=0
    until_ok 20 journal_matches "$debug_lines" -p debug..debug && found=1
    vm rm /etc/systemd/system/streamsink.service.d/rust-log.conf
    vm systemctl daemon-reload
    vm systemctl restart streamsink
    [ $found = 1 ] || { echo "RUST_LOG=debug: no debug record (priority 7) in the journal"; return 1; }
    local drained
    drained=$(wait_rows $TOTAL 30) || { echo "$drained"; return 1; }
    echo "none at the default, priority 7 records with RUST_LOG=debug; $drained"
}
check "RUST_LOG filters what reaches the journal (debug records only with RUST_LOG=debug)" check_rust_log_filters

check_no_secret() {
    local connecting n
    local everything
    everything=$(vm journalctl --no-pager -o cat)
    connecting=$(grep -m1 '^connecting:' <<<"$everything") ||
        { echo "no 'connecting:' line in the journal to look at"; return 1; }
    [[ $connecting == *streamsink:***@* || $connecting == *'***'* ]] || { echo "not masked: $connecting"; return 1; }
    n=$(grep -c -- "$PASSWORD" <<<"$everything" || true)
    echo "$n lines with the password; the URL is shown masked"
    [ "$n" = 0 ]
}
check "the database password never appears in the journal" check_no_secret

# --- kill -9 and the watchdog ---------------------------------------------------------------
check_kill9() {
    local pid restarts
    pid=$(unit MainPID)
    restarts=$(unit NRestarts)
    publish $TOTAL 20000
    TOTAL=$((TOTAL + 20000))
    vm kill -9 "$pid"
    local at_kill
    at_kill=$(rows)
    until_ok 30 restarted_from "$pid" ||
        { echo "not restarted: MainPID=$(unit MainPID) $(unit ActiveState)"; return 1; }
    local drained
    drained=$(wait_rows $TOTAL 90) || { echo "restarted, but $drained"; return 1; }
    echo "killed with $at_kill of $TOTAL rows written; restarted (NRestarts $restarts -> $(unit NRestarts)); $drained"
}
check "kill -9 of the main process: restarted, nothing lost (20000 events in flight)" check_kill9

check_watchdog() {
    vm mkdir -p /etc/systemd/system/streamsink.service.d
    printf '[Service]\nWatchdogSec=10s\n' | vm tee /etc/systemd/system/streamsink.service.d/watchdog.conf >/dev/null
    vm systemctl daemon-reload
    vm systemctl restart streamsink
    local pid since outcome=ok
    pid=$(unit MainPID)
    since=$(vm date '+%Y-%m-%d %H:%M:%S')
    vm kill -STOP "$pid"
    if ! until_ok 40 journal_matches "Failed with result 'watchdog'" --since "$since"; then
        vm kill -CONT "$pid" 2>/dev/null
        outcome="no watchdog failure in the journal"
    elif ! until_ok 30 restarted_from "$pid"; then
        outcome="not restarted after the watchdog"
    fi
    vm rm -f /etc/systemd/system/streamsink.service.d/watchdog.conf
    vm systemctl daemon-reload
    [ "$outcome" = ok ] || { echo "$outcome"; return 1; }
    echo "SIGSTOPped pid $pid: Result watchdog, restarted as $(unit MainPID)"
}
check "SIGSTOP: the watchdog kills and restarts it (WatchdogSec=10s for the test)" check_watchdog
vm systemctl restart streamsink

# --- a Postgres outage ----------------------------------------------------------------------
check_outage() {
    pg_down
    publish $TOTAL 500
    TOTAL=$((TOTAL + 500))
    until_ok 40 status_has 'Postgres unavailable' ||
        { pg_up; echo "StatusText never showed the outage: $(unit StatusText)"; return 1; }
    local during state later restarts
    during=$(unit StatusText)
    sleep 6 # STATUS is refreshed every 5 s: a later sample must differ (the outage's age)
    later=$(unit StatusText)
    state=$(vm systemctl is-active streamsink || true)
    restarts=$(unit NRestarts)
    pg_up
    [ "$state" = active ] && [ "$restarts" = 0 ] || { echo "unit was $state, NRestarts=$restarts during the outage"; return 1; }
    [[ $during == *"oldest pending"* && $during =~ (last\ commit|no\ commit\ yet) ]] ||
        { echo "STATUS lacks the oldest pending age or the last commit: $during"; return 1; }
    [ "$during" != "$later" ] || { echo "STATUS not refreshed in 6 s: $during"; return 1; }
    local after
    after=$(wait_rows $TOTAL 90) || { echo "$after"; return 1; }
    echo "during: active, \"$during\", 6 s later \"${later##*; }\"; after: $after"
}
check "Postgres stopped: the unit stays active, STATUS shows the outage, work resumes" check_outage

# --- stop -----------------------------------------------------------------------------------
check_stop_under_load() {
    local before=$TOTAL
    publish $TOTAL 60000
    TOTAL=$((TOTAL + 60000))
    until_ok 30 rows_over "$before" ||
        { echo "no progress before the stop"; return 1; }
    local start end state result at_stop left
    start=$(date +%s%N)
    vm systemctl stop streamsink
    end=$(date +%s%N)
    state=$(unit ActiveState)
    result=$(unit Result)
    at_stop=$(rows)
    left=$(pending)
    vm systemctl start streamsink
    local drained
    drained=$(wait_rows $TOTAL 60) || { echo "after the restart: $drained"; return 1; }
    echo "stopped in $(((end - start) / 1000000)) ms with $((at_stop - before)) of 60000 written: $state, Result=$result, $left pending; after a start: $drained"
    [ "$state" = inactive ] && [ "$result" = success ] && [ "$left" = 0 ]
}
check "systemctl stop under load: batches read are finished and acknowledged (0 pending), the rest drains after a start" check_stop_under_load

check_stop() {
    local start end ms state result
    [ "$(vm systemctl is-active streamsink)" = active ] || { echo "not running before the stop"; return 1; }
    start=$(date +%s%N)
    vm systemctl stop streamsink
    end=$(date +%s%N)
    ms=$(((end - start) / 1000000))
    state=$(unit ActiveState)
    result=$(unit Result)
    echo "idle stop took ${ms} ms: $state, Result=$result"
    [ "$state" = inactive ] && [ "$result" = success ] && [ "$ms" -le 2000 ]
}
check "systemctl stop (idle): inactive, not failed, in <= 2 s" check_stop

# --- a bad setting --------------------------------------------------------------------------
check_bad_setting() {
    vm cp "$ENV" "$ENV.good"
    vmsh "echo STREAMSINK_WORKERS=0 >> $ENV"
    local since
    since=$(vm date '+%Y-%m-%d %H:%M:%S')
    if vm systemctl start streamsink 2>/dev/null; then echo "started with WORKERS=0"; return 1; fi
    # RestartSec=2s: a restart loop would show within a few seconds.
    sleep 5
    local state restarts status journal
    state=$(unit ActiveState)
    restarts=$(unit NRestarts)
    status=$(unit ExecMainStatus)
    journal=$(journal --since "$since")
    vm mv "$ENV.good" "$ENV"
    vm systemctl reset-failed streamsink
    grep -q STREAMSINK_WORKERS <<<"$journal" || { echo "the journal does not name the setting"; return 1; }
    local errors
    errors=$(journal -p err --since "$since")
    grep -q STREAMSINK_WORKERS <<<"$errors" ||
        { echo "the refused setting is not at error priority (journalctl -p err)"; return 1; }
    echo "$state, exit status $status, NRestarts=$restarts 5 s later; journal -p err: $(grep -m1 STREAMSINK_WORKERS <<<"$journal")"
    [ "$state" = failed ] && [ "$restarts" = 0 ] && [ "$status" = 2 ]
}
check "a bad setting: fails once, names it in the journal, no restart loop" check_bad_setting

check_start_limit() {
    local since
    since=$(vm date '+%Y-%m-%d %H:%M:%S')
    vm systemctl start streamsink || { echo "cannot start"; return 1; }
    local kills=0 pid
    while [ $kills -lt 8 ] && [ "$(unit ActiveState)" = active ]; do
        pid=$(unit MainPID)
        vm kill -9 "$pid"
        kills=$((kills + 1))
        # Back as a new process (RestartSec=2s), or given up.
        until_ok 20 back_or_given_up "$pid" ||
            { echo "neither restarted nor failed after kill $kills: $(unit ActiveState)"; return 1; }
    done
    local state limit
    state=$(unit ActiveState)
    # Result= keeps the first failure (signal); the journal says why it stopped restarting.
    limit=$(journal --since "$since" | grep -m1 'Start request repeated too quickly' || true)
    vm systemctl reset-failed streamsink
    vm systemctl start streamsink
    echo "after $kills crashes: $state; journal: ${limit:-nothing about the start limit}"
    [ "$state" = failed ] && [ -n "$limit" ] && [ $kills -le 6 ]
}
check "a crash loop ends at the start limit (5 starts in 5 min): failed, not restarted again" check_start_limit

check_security() {
    local line score
    line=$(vm systemd-analyze security streamsink --no-pager | grep 'Overall exposure level')
    score=$(awk -F: '{print $2}' <<<"$line" | awk '{print $1}')
    echo "$line"
    [[ $score =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "no score read"; return 1; }
    awk -v s="$score" 'BEGIN { exit !(s + 0 <= 1.5) }'
}
check "systemd-analyze security streamsink <= 1.5" check_security

# --- TLS to Redis, the client key handed over as a credential (README, "TLS") ---------------
# make_certs DIR: a CA, a server certificate for localhost/127.0.0.1 and a client certificate.
make_certs() {
    local d=$1
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=vm-test-ca \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/san.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=streamsink -keyout "$d/client.key" -out "$d/client.csr" 2>/dev/null
    # With an extension, so a version 3 certificate (rustls refuses version 1).
    printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/client.ext" -out "$d/client.pem" 2>/dev/null
    chmod 644 "$d"/*
}
check_tls_with_credential() {
    command -v openssl >/dev/null || { echo "openssl is missing on the host (it makes the test certificates)"; return 1; }
    make_certs "$WORK/tls" || { echo "cannot make certificates"; return 1; }
    # Redis: a TLS port that wants a client certificate, beside the plain one the tests use.
    vmsh "install -d -o redis -g redis -m 750 /etc/redis/tls &&
        install -o redis -g redis -m 600 /mnt/vm-test/tls/server.key /mnt/vm-test/tls/server.pem /mnt/vm-test/tls/ca.pem /etc/redis/tls/ &&
        printf 'tls-port 6380\ntls-cert-file /etc/redis/tls/server.pem\ntls-key-file /etc/redis/tls/server.key\ntls-ca-cert-file /etc/redis/tls/ca.pem\ntls-auth-clients yes\n' >> /etc/redis/redis.conf"
    vm systemctl restart redis-server
    until_ok 20 vm redis-cli ping || { echo "redis did not come back with TLS"; return 1; }
    # The client key is root's (0600): the service's dynamic user reads it only as a credential.
    vmsh "install -m 644 /mnt/vm-test/tls/ca.pem /etc/streamsink/redis-ca.pem &&
        install -m 644 /mnt/vm-test/tls/client.pem /etc/streamsink/redis-client.pem &&
        install -m 600 /mnt/vm-test/tls/client.key /etc/streamsink/redis-client.key &&
        cp $ENV $ENV.plain &&
        sed -i -e 's|^REDIS_URL=.*|REDIS_URL=rediss://localhost:6380|' \
            -e 's|^#STREAMSINK_REDIS_CA=.*|STREAMSINK_REDIS_CA=/etc/streamsink/redis-ca.pem|' \
            -e 's|^#STREAMSINK_REDIS_CERT=.*|STREAMSINK_REDIS_CERT=/etc/streamsink/redis-client.pem|' \
            -e 's|^#STREAMSINK_REDIS_KEY=.*|STREAMSINK_REDIS_KEY=/run/credentials/streamsink.service/redis-client.key|' $ENV"
    vm mkdir -p /etc/systemd/system/streamsink.service.d
    printf '[Service]\nLoadCredential=redis-client.key:/etc/streamsink/redis-client.key\n' |
        vm tee /etc/systemd/system/streamsink.service.d/credential.conf >/dev/null
    vm systemctl daemon-reload
    local outcome=ok started=0 drained=""
    vm systemctl restart streamsink && started=1
    if [ $started = 1 ]; then
        publish $TOTAL 100
        TOTAL=$((TOTAL + 100))
        # Its only Redis is the TLS port: a start-up TLS refusal would have failed the restart.
        drained=$(wait_rows $TOTAL 30) || outcome="over TLS: $drained"
    else
        outcome="did not start: $(journal | tail -n 4 | tr '\n' ' ')"
    fi
    # Back to the plain setup for the checks that follow.
    vm rm -f /etc/systemd/system/streamsink.service.d/credential.conf
    vm mv "$ENV.plain" "$ENV"
    vm systemctl daemon-reload
    vm systemctl restart streamsink
    [ "$outcome" = ok ] || { echo "$outcome"; return 1; }
    echo "rediss://localhost:6380, private CA, client certificate, key via LoadCredential: $drained"
}
check "TLS to Redis under the sandbox: mutual TLS, the client key as a systemd credential (README, TLS)" check_tls_with_credential

# --- upgrade and removal --------------------------------------------------------------------
check_upgrade() {
    vm systemctl enable --now streamsink >/dev/null 2>&1
    local pid version
    pid=$(unit MainPID)
    vm apt-get install -y -qq /mnt/vm-test/streamsink-upgrade.deb >"$WORK/apt.log" 2>&1 || { tail -n 5 "$WORK/apt.log"; return 1; }
    until_ok 30 main_pid_changed_from "$pid" ||
        { echo "still pid $pid after the upgrade"; return 1; }
    version=$(vm dpkg-query -W -f '${Version}' streamsink)
    grep -q '^REDIS_URL=redis://localhost' /proc/"$LEADER"/root$ENV || { echo "the upgrade replaced the edited env file"; return 1; }
    until_ok 30 state_is active || { echo "not active after the upgrade"; return 1; }
    publish $TOTAL 100
    TOTAL=$((TOTAL + 100))
    local drained
    drained=$(wait_rows $TOTAL 30) || { echo "after the upgrade: $drained"; return 1; }
    echo "version $version, pid $pid -> $(unit MainPID), env file kept; $drained"
}
check "upgrading the package restarts the running service, keeps the edited env file" check_upgrade

check_remove() {
    vm apt-get remove -y -qq streamsink >"$WORK/apt.log" 2>&1 || { tail -n 5 "$WORK/apt.log"; return 1; }
    local state
    state=$(vm systemctl is-active streamsink || true)
    echo "after apt remove: $state, binary $([ -e /proc/"$LEADER"/root/usr/bin/streamsink ] && echo present || echo gone)"
    [ "$state" != active ] && [ ! -e /proc/"$LEADER"/root/usr/bin/streamsink ] &&
        ! vm pgrep -f /usr/bin/streamsink >/dev/null
}
check "removing the package stops the service" check_remove

echo "vm-test: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
