#!/usr/bin/env bash
# Snapshot under write load (issue 10): what `etcdctl snapshot save` looping against a
# one-member server costs 64 writing clients, for cairn and etcd in the same run.
#
# usage: benches/snapshot_load.sh CAIRN_BIN ETCD_BIN [RUNS] [FILL] [PUTS]
#   For each run, cairn then etcd (etcd then cairn on even runs, so both see the same
#   machine load), each on a fresh server (127.0.0.1:42379, quota 8 GB):
#     fill   FILL (default 100000) sequential keys of 1 KiB, 64 clients on 4 conns;
#     alone  PUTS (default 40000) random puts over the key space, 64 clients on 4 conns;
#     loaded the same puts while `etcdctl snapshot save` runs in a loop;
#   then prints, per server: p99 alone, p99 loaded, ratio, rate loaded/alone, the
#   snapshots completed during the loaded phase and their mean duration (0: none
#   completed, the row measures nothing), the file size and the 1-minute load average
#   before each phase. Extra flags for the servers: CAIRN_FLAGS, ETCD_FLAGS. SNAP_DIR
#   puts the saved files elsewhere (e.g. /dev/shm: etcdctl's write and fsync of each
#   file then stay off the servers' disk, which isolates what the sending costs).
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
CAIRN_BIN=$1
ETCD_BIN=$2
RUNS=${3:-3}
FILL=${4:-100000}
PUTS=${5:-40000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/target/release/cairn-bench}
ETCDCTL=${ETCDCTL:-etcdctl}
PORT=42379
WORK=$(mktemp -d -t cairn-snapload.XXXXXX)
SERVER_PID=""
LOOP_PID=""
cleanup() {
    [[ -n $LOOP_PID ]] && kill "$LOOP_PID" 2>/dev/null && wait "$LOOP_PID" 2>/dev/null
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load1() { cut -d' ' -f1 /proc/loadavg; }
field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p" <<<"$2"; }

run_one() {
    local label=$1 bin=$2 flags=$3
    local dir=$WORK/$label
    rm -rf "$dir" && mkdir -p "$dir"
    # shellcheck disable=SC2086 # flags is a deliberate word list
    "$bin" --name bench --data-dir "$dir/data" --quota-backend-bytes 8000000000 \
        --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
        --listen-peer-urls "http://127.0.0.1:$((PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((PORT + 1))" \
        --initial-cluster "bench=http://127.0.0.1:$((PORT + 1))" $flags >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 60))
    until "$BENCH" --endpoints "127.0.0.1:$PORT" --total 1 --timeout 2 --format json range ready >/dev/null 2>&1; do
        ((SECONDS < deadline)) && kill -0 "$SERVER_PID" || { tail "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    local b=("$BENCH" --endpoints "127.0.0.1:$PORT" --clients 64 --conns 4 --format json)
    "${b[@]}" --total "$FILL" --key-space "$FILL" --sequential-keys --val-size 1024 put >/dev/null
    local l_alone alone l_loaded loaded
    l_alone=$(load1)
    alone=$("${b[@]}" --total "$PUTS" --key-space "$FILL" --val-size 1024 put)
    # snapshots in a loop: each line is one snapshot's duration in seconds
    local snap=${SNAP_DIR:-$dir}/cairn-snapload-$$.db
    (
        while :; do
            s=$(date +%s.%N)
            ETCDCTL_API=3 "$ETCDCTL" --endpoints "127.0.0.1:$PORT" snapshot save "$snap" >/dev/null 2>&1 || exit 1
            echo "$(date +%s.%N) - $s" | bc >>"$dir/snaps"
            stat -c %s "$snap" >"$dir/size"
            rm -f "$snap"
        done
    ) &
    LOOP_PID=$!
    l_loaded=$(load1)
    loaded=$("${b[@]}" --total "$PUTS" --key-space "$FILL" --val-size 1024 put)
    kill "$LOOP_PID" 2>/dev/null; wait "$LOOP_PID" 2>/dev/null || true
    LOOP_PID=""
    rm -f "$snap" "$snap.part"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    local pa pl qa ql n mean size
    pa=$(field p99_ms "$alone"); pl=$(field p99_ms "$loaded")
    qa=$(field qps "$alone"); ql=$(field qps "$loaded")
    n=$(cat "$dir/snaps" 2>/dev/null | wc -l)
    mean=$(awk '{s+=$1} END {if (NR) printf "%.2f", s/NR; else print "-"}' "$dir/snaps" 2>/dev/null || echo -)
    size=$(cat "$dir/size" 2>/dev/null || echo 0)
    printf '| %s | %.1f ms | %.1f ms | %.1f× | %.2f | %s, %s s | %d MB | %s / %s |\n' \
        "$label" "$pa" "$pl" "$(echo "$pl / $pa" | bc -l)" "$(echo "$ql / $qa" | bc -l)" "$n" "$mean" $((size / 1000000)) "$l_alone" "$l_loaded"
}

echo "| server | put p99 alone | put p99 with snapshots looping | ratio | rate with / alone | snapshots, mean duration | file | load avg alone / loaded |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for ((r = 1; r <= RUNS; r++)); do
    if ((r % 2)); then
        run_one cairn "$CAIRN_BIN" "${CAIRN_FLAGS:-}"; run_one etcd "$ETCD_BIN" "${ETCD_FLAGS:-}"
    else
        run_one etcd "$ETCD_BIN" "${ETCD_FLAGS:-}"; run_one cairn "$CAIRN_BIN" "${CAIRN_FLAGS:-}"
    fi
done
