#!/usr/bin/env bash
# Three-member cairn vs three-member etcd on loopback, in the same run: the KV suite of
# compare.sh (put 1 and 64 clients, linearizable and serializable range, update shape)
# with the clients' connections spread round-robin over all three members (writes sent
# to followers are forwarded to the leader, as with a real client).
#
# usage: benches/compare_cluster.sh CAIRN_BIN ETCD_BIN [--total N] [--port BASE]
#   Ports: member i (0..2) of cairn: client BASE+10i, peer BASE+10i+1; etcd: BASE+100+...
#   (BASE=42379). e.g. benches/compare_cluster.sh target/release/cairn /usr/bin/etcd
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/args.sh
source "$ROOT/benches/args.sh"
take_binaries "$@"
shift 2
TOTAL=20000
BASE_PORT=42379
while [[ $# -gt 0 ]]; do
    case $1 in
    --total) TOTAL=$2; shift 2 ;;
    --total=*) TOTAL=${1#*=}; shift ;;
    --port) BASE_PORT=$2; shift 2 ;;
    --port=*) BASE_PORT=${1#*=}; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
BENCH=$ROOT/target/release/cairn-bench
[[ -x $BENCH ]] || (cd "$ROOT" && cargo build --release -p cairn-bench >&2)

WORK=$(mktemp -d -t cairn-compare-cluster.XXXXXX)
# shellcheck source=benches/cluster.sh
source "$ROOT/benches/cluster.sh"
member_ready() {
    "$BENCH" --endpoints "$1" --total 1 --timeout 2 --format json range ready >/dev/null 2>&1
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

SUITE=(
    "put 1 client|--clients 1 --conns 1 put"
    "put 64 clients/8 conns|--clients 64 --conns 8 put"
    "range l 64 clients|--clients 64 --conns 8 --consistency l range foo --prepopulate"
    "range s 64 clients|--clients 64 --conns 8 --consistency s range foo --prepopulate"
    "update 64 clients|--clients 64 --conns 8 --key-space 1000 update"
)

run_suite() {
    local label=$1 bin=$2 base=$3 entry name args line
    echo "== $label: 3 x $bin" >&2
    start_cluster "$label" "$bin" "$base" 3
    : >"$WORK/$label.jsonl"
    for entry in "${SUITE[@]}"; do
        name=${entry%%|*}
        args=${entry#*|}
        # shellcheck disable=SC2086 # args is a deliberate word list
        line=$("$BENCH" --endpoints "$ENDPOINTS" --total "$TOTAL" --format json $args) ||
            line='{"qps":0,"p50_ms":0,"p99_ms":0,"errors":-1}'
        echo "   $name: $line" >&2
        printf '%s\t%s\n' "$name" "$line" >>"$WORK/$label.jsonl"
    done
    stop_cluster
}

run_suite cairn "$CAIRN_BIN" "$BASE_PORT"
run_suite etcd "$ETCD_BIN" "$((BASE_PORT + 100))"

jget() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p" <<<"$2"; }
echo "| 3 members, total $TOTAL | cairn qps | etcd qps | qps ratio | cairn p50/p99 ms | etcd p50/p99 ms | p99 ratio | errors c/e |"
echo "|---|---|---|---|---|---|---|---|"
paste "$WORK/cairn.jsonl" "$WORK/etcd.jsonl" | while IFS=$'\t' read -r name a _ b; do
    qa=$(jget qps "$a"); qb=$(jget qps "$b")
    printf '| %s | %.0f | %.0f | %s | %.2f/%.2f | %.2f/%.2f | %s | %s/%s |\n' "$name" "$qa" "$qb" \
        "$(awk -v a="$qa" -v b="$qb" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }')" \
        "$(jget p50_ms "$a")" "$(jget p99_ms "$a")" "$(jget p50_ms "$b")" "$(jget p99_ms "$b")" \
        "$(awk -v a="$(jget p99_ms "$a")" -v b="$(jget p99_ms "$b")" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }')" \
        "$(jget errors "$a")" "$(jget errors "$b")"
done
