#!/usr/bin/env bash
# cairn vs etcd in the same run, driven by etcd's own Go load tool (`benchmark`, built from a
# pinned go.etcd.io/etcd/v3 by benches/etcd-benchmark/build.sh). It speaks clientv3, the
# client kube-apiserver uses, so it checks cairn-bench's ratios with a client that costs what
# a Go client costs: on two cores its CPU competes with the server's.
#
# usage: benches/compare_go.sh CAIRN_BIN ETCD_BIN [--members 1|3] [--total N] [--rounds R]
#            [--keys K] [--port BASE]
#   Each round starts a fresh cluster of each kind (cairn first in odd rounds, etcd first in
#   even ones), and runs the suite:
#   range of one key on an almost empty store (linearizable at 1 and 64 clients, serializable
#   at 64), put (1 client; 64 clients on 8 connections; random keys of 100,000), then loads K keys (default 100000, sequential 8-byte keys,
#   64 clients) and runs range of one key at 64 clients, a count-only range over every key and
#   the first page (limit 500) of that range. 1-client entries run N/10 requests, others N
#   (default 20000). With 3 members the clients' connections are spread over all of them.
#   Ports: cairn member i at BASE+10i (client) and +1 (peer), etcd at BASE+100+...
#   (BASE=52379). Prints one markdown table per round and the median ratio over the rounds.
#   e.g. benches/compare_go.sh target/release/cairn /usr/bin/etcd --members 3 --rounds 2
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/args.sh
source "$ROOT/benches/args.sh"
take_binaries "$@"
shift 2
MEMBERS=1
TOTAL=20000
ROUNDS=1
KEYS=100000
BASE_PORT=52379
while [[ $# -gt 0 ]]; do
    case $1 in
    --members) MEMBERS=$2; shift 2 ;;
    --total) TOTAL=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --port) BASE_PORT=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
[[ $MEMBERS == 1 || $MEMBERS == 3 ]] || { echo "--members is 1 or 3" >&2; exit 2; }
BENCHMARK=$("$ROOT/benches/etcd-benchmark/build.sh")
ETCDCTL=${ETCDCTL:-etcdctl}
command -v "$ETCDCTL" >/dev/null || { echo "etcdctl not found (Debian etcd-client)" >&2; exit 2; }

