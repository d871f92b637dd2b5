#!/usr/bin/env bash
# Runs the same cairn-bench suite against a cairn and an etcd binary, one after
# the other (each single-node on loopback with a fresh temp data dir), and
# prints a markdown table comparing them.
#
# usage: benches/compare.sh CAIRN_BIN ETCD_BIN [--total N] [--bench PATH] [--port BASE]
#   Ports: cairn client BASE, peer BASE+1; etcd client BASE+10, peer BASE+11 (BASE=32379).
#   e.g. benches/compare.sh target/release/cairn /usr/bin/etcd
#        benches/compare.sh /usr/bin/etcd /usr/bin/etcd --total 5000   # self-check
set -euo pipefail

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
CAIRN_BIN=$1
ETCD_BIN=$2
shift 2
TOTAL=20000
BENCH=""
BASE_PORT=32379
while [[ $# -gt 0 ]]; do
    case $1 in
    --total) TOTAL=$2; shift 2 ;;
    --total=*) TOTAL=${1#*=}; shift ;;
    --bench) BENCH=$2; shift 2 ;;
    --bench=*) BENCH=${1#*=}; shift ;;
    --port) BASE_PORT=$2; shift 2 ;;
    --port=*) BASE_PORT=${1#*=}; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

for b in "$CAIRN_BIN" "$ETCD_BIN"; do
    [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $BENCH ]]; then
    BENCH=$ROOT/target/release/cairn-bench
    if [[ ! -x $BENCH ]]; then
        echo "building cairn-bench (release)..." >&2
        (cd "$ROOT" && cargo build --release -p cairn-bench >&2)
    fi
fi
[[ -x $BENCH ]] || { echo "cairn-bench not found at $BENCH" >&2; exit 2; }

WORK=$(mktemp -d -t cairn-compare.XXXXXX)
SERVER_PID=""
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# name | cairn-bench arguments (global flags, then subcommand)
SUITE=(
    "put 1 client|--clients 1 --conns 1 put"
    "put 64 clients/8 conns|--clients 64 --conns 8 put"
    "range l 64 clients|--clients 64 --conns 8 --consistency l range foo --prepopulate"
    "range s 64 clients|--clients 64 --conns 8 --consistency s range foo --prepopulate"
    "update 64 clients|--clients 64 --conns 8 --key-space 1000 update"
)

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_server LABEL BIN CLIENT_PORT PEER_PORT: starts it in the background and
# waits until a Range call succeeds.
start_server() {
    local label=$1 bin=$2 cport=$3 pport=$4
    local dir=$WORK/$label
    mkdir -p "$dir/data"
    local p
    for p in "$cport" "$pport"; do
        if port_in_use "$p"; then
            echo "port $p is already in use; pick another base with --port" >&2
            exit 1
        fi
    done
    "$bin" --name "bench-$label" --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$cport" \
        --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" \
        >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 60))
    until "$BENCH" --endpoints "127.0.0.1:$cport" --total 1 --timeout 2 --format json \
        range cairn-bench-ready >/dev/null 2>&1; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$label ($bin) exited during startup; log:" >&2
            tail -n 30 "$dir/server.log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "$label ($bin) not ready after 60s; log:" >&2
            tail -n 30 "$dir/server.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "$label exited right after startup" >&2; exit 1; }
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# run_suite LABEL BIN CLIENT_PORT PEER_PORT: results go to $WORK/LABEL.jsonl
run_suite() {
    local label=$1 bin=$2 cport=$3 pport=$4
    echo "== $label: $bin (127.0.0.1:$cport)" >&2
    start_server "$label" "$bin" "$cport" "$pport"
    local out=$WORK/$label.jsonl
    : >"$out"
    local entry name args line
    for entry in "${SUITE[@]}"; do
        name=${entry%%|*}
        args=${entry#*|}
        # shellcheck disable=SC2086 # args is a deliberate word list
        if line=$("$BENCH" --endpoints "127.0.0.1:$cport" --total "$TOTAL" --format json $args); then
            :
        else
            echo "   $name: cairn-bench failed" >&2
            line=${line:-'{"qps":0,"p50_ms":0,"p99_ms":0,"errors":-1}'}
        fi
        echo "   $name: $line" >&2
        printf '%s\t%s\n' "$name" "$line" >>"$out"
    done
    stop_server
}

# jget KEY JSON: the value of a numeric key in a flat JSON object.
jget() {
    local v
    v=$(sed -nE "s/.*\"$1\":(-?[0-9.eE+-]+).*/\1/p" <<<"$2")
    echo "${v:-0}"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

run_suite cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))"
run_suite etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))"

echo
echo "cairn: \`$CAIRN_BIN\`, etcd: \`$ETCD_BIN\`, $TOTAL requests per benchmark, $(nproc) cores"
echo
echo "| benchmark | cairn qps | etcd qps | qps cairn/etcd | cairn p50 ms | etcd p50 ms | p50 cairn/etcd | cairn p99 ms | etcd p99 ms | p99 cairn/etcd | errors cairn/etcd |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
paste "$WORK/cairn.jsonl" "$WORK/etcd.jsonl" | while IFS=$'\t' read -r name a _ b; do
    aq=$(jget qps "$a") bq=$(jget qps "$b")
    a50=$(jget p50_ms "$a") b50=$(jget p50_ms "$b")
    a99=$(jget p99_ms "$a") b99=$(jget p99_ms "$b")
    ae=$(jget errors "$a") be=$(jget errors "$b")
    printf '| %s | %.0f | %.0f | %s | %.3f | %.3f | %s | %.3f | %.3f | %s | %s/%s |\n' \
        "$name" "$aq" "$bq" "$(ratio "$aq" "$bq")" "$a50" "$b50" "$(ratio "$a50" "$b50")" \
        "$a99" "$b99" "$(ratio "$a99" "$b99")" "$ae" "$be"
done
