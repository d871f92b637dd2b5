#!/usr/bin/env bash
# Reads at scale (issue 13): cairn and etcd, one single-node server at a time (fresh data dir
# under /tmp), alternating cairn/etcd for --rounds rounds, each loaded with --keys keys by
# the same cairn-bench; prints markdown tables of both and their ratios, with the load average.
#
# usage: benches/compare_scale.sh CAIRN_BIN ETCD_BIN [--keys N] [--rounds R] [--val-size B]
#            [--port BASE] [--bench PATH] [--startup-only | --with-startup] [--restarts K]
#            [--compaction-only] [--data DIR]
#   Keys: /scale/p0/00000000 .. /scale/p9/..., N/10 under each of 10 prefixes (Txns of 100
#   puts, 64 clients on 8 conns). Then, per server:
#     count  count_only of /scale/ (all N keys), 1 client
#     list   /scale/p0/ (N/10 keys) walked page by page, limit 500, at the first page's
#            revision (kube-apiserver's paginated list), 1 client; and /scale/ when N <= 200k
#     get    linearizable single-key range of a random key, 1 client and 64 clients/8 conns,
#            serializable at 64
#     compact every key written again (N more revisions), then 5 s of `get` (16 clients / 4
#            conns), a physical Compact at the head revision with the same reads running,
#            5 s more: p99 during vs before and after (--compaction-only: just the two loads
#            and this)
#   --with-startup / --startup-only: per server, load N keys (--val-size, default 8), stop it
#   (SIGTERM), start it again K times (--restarts, default 2): seconds from exec to the first
#   answered linearizable range, and RSS then; the restarts alternate cairn, etcd, cairn, ...
#   Data dirs are deleted after each server, except with --data DIR: the start-up data dirs
#   live in DIR/{cairn,etcd}-start and are kept, and a dir already loaded (DIR/LABEL/loaded)
#   is not loaded again (--restarts 0 only loads; reuse needs the same --keys/--val-size).
#   Ports: cairn BASE/BASE+1, etcd BASE+10/BASE+11 (BASE=45379).
#   e.g. benches/compare_scale.sh target/release/cairn /usr/bin/etcd --keys 100000
#        benches/compare_scale.sh target/release/cairn /usr/bin/etcd --keys 2000000 --startup-only --val-size 512
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/args.sh
source "$ROOT/benches/args.sh"
take_binaries "$@"
shift 2
KEYS=100000
ROUNDS=2
VAL_SIZE=8
BASE_PORT=45379
BENCH=""
SUITE_RUN=1
STARTUP_RUN=0
RESTARTS=2
COMPACTION_ONLY=0
DATA=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --keys) KEYS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --val-size) VAL_SIZE=$2; shift 2 ;;
    --port) BASE_PORT=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    --with-startup) STARTUP_RUN=1; shift ;;
    --startup-only) STARTUP_RUN=1; SUITE_RUN=0; shift ;;
    --restarts) RESTARTS=$2; shift 2 ;;
    --compaction-only) COMPACTION_ONLY=1; shift ;;
    --data) DATA=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
((KEYS >= 10 && KEYS % 10 == 0)) || { echo "--keys must be a multiple of 10" >&2; exit 2; }
BENCH=${BENCH:-$ROOT/target/release/cairn-bench}
[[ -x $BENCH ]] || { echo "cairn-bench not found at $BENCH (cargo build --release -p cairn-bench)" >&2; exit 2; }

# shellcheck source=benches/single.sh
source "$ROOT/benches/single.sh"
single_server_work cairn-scale

PER_PREFIX=$((KEYS / 10))
RESULTS=$WORK/results.tsv
: >"$RESULTS"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# server_dir LABEL: $WORK/LABEL, or $DATA/LABEL for a start-up server with --data (kept).
server_dir() {
    if [[ -n $DATA && $1 == *-start ]]; then echo "$DATA/$1"; else echo "$WORK/$1"; fi
}

# exec_server LABEL BIN CLIENT_PORT PEER_PORT: starts BIN on LABEL's data dir (kept if there).
exec_server() {
    local label=$1 bin=$2 cport=$3 pport=$4 dir
    dir=$(server_dir "$1")
    mkdir -p "$dir/data"
    "$bin" --name "scale-$label" --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$cport" \
        --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" \
        --quota-backend-bytes 17179869184 \
        >>"$dir/server.log" 2>&1 &
    SERVER_PID=$!
}

