# Sourced by benches/compare_cluster.sh and benches/compare_go.sh: starts and stops a
# cluster of cairn or etcd members on 127.0.0.1 with fresh data folders under $WORK.
#
# The sourcing script sets WORK, defines `member_ready EP` (true once the member at EP
# answers), and calls `stop_cluster` on exit. Member i of a cluster at BASE listens for
# clients on BASE+10i and for peers on BASE+10i+1.

PIDS=()

# start_cluster LABEL BIN BASE N: N members named m0..; sets ENDPOINTS (comma-separated
# client addresses); waits up to 60 s until every member answers `member_ready`.
start_cluster() {
    local label=$1 bin=$2 base=$3 n=$4 i initial=""
    for ((i = 0; i < n; i++)); do
        initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 10 * i + 1))"
    done
    ENDPOINTS=""
    for ((i = 0; i < n; i++)); do
        local c=$((base + 10 * i)) p=$((base + 10 * i + 1)) dir=$WORK/$label/m$i
        rm -rf "$dir"
        mkdir -p "$dir"
        "$bin" --name "m$i" --data-dir "$dir/data" \
            --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "bench-$label" \
            >"$dir/server.log" 2>&1 &
        PIDS+=($!)
        ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:$c"
    done
    local deadline=$((SECONDS + 60)) ep
    for ep in ${ENDPOINTS//,/ }; do
        until member_ready "$ep"; do
            if ((SECONDS > deadline)); then
                echo "$label member $ep not ready after 60s" >&2
                tail -n 20 "$WORK/$label"/m*/server.log >&2
                exit 1
            fi
            sleep 0.2
        done
    done
}

# stop_cluster: kills the members started by start_cluster and waits for them.
stop_cluster() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
