#!/usr/bin/env bash
# A private Redis Cluster for tests and the benchmark: 6 redis-server processes (3 masters, each
# with one replica) on 127.0.0.1, ports BASE … BASE+5 and their cluster buses BASE+10000 …,
# everything (nodes.conf, logs, pid files) under DIR. Never touches the shared Redis.
#
#   scripts/redis-cluster.sh start DIR [BASE]   # BASE: a free one from 22000 up; waits until every node
#                                               # reports cluster_state:ok, prints the seed list
#   scripts/redis-cluster.sh stop DIR           # stops every node started in DIR
#
# With REDIS_CLUSTER_PASSWORD set, every node requires it (clients and replicas alike). With
# REDIS_CLUSTER_TLS_DIR set (holding ca.pem, node.pem, node.key; the certificate for both
# server and client authentication: each node is a client of the others' buses), every node
# speaks TLS only, to clients, replicas and on the cluster bus.
#
# `start` prints one line, `cluster: 127.0.0.1:22000,…,127.0.0.1:22005`, and exits non-zero
# (after stopping what it started) if the cluster is not ok within 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-} dir=${2:-}
if [ -z "$dir" ] || { [ "$action" != start ] && [ "$action" != stop ]; }; then
    echo "usage: scripts/redis-cluster.sh start|stop DIR [BASE]" >&2
    exit 2
fi

stop() {
    local pids=() pidfile pid
    for pidfile in "$dir"/*/redis.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        # A node killed with -9 leaves its pid file behind, and the pid may be another's now.
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] && pids+=("$pid")
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -f "$dir"/*/redis.pid
}

if [ "$action" = stop ]; then
    stop
    exit 0
fi

# The bus ports (BASE+10000 …) stay below Linux's ephemeral range (32768 and up), where a
# client's own port could take one. Without BASE: the first of 22000, 22010, … whose twelve
# ports nothing listens on.
base=${3:-}
if [ -z "$base" ]; then
    for candidate in $(seq 22000 10 22690); do
        taken=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://' |
            awk -v b="$candidate" '($1 >= b && $1 < b + 6) || ($1 >= b + 10000 && $1 < b + 10006)' | head -1)
        if [ -z "$taken" ]; then base=$candidate; break; fi
    done
    [ -n "$base" ] || { echo "redis-cluster: no free ports from 22000 to 22695" >&2; exit 1; }
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    source scripts/services.sh >&2 # installs Redis where it is missing
fi
auth=()
if [ -n "${REDIS_CLUSTER_PASSWORD:-}" ]; then
    auth=(--requirepass "$REDIS_CLUSTER_PASSWORD" --masterauth "$REDIS_CLUSTER_PASSWORD")
    export REDISCLI_AUTH=$REDIS_CLUSTER_PASSWORD # redis-cli reads it (redis-server gets it as an argument: a test cluster)
fi
cli=()
if [ -n "${REDIS_CLUSTER_TLS_DIR:-}" ]; then
    tls=$REDIS_CLUSTER_TLS_DIR
    auth+=(--tls-cluster yes --tls-replication yes --tls-auth-clients no
        --tls-cert-file "$tls/node.pem" --tls-key-file "$tls/node.key" --tls-ca-cert-file "$tls/ca.pem")
    cli=(--tls --cacert "$tls/ca.pem")
fi
# The port a node listens on: its TLS port when TLS is on (its clear-text port then closed).
listen() {
    if [ ${#cli[@]} -gt 0 ]; then echo --port 0 --tls-port "$1"; else echo --port "$1"; fi
}
ports=$(seq "$base" $((base + 5)))
mkdir -p "$dir"
for port in $ports; do
    mkdir -p "$dir/$port"
    rm -f "$dir/$port/nodes.conf" # a fresh cluster each start
    # shellcheck disable=SC2046 # two or four words
    redis-server $(listen "$port") --bind 127.0.0.1 --protected-mode no --daemonize yes \
        --dir "$dir/$port" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 2000 --appendonly no --save '' \
        --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" "${auth[@]}"
done
for port in $ports; do
    for _ in $(seq 100); do redis-cli "${cli[@]}" -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
nodes=$(for port in $ports; do printf '127.0.0.1:%s ' "$port"; done)
# shellcheck disable=SC2086 # one argument per node
# `create` waits for the nodes to meet with no end of its own: 60 s is plenty.
if ! timeout 60 redis-cli "${cli[@]}" --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1; then
    echo "redis-cluster: create failed (see $dir/create.log)" >&2
    stop
    exit 1
fi
# Ready: every node sees all slots served and three replicas (roles spread by gossip, after
# `create` has returned), and every replica has synced from its master (one that never has
# refuses to fail over: "Disconnected from master for longer than allowed").
ready() {
    redis-cli "${cli[@]}" -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok' &&
        [ "$(redis-cli "${cli[@]}" -p "$1" cluster nodes 2>/dev/null | grep -cE '[ ,]slave ')" = 3 ] &&
        redis-cli "${cli[@]}" -p "$1" info replication 2>/dev/null | grep -qE '^(role:master|master_link_status:up)'
}
deadline=$((SECONDS + 30))
for port in $ports; do
    until ready "$port"; do
        if [ $SECONDS -ge $deadline ]; then
            echo "redis-cluster: node $port not ok after 30 s (see $dir/$port/redis.log)" >&2
            stop
            exit 1
        fi
        sleep 0.1
    done
done
echo "cluster: $(echo $nodes | tr ' ' ',')"