# start_server LABEL BIN CLIENT_PORT PEER_PORT: exec, then wait for an answered range;
# wait-ready's JSON line ({"ready_s":..,"rss_bytes":..}) goes to $WORK/ready.json. (Not to
# stdout: in a $(...) subshell SERVER_PID would be lost.)
start_server() {
    local p
    for p in "$3" "$4"; do
        if port_in_use "$p"; then echo "port $p is in use; pick another --port" >&2; exit 1; fi
    done
    local t0 out
    t0=$(date +%s.%N)
    exec_server "$@"
    if ! out=$("$BENCH" --endpoints "127.0.0.1:$3" wait-ready --max-wait 900 --pid "$SERVER_PID"); then
        echo "$1 ($2) did not start; log:" >&2
        tail -n 30 "$(server_dir "$1")/server.log" >&2
        exit 1
    fi
    local t1
    t1=$(date +%s.%N)
    # seconds from exec (not from wait-ready's own start)
    echo "$out" | sed -E "s/\"ready_s\":[0-9.]+/\"ready_s\":$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')/" >"$WORK/ready.json"
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# bench ROUND LABEL NAME CPORT ARGS...: one cairn-bench run, recorded in $RESULTS.
bench() {
    local round=$1 label=$2 name=$3 cport=$4
    shift 4
    local line
    if ! line=$("$BENCH" --endpoints "127.0.0.1:$cport" --format json "$@"); then
        echo "   $label $name: cairn-bench failed" >&2
        line=${line:-'{"qps":0,"p50_ms":0,"p99_ms":0,"errors":-1}'}
    fi
    echo "   $label $name [$(loadavg)]: $line" >&2
    printf '%s\t%s\t%s\t%s\n' "$round" "$label" "$name" "$line" >>"$RESULTS"
}

# load_all ROUND LABEL CPORT PASS: N keys over the 10 prefixes; records keys/s.
load_all() {
    local round=$1 label=$2 cport=$3 pass=$4 i t0 t1
    t0=$(date +%s.%N)
    for ((i = 0; i < 10; i++)); do
        "$BENCH" --endpoints "127.0.0.1:$cport" --clients 64 --conns 8 --val-size "$VAL_SIZE" --format json \
            load "/scale/p$i/" --keys "$PER_PREFIX" >/dev/null
    done
    t1=$(date +%s.%N)
    local kps
    kps=$(awk -v a="$t0" -v b="$t1" -v n="$KEYS" 'BEGIN { printf "%.0f", n / (b - a) }')
    echo "   $label load pass $pass: $KEYS keys, $kps keys/s [$(loadavg)]" >&2
    printf '%s\t%s\t%s\t{"qps":%s}\n' "$round" "$label" "load pass $pass (keys/s)" "$kps" >>"$RESULTS"
}

# run_suite ROUND LABEL BIN CPORT PPORT
run_suite() {
    local r=$1 label=$2 bin=$3 cport=$4 pport=$5
    echo "== round $r: $label ($bin), $KEYS keys, load average $(loadavg)" >&2
    printf '%s\t%s\t%s\t{"load":"%s"}\n' "$r" "$label" "load average before" "$(loadavg)" >>"$RESULTS"
    start_server "$label" "$bin" "$cport" "$pport"
    load_all "$r" "$label" "$cport" 1
    if ((COMPACTION_ONLY)); then
        run_compaction "$r" "$label" "$cport"
        return
    fi
    local counts=20 lists=5
    ((KEYS <= 200000)) && counts=200 lists=10
    bench "$r" "$label" "count /scale/ ($KEYS keys)" "$cport" --clients 1 --total "$counts" range /scale/ --prefix --count-only
    bench "$r" "$label" "list /scale/p0/ ($PER_PREFIX keys), limit 500" "$cport" --clients 1 --total "$lists" \
        list /scale/p0/ --limit 500 --expect "$PER_PREFIX"
    if ((KEYS <= 200000)); then
        bench "$r" "$label" "list /scale/ ($KEYS keys), limit 500" "$cport" --clients 1 --total 3 \
            list /scale/ --limit 500 --expect "$KEYS"
    fi
    bench "$r" "$label" "get l, 1 client" "$cport" --clients 1 --total 5000 get /scale/p3/ --keys "$PER_PREFIX"
    bench "$r" "$label" "get l, 64 clients/8 conns" "$cport" --clients 64 --conns 8 --total 40000 get /scale/p3/ --keys "$PER_PREFIX"
    bench "$r" "$label" "get s, 64 clients/8 conns" "$cport" --clients 64 --conns 8 --total 40000 --consistency s get /scale/p3/ --keys "$PER_PREFIX"
    run_compaction "$r" "$label" "$cport"
}

# run_compaction ROUND LABEL CPORT: the second load, the compaction entry, then stops the
# server and deletes its data.
run_compaction() {
    local r=$1 label=$2 cport=$3
    load_all "$r" "$label" "$cport" 2
    bench "$r" "$label" "compaction of $KEYS revisions" "$cport" --clients 16 --conns 4 compact-during /scale/p3/ --keys "$PER_PREFIX"
    stop_server
    printf '%s\t%s\t%s\t{"bytes":%s}\n' "$r" "$label" "data dir bytes" "$(du -sb "$WORK/$label/data" | cut -f1)" >>"$RESULTS"
    rm -rf "${WORK:?}/$label"
}

# load_startup LABEL BIN CPORT PPORT: a server loaded with N keys and stopped (skipped when
# --data already holds them).
load_startup() {
    local label=$1-start bin=$2 cport=$3 pport=$4 dir
    dir=$(server_dir "$label")
    if [[ -n $DATA && -e $dir/loaded ]]; then
        echo "== startup: $label reuses $dir ($(cat "$dir/loaded"))" >&2
    else
        echo "== startup: $label ($bin), $KEYS keys of $VAL_SIZE bytes, load average $(loadavg)" >&2
        rm -rf "$dir"
        start_server "$label" "$bin" "$cport" "$pport"
        load_all start "$label" "$cport" 1
        stop_server
        echo "$KEYS keys of $VAL_SIZE bytes" >"$dir/loaded"
    fi
    printf 'start\t%s\t%s\t{"bytes":%s}\n' "$label" "data dir bytes" "$(du -sb "$dir/data" | cut -f1)" >>"$RESULTS"
}

# restart_once LABEL BIN CPORT PPORT K: restart K of a loaded server, recorded.
restart_once() {
    local label=$1-start bin=$2 cport=$3 pport=$4 k=$5 line
    start_server "$label" "$bin" "$cport" "$pport"
    line=$(cat "$WORK/ready.json")
    echo "   $label restart $k [$(loadavg)]: $line" >&2
    printf 'start\t%s\t%s\t%s\n' "$label" "restart $k" "$line" >>"$RESULTS"
    stop_server
}

if ((SUITE_RUN)); then
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then
            run_suite "$r" cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))"
            run_suite "$r" etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))"
        else
            run_suite "$r" etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))"
            run_suite "$r" cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))"
        fi
    done