WORK=$(mktemp -d -t cairn-compare-go.XXXXXX)
# shellcheck source=benches/cluster.sh
source "$ROOT/benches/cluster.sh"
member_ready() {
    "$ETCDCTL" --endpoints "$1" --command-timeout 2s get ready >/dev/null 2>&1
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

ONE=$((TOTAL / 10))
# name | benchmark arguments (global flags, then the command). `load` is the K-key load that
# the entries after it read; it is timed too (a put benchmark with sequential keys).
SUITE=(
    "range l, 1 client|--clients 1 --conns 1 range foo --consistency l --total $ONE"
    "range l, 64 clients|--clients 64 --conns 8 range foo --consistency l --total $TOTAL"
    "range s, 64 clients|--clients 64 --conns 8 range foo --consistency s --total $TOTAL"
    "put, 1 client|--clients 1 --conns 1 put --key-space-size 100000 --total $ONE"
    "put, 64 clients / 8 conns|--clients 64 --conns 8 put --key-space-size 100000 --total $TOTAL"
    "load $KEYS keys, 64 clients|--clients 64 --conns 8 put --sequential-keys --key-space-size $KEYS --total $KEYS --val-size 100"
    "range l, 64 clients, $KEYS keys|--clients 64 --conns 8 range foo --consistency l --total $TOTAL"
    "count-only of $KEYS keys, 8 clients|--clients 8 --conns 8 range $'\x01' $'\xff' --count-only --total $ONE"
    "first page (limit 500) of $KEYS keys, 8 clients|--clients 8 --conns 8 range $'\x01' $'\xff' --limit 500 --total $ONE"
)

# bench_line ARGS...: runs benchmark, prints "qps p50_ms p99_ms" ("0 0 0" if it failed).
bench_line() {
    local out
    if ! out=$("$BENCHMARK" --endpoints "$ENDPOINTS" "$@" 2>&1 </dev/null); then
        echo "   benchmark failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')" >&2
        echo "0 0 0"
        return
    fi
    awk '
        /Requests\/sec:/ { qps = $2 }
        /^ *50% in/ { p50 = $3 * 1000 }
        /^ *99% in/ { p99 = $3 * 1000 }
        END { printf "%.0f %.3f %.3f\n", qps, p50, p99 }' <<<"$out"
}

run_suite() {
    local label=$1 bin=$2 base=$3 round=$4 entry name args line
    echo "== round $round, $label: $MEMBERS x $bin, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    start_cluster "$label" "$bin" "$base" "$MEMBERS"
    "$ETCDCTL" --endpoints "${ENDPOINTS%%,*}" put foo bar >/dev/null
    : >"$WORK/$label.$round"
    for entry in "${SUITE[@]}"; do
        name=${entry%%|*}
        args=${entry#*|}
        # The entries' arguments hold $'..' words (the key range's bounds): expand them here.
        eval "set -- $args"
        line=$(bench_line "$@")
        echo "   $name: $line" >&2
        printf '%s\t%s\n' "$name" "$line" >>"$WORK/$label.$round"
    done
    stop_cluster
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }

for ((r = 1; r <= ROUNDS; r++)); do
    # odd rounds run cairn first, even rounds etcd: when cairn always went first, the
    # first round of a run was its weakest (BENCHMARKS.md, "jemalloc")
    if ((r % 2)); then
        run_suite cairn "$CAIRN_BIN" "$BASE_PORT" "$r"
        run_suite etcd "$ETCD_BIN" "$((BASE_PORT + 100))" "$r"
    else
        run_suite etcd "$ETCD_BIN" "$((BASE_PORT + 100))" "$r"
        run_suite cairn "$CAIRN_BIN" "$BASE_PORT" "$r"
    fi
    echo
    echo "Round $r of $ROUNDS, $MEMBERS member(s), etcd's benchmark tool (clientv3):"
    echo
    echo "| benchmark | cairn qps | etcd qps | qps ratio | cairn p50/p99 ms | etcd p50/p99 ms | p99 ratio |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    paste "$WORK/cairn.$r" "$WORK/etcd.$r" | while IFS=$'\t' read -r name a _ b; do
        read -r qa a50 a99 <<<"$a"
        read -r qb b50 b99 <<<"$b"
        printf '| %s | %s | %s | %s | %s/%s | %s/%s | %s |\n' "$name" "$qa" "$qb" "$(ratio "$qa" "$qb")" \
            "$a50" "$a99" "$b50" "$b99" "$(ratio "$a99" "$b99")"
    done
done

if ((ROUNDS > 1)); then
    echo
    echo "Median over $ROUNDS rounds: | benchmark | qps ratio | p99 ratio |"
    echo "|---|---:|---:|"
    n=${#SUITE[@]}
    for ((i = 1; i <= n; i++)); do
        name=$(sed -n "${i}p" "$WORK/cairn.1" | cut -f1)
        qr=() pr=()
        for ((r = 1; r <= ROUNDS; r++)); do
            read -r qa _ a99 <<<"$(sed -n "${i}p" "$WORK/cairn.$r" | cut -f2)"
            read -r qb _ b99 <<<"$(sed -n "${i}p" "$WORK/etcd.$r" | cut -f2)"
            qr+=("$(ratio "$qa" "$qb")") pr+=("$(ratio "$a99" "$b99")")
        done
        med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
        printf '| %s | %s | %s |\n' "$name" "$(med "${qr[@]}")" "$(med "${pr[@]}")"
    done
fi
