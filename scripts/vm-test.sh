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

ROOTFS=${STREAMSINK_VM_ROOTFS:-/var/tmp/streamsink-rootfs}
NAME=streamsink-vm-$$
WORK=$(mktemp -d /var/tmp/streamsink-vm.XXXXXX)
DEB="" DEB_UPGRADE="" KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --deb) DEB=$2; shift 2 ;;
        --deb-upgrade) DEB_UPGRADE=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) echo "vm-test: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done

say() { echo "vm-test: $*" >&2; }
skip() { echo "vm-test: SKIPPED: $* (this machine cannot boot a systemd container)"; exit 0; }

PASSED=0 FAILED=0
# check DESCRIPTION COMMAND...: runs the command, prints one line, counts the result.
check() {
    local what=$1
    shift
    local detail
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
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n 1)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n 1)
    echo "$uri"
}
if [ ! -x "$ROOTFS/usr/lib/systemd/systemd" ]; then
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || skip "no Debian mirror in apt's sources to debootstrap from"
    say "building the root file system in $ROOTFS from $mirror (once, about a minute)"
    rm -rf "$ROOTFS.partial"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,redis-server,postgresql,procps,iproute2 \
        bookworm "$ROOTFS.partial" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 20 "$WORK/debootstrap.log" >&2; echo "vm-test: debootstrap failed"; exit 1; }
    # Host names resolve through /etc/hosts (the worker is pointed at "localhost").
    [ -s "$ROOTFS.partial/etc/hosts" ] ||
        printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOTFS.partial/etc/hosts"
    echo streamsink-vm >"$ROOTFS.partial/etc/hostname"
    mv "$ROOTFS.partial" "$ROOTFS"
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
NSPAWN_PID="" LEADER=""
shutdown_container() {
    if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
        kill -s SIGRTMIN+4 "$LEADER" 2>/dev/null || true
    fi
    if [ -n "$NSPAWN_PID" ]; then
        for _ in $(seq 200); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    for h in systemd unified; do
        [ -d "/sys/fs/cgroup/$h/nspawn-$NAME" ] &&
            find "/sys/fs/cgroup/$h/nspawn-$NAME" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    rm -rf "$WORK"
}
on_exit() {
    if [ "$KEEP" -eq 1 ] && [ -n "$LEADER" ]; then
        say "container left running: nsenter -t $LEADER -a bash; power off: kill -s SIGRTMIN+4 $LEADER"
        return
    fi
    shutdown_container
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nspawn must run from a cgroup of its own (no machined or system D-Bus on the host), with
# its own network namespace: the container's Redis and PostgreSQL take their standard ports.
setsid bash -c '
    for h in systemd unified; do
        if [ -d /sys/fs/cgroup/$h ]; then
            mkdir -p /sys/fs/cgroup/$h/nspawn-'"$NAME"'
            echo $$ > /sys/fs/cgroup/$h/nspawn-'"$NAME"'/cgroup.procs
        fi
    done
    exec systemd-nspawn -D "'"$ROOTFS"'" --volatile=overlay -b --machine='"$NAME"' \
        --private-network --register=no --keep-unit --bind-ro="'"$WORK"'":/mnt/vm-test' \
    >"$WORK/boot.log" 2>&1 </dev/null &
NSPAWN_PID=$!

for _ in $(seq 300); do
    LEADER=$(pgrep -P "$NSPAWN_PID" | head -n 1 || true)
    [ -n "$LEADER" ] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$LEADER" ]; then
    tail -n 20 "$WORK/boot.log" >&2
    skip "systemd-nspawn did not start a container"
fi

# vm COMMAND...: runs a command inside the container, with a clean environment.
vm() { nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER=cat LANG=C.UTF-8 "$@"; }
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
    tail -n 30 "$WORK/boot.log" >&2
    echo "vm-test: the container did not finish booting within 90 s"
    exit 1
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

ENV=/etc/streamsink/streamsink.env
STREAM=events:incoming
rows() { sql "SELECT count(*) FROM events WHERE type = 'vm.test'"; }
pending() { vm redis-cli XPENDING "$STREAM" event-processors | head -n 1; }
unit() { vm systemctl show -p "$1" --value streamsink; }

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
    -e 's|^#STREAMSINK_STATS_INTERVAL=.*|STREAMSINK_STATS_INTERVAL=2s|' $ENV"

# --- start: ready only when it can work -----------------------------------------------------
check_start_waits_for_ready() {
    vm systemctl stop postgresql
    vm systemctl enable streamsink >/dev/null 2>&1
    vm systemctl start --no-block streamsink
    # Postgres is down: the unit must stay "activating" (no READY=1) however long it waits.
    until_ok 10 sh -c "[ \"\$(nsenter -t $LEADER -a systemctl show -p ActiveState --value streamsink)\" = activating ]" ||
        { echo "never activating: $(unit ActiveState)"; return 1; }
    sleep 3
    local state
    state=$(unit ActiveState)
    [ "$state" = activating ] || { echo "was $state with Postgres down"; return 1; }
    vm systemctl start postgresql
    # A blocking start returns only once READY=1 arrived: then it is active, migrated, grouped.
    vm systemctl start streamsink || { echo "systemctl start failed"; return 1; }
    state=$(unit ActiveState)
    local table group
    table=$(sql "SELECT to_regclass('events') IS NOT NULL")
    group=$(vm redis-cli XINFO GROUPS "$STREAM" | grep -c event-processors || true)
    echo "activating while Postgres was down; on return: $state, events table=$table, group=$group"
    [ "$state" = active ] && [ "$table" = t ] && [ "$group" = 1 ]
}
check "systemctl start returns only when ready (stays activating while Postgres is down)" check_start_waits_for_ready

check_status_text() {
    local text=""
    until_ok 15 sh -c "nsenter -t $LEADER -a systemctl show -p StatusText --value streamsink | grep -q 'rate .*lag .*pending'" || true
    text=$(unit StatusText)
    echo "StatusText=$text"
    [[ $text == *rate*lag*pending*last\ commit* || $text == *rate*lag*pending* ]]
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

BAD_ID=$(vm redis-cli XADD "$STREAM" '*' event '{not json')
check_dead_letter_warning() {
    until_ok 20 sh -c "[ \"\$(nsenter -t $LEADER -a redis-cli XLEN $STREAM:dlq)\" = 1 ]" || { echo "no dead letter"; return 1; }
    local warn all
    warn=$(vm journalctl -u streamsink -p warning --no-pager -o cat)
    all=$(vm journalctl -u streamsink --no-pager -o cat)
    grep -q "malformed entry $BAD_ID" <<<"$warn" || { echo "no dead-letter warning under -p warning"; return 1; }
    grep -q "starting" <<<"$all" || { echo "no info line at all in the journal"; return 1; }
    if grep -q "starting" <<<"$warn"; then echo "info lines shown under -p warning"; return 1; fi
    # Priorities as DESIGN.md states them: warning 4, info 6 (not notice), debug 7.
    vm journalctl -u streamsink -p info..info --no-pager -o cat | grep -q "starting" ||
        { echo "the info line 'starting' is not at priority 6"; return 1; }
    echo "warning shown, info lines filtered out (they are at priority 6)"
}
check "journalctl -u streamsink -p warning: the dead-letter warning, no info lines" check_dead_letter_warning

check_structured_fields() {
    local hit
    hit=$(vm journalctl -u streamsink --no-pager -o cat STREAM="$STREAM" ENTRY_ID="$BAD_ID")
    grep -q "malformed entry $BAD_ID" <<<"$hit" || { echo "STREAM=$STREAM ENTRY_ID=$BAD_ID finds: $hit"; return 1; }
    # An event Postgres rejects (jsonb has no \u0000) is dead-lettered under its event id.
    vm redis-cli XADD "$STREAM" '*' event '{"id":"vm-rejected","type":"vm.test","data":{"s":"a\u0000b"}}' >/dev/null
    until_ok 20 sh -c "[ \"\$(nsenter -t $LEADER -a redis-cli XLEN $STREAM:dlq)\" = 2 ]" || { echo "the rejected row was not dead-lettered"; return 1; }
    local by_event
    by_event=$(vm journalctl -u streamsink --no-pager -o cat EVENT_ID=vm-rejected)
    grep -q "dead-lettering" <<<"$by_event" || { echo "EVENT_ID=vm-rejected finds: $by_event"; return 1; }
    echo "STREAM= ENTRY_ID=: ${hit:0:60}; EVENT_ID=: ${by_event:0:60}"
}
check "structured field filters find the dead letters (STREAM=, ENTRY_ID=, EVENT_ID=)" check_structured_fields

check_rust_log_filters() {
    local debug_lines='read [0-9]* entries from'
    if vm journalctl -u streamsink -p debug..debug --no-pager -o cat | grep -q "$debug_lines"; then
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
    until_ok 20 sh -c "nsenter -t $LEADER -a journalctl -u streamsink -p debug..debug --no-pager -o cat | grep -q '$debug_lines'" && found=1
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
    local n
    n=$(vm journalctl --no-pager -o cat | grep -c -- "$PASSWORD" || true)
    echo "$n lines with the password"
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
    until_ok 30 sh -c "p=\$(nsenter -t $LEADER -a systemctl show -p MainPID --value streamsink); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && [ \"\$(nsenter -t $LEADER -a systemctl is-active streamsink)\" = active ]" ||
        { echo "not restarted: MainPID=$(unit MainPID) $(unit ActiveState)"; return 1; }
    local drained
    drained=$(wait_rows $TOTAL 90) || { echo "restarted, but $drained"; return 1; }
    echo "killed with $at_kill of $TOTAL rows written; restarted (NRestarts $restarts -> $(unit NRestarts)); $drained"
}
check "kill -9 of the main process: restarted, nothing lost (20000 events in flight)" check_kill9

check_watchdog() {
    vm mkdir -p /etc/systemd/system/streamsink.service.d
    printf '[Service]\nWatchdogSec=6s\n' | vm tee /etc/systemd/system/streamsink.service.d/vm-test.conf >/dev/null
    vm systemctl daemon-reload
    vm systemctl restart streamsink
    local pid since
    pid=$(unit MainPID)
    since=$(vm date '+%Y-%m-%d %H:%M:%S')
    vm kill -STOP "$pid"
    until_ok 30 sh -c "nsenter -t $LEADER -a journalctl -u streamsink --since '$since' --no-pager -o cat | grep -q \"Failed with result 'watchdog'\"" ||
        { vm kill -CONT "$pid" 2>/dev/null; echo "no watchdog failure in the journal"; return 1; }
    until_ok 30 sh -c "p=\$(nsenter -t $LEADER -a systemctl show -p MainPID --value streamsink); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && [ \"\$(nsenter -t $LEADER -a systemctl is-active streamsink)\" = active ]" ||
        { echo "not restarted after the watchdog"; return 1; }
    vm rm /etc/systemd/system/streamsink.service.d/vm-test.conf
    vm systemctl daemon-reload
    echo "SIGSTOPped pid $pid: Result watchdog, restarted as $(unit MainPID)"
}
check "SIGSTOP: the watchdog kills and restarts it (WatchdogSec=6s for the test)" check_watchdog
vm systemctl restart streamsink

# --- a Postgres outage ----------------------------------------------------------------------
check_outage() {
    vm systemctl stop postgresql
    publish $TOTAL 500
    TOTAL=$((TOTAL + 500))
    until_ok 40 sh -c "nsenter -t $LEADER -a systemctl show -p StatusText --value streamsink | grep -q 'Postgres unavailable'" ||
        { vm systemctl start postgresql; echo "StatusText never showed the outage: $(unit StatusText)"; return 1; }
    local during state
    during=$(unit StatusText)
    state=$(vm systemctl is-active streamsink || true)
    vm systemctl start postgresql
    [ "$state" = active ] || { echo "unit was $state during the outage"; return 1; }
    local after
    after=$(wait_rows $TOTAL 90) || { echo "$after"; return 1; }
    echo "during: active, \"$during\"; after: $after"
}
check "Postgres stopped: the unit stays active, STATUS shows the outage, work resumes" check_outage

# --- stop -----------------------------------------------------------------------------------
check_stop_under_load() {
    local before=$TOTAL
    publish $TOTAL 60000
    TOTAL=$((TOTAL + 60000))
    until_ok 30 sh -c "[ \"\$(nsenter -t $LEADER -a runuser -u postgres -- psql -p $PGPORT -d streamsink -qAtc \"SELECT count(*) FROM events WHERE type = 'vm.test'\")\" -gt $before ]" ||
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
    journal=$(vm journalctl -u streamsink --since "$since" --no-pager -o cat)
    vm mv "$ENV.good" "$ENV"
    vm systemctl reset-failed streamsink
    grep -q STREAMSINK_WORKERS <<<"$journal" || { echo "the journal does not name the setting"; return 1; }
    echo "$state, exit status $status, NRestarts=$restarts 5 s later; journal: $(grep -m1 STREAMSINK_WORKERS <<<"$journal")"
    [ "$state" = failed ] && [ "$restarts" = 0 ] && [ "$status" = 2 ]
}
check "a bad setting: fails once, names it in the journal, no restart loop" check_bad_setting

check_security() {
    local line score
    line=$(vm systemd-analyze security streamsink --no-pager | grep 'Overall exposure level')
    score=$(awk -F: '{print $2}' <<<"$line" | awk '{print $1}')
    echo "$line"
    awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }'
}
check "systemd-analyze security streamsink <= 1.5" check_security

# --- upgrade and removal --------------------------------------------------------------------
check_upgrade() {
    vm systemctl enable --now streamsink >/dev/null 2>&1
    local pid version
    pid=$(unit MainPID)
    vm apt-get install -y -qq /mnt/vm-test/streamsink-upgrade.deb >"$WORK/apt.log" 2>&1 || { tail -n 5 "$WORK/apt.log"; return 1; }
    until_ok 30 sh -c "p=\$(nsenter -t $LEADER -a systemctl show -p MainPID --value streamsink); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ]" ||
        { echo "still pid $pid after the upgrade"; return 1; }
    version=$(vm dpkg-query -W -f '${Version}' streamsink)
    grep -q '^REDIS_URL=redis://localhost' /proc/"$LEADER"/root$ENV || { echo "the upgrade replaced the edited env file"; return 1; }
    until_ok 30 sh -c "[ \"\$(nsenter -t $LEADER -a systemctl is-active streamsink)\" = active ]" || { echo "not active after the upgrade"; return 1; }
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
        ! pgrep -f /usr/bin/streamsink >/dev/null
}
check "removing the package stops the service" check_remove

echo "vm-test: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