fi
if ((STARTUP_RUN)); then
    load_startup cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))"
    load_startup etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))"
    for ((k = 1; k <= RESTARTS; k++)); do
        restart_once cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))" "$k"
        restart_once etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))" "$k"
    done
fi

jget() {
    local v
    v=$(sed -nE "s/.*\"$1\":(-?[0-9.eE+-]+).*/\1/p" <<<"$2")
    echo "${v:-0}"
}
int() { awk -v a="$1" 'BEGIN { printf "%.0f", a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
result() { awk -F'\t' -v r="$1" -v l="$2" -v n="$3" '$1 == r && $2 == l && $3 == n { print $4 }' "$RESULTS"; }

echo
echo "cairn \`$CAIRN_BIN\`, etcd \`$ETCD_BIN\`, $KEYS keys, values $VAL_SIZE bytes, $(nproc) cores"
if ((SUITE_RUN)); then
    for ((r = 1; r <= ROUNDS; r++)); do
        echo
        echo "round $r: load average before cairn $(result "$r" cairn "load average before" | sed -E 's/.*"load":"([^"]*)".*/\1/'), before etcd $(result "$r" etcd "load average before" | sed -E 's/.*"load":"([^"]*)".*/\1/')"
        echo
        echo "| benchmark | cairn qps | etcd qps | qps cairn/etcd | cairn p99 ms | etcd p99 ms | p99 etcd/cairn |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        awk -F'\t' -v r="$r" '$1 == r && $2 == "cairn" { print $3 }' "$RESULTS" | while IFS= read -r name; do
            a=$(result "$r" cairn "$name") b=$(result "$r" etcd "$name")
            case $name in
            "load average before") ;;
            "data dir bytes")
                printf '| data dir (MB) | %s | %s | %s | | | |\n' "$(($(jget bytes "$a") / 1000000))" "$(($(jget bytes "$b") / 1000000))" \
                    "$(ratio "$(jget bytes "$a")" "$(jget bytes "$b")")" ;;
            compaction*)
                printf '| get before / during / after %s | %s / %s / %s | %s / %s / %s | | %s / %s / %s | %s / %s / %s | |\n' "$name" \
                    "$(int "$(jget base_qps "$a")")" "$(int "$(jget during_qps "$a")")" "$(int "$(jget after_qps "$a")")" \
                    "$(int "$(jget base_qps "$b")")" "$(int "$(jget during_qps "$b")")" "$(int "$(jget after_qps "$b")")" \
                    "$(jget base_p99_ms "$a")" "$(jget during_p99_ms "$a")" "$(jget after_p99_ms "$a")" \
                    "$(jget base_p99_ms "$b")" "$(jget during_p99_ms "$b")" "$(jget after_p99_ms "$b")"
                printf '| p99 during / before, during / after; compaction s | %s, %s; %s s | %s, %s; %s s | | | | |\n' \
                    "$(ratio "$(jget during_p99_ms "$a")" "$(jget base_p99_ms "$a")")" "$(ratio "$(jget during_p99_ms "$a")" "$(jget after_p99_ms "$a")")" "$(jget compact_s "$a")" \
                    "$(ratio "$(jget during_p99_ms "$b")" "$(jget base_p99_ms "$b")")" "$(ratio "$(jget during_p99_ms "$b")" "$(jget after_p99_ms "$b")")" "$(jget compact_s "$b")" ;;
            *)
                printf '| %s | %s | %s | **%s** | %s | %s | %s |\n' "$name" "$(int "$(jget qps "$a")")" "$(int "$(jget qps "$b")")" \
                    "$(ratio "$(jget qps "$a")" "$(jget qps "$b")")" "$(jget p99_ms "$a")" "$(jget p99_ms "$b")" \
                    "$(ratio "$(jget p99_ms "$b")" "$(jget p99_ms "$a")")" ;;
            esac
        done
    done
fi
if ((STARTUP_RUN)); then
    echo
    echo "| start-up, $KEYS keys | cairn | etcd | cairn/etcd |"
    echo "|---|---:|---:|---:|"
    a=$(result start cairn-start "data dir bytes") b=$(result start etcd-start "data dir bytes")
    printf '| data dir (MB) | %s | %s | %s |\n' "$(($(jget bytes "$a") / 1000000))" "$(($(jget bytes "$b") / 1000000))" "$(ratio "$(jget bytes "$a")" "$(jget bytes "$b")")"
    for ((k = 1; k <= RESTARTS; k++)); do
        a=$(result start cairn-start "restart $k") b=$(result start etcd-start "restart $k")
        printf '| restart %s: exec to first linearizable range (s) | %s | %s | **%s** |\n' "$k" "$(jget ready_s "$a")" "$(jget ready_s "$b")" "$(ratio "$(jget ready_s "$a")" "$(jget ready_s "$b")")"
        printf '| restart %s: RSS then (MB) | %s | %s | %s |\n' "$k" "$(($(jget rss_bytes "$a") / 1000000))" "$(($(jget rss_bytes "$b") / 1000000))" "$(ratio "$(jget rss_bytes "$a")" "$(jget rss_bytes "$b")")"
    done
    grep -P '^start\t' "$RESULTS" | grep 'load pass' | cut -f2,4 | sed 's/^/load: /'
fi
