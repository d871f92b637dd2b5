#!/usr/bin/env bash
# Space used by a cairn and an etcd member for the same data, in one run (issue 9):
# each single-node on loopback with a fresh data folder under /tmp, both at the same time
# (sizes do not depend on the machine's load; the fill rates printed at the end do).
#
# usage: benches/compare_space.sh CAIRN_BIN ETCD_BIN [--keys N] [--val-size B] [--port BASE]
#            [--keep-dirs]
#   1. `cairn-bench fill`: N distinct keys (default 1048576 = 1 GiB of 1 KiB values),
#      `space/` + a 10-digit number, 64 clients / 8 conns;
#   2. sizes: the data folder (du), the db file alone, Status dbSize / dbSizeInUse;
#   3. deletes 90% of the keys (the first 9,000 of every 10,000, one DeleteRange each),
#      compacts to the current revision, waits until the compaction is done (etcdctl
#      compact --physical), then `etcdctl defrag`;
#   4. sizes again, and the live data (the remaining keys and values) to compare with.
#   The server is restarted before each measurement: both are measured as a member just
#   started (files listed while stopped; etcd preallocates its next WAL file at start).
#   Ports: cairn client BASE, peer BASE+1; etcd client BASE+10, peer BASE+11 (BASE=33379).
#   Needs about 4 GB free under /tmp (TMPDIR); the folders are deleted at the end.
#   e.g. benches/compare_space.sh target/release/cairn /usr/bin/etcd
#        benches/compare_space.sh target/release/cairn /usr/bin/etcd --keys 100000   # quick
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/args.sh
source "$ROOT/benches/args.sh"
take_binaries "$@"
shift 2
KEYS=1048576
VAL_SIZE=1024
BASE_PORT=33379
KEEP=0
ETCDCTL=${ETCDCTL:-etcdctl}
while [[ $# -gt 0 ]]; do
    case $1 in
    --keys) KEYS=$2; shift 2 ;;
    --val-size) VAL_SIZE=$2; shift 2 ;;
    --port) BASE_PORT=$2; shift 2 ;;
    --keep-dirs) KEEP=1; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

BENCH=$ROOT/target/release/cairn-bench
[[ -x $BENCH ]] || (cd "$ROOT" && cargo build --release -p cairn-bench >&2)
[[ -x $BENCH ]] || { echo "not an executable: $BENCH" >&2; exit 2; }

WORK=$(mktemp -d -t cairn-space.XXXXXX)
SERVER_PID=""
RUNS=()
cleanup() {
    local p
    for p in "${RUNS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if ((KEEP)); then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {
    local label=$1 bin=$2 cport=$3 pport=$4
    local dir=$WORK/$label
    mkdir -p "$dir/data"
    "$bin" --name "space-$label" --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$cport" \
        --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" \
        --quota-backend-bytes $((16 << 30)) \
        >>"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 120))
    until "$BENCH" --endpoints "127.0.0.1:$cport" --total 1 --timeout 2 --format json \
        range cairn-bench-ready >/dev/null 2>&1; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || ((SECONDS > deadline)); then
            echo "$label ($bin) did not start; log:" >&2
            tail -n 30 "$dir/server.log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

ctl() {
    ETCDCTL_API=3 "$ETCDCTL" --command-timeout=600s --endpoints "$EP" "$@"
}

# jget KEY JSON: the first numeric value of KEY in JSON.
jget() {
    sed -nE "s/.*\"$1\":(-?[0-9]+).*/\1/p" <<<"$2" | sed -n 1p
}

# measure LABEL STAGE: restarts the server, then appends
# "STAGE<TAB>folder<TAB>dbfile<TAB>dbSize<TAB>dbSizeInUse<TAB>load" to $WORK/LABEL.tsv
measure() {
    local label=$1 stage=$2 bin=$3 cport=$4 pport=$5 dbfile=$6
    stop_server
    local data=$WORK/$label/data
    echo "   $label after $stage: files" >&2
    (cd "$data" && find . -type f -printf "     $label %10s %p\n" | sort -k3) >&2
    start_server "$label" "$bin" "$cport" "$pport"
    local st
    st=$(ctl endpoint status -w json)
    local folder db
    folder=$(du -sb "$data" | cut -f1)
    db=$(stat -c %s "$data/$dbfile")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$stage" "$folder" "$db" "$(jget dbSize "$st")" \
        "$(jget dbSizeInUse "$st")" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/$label.tsv"
    echo "   $label after $stage: folder $folder, db file $db, status $st" >&2
}

# run LABEL BIN CLIENT_PORT PEER_PORT DBFILE: the whole sequence on one server (in a
# subshell of its own: SERVER_PID and EP are its own).
run() {
    local label=$1 bin=$2 cport=$3 pport=$4 dbfile=$5
    trap stop_server EXIT
    trap 'exit 130' INT TERM
    EP=127.0.0.1:$cport
    echo "== $label: $bin ($EP)" >&2
    : >"$WORK/$label.tsv"
    start_server "$label" "$bin" "$cport" "$pport"
    local t0=$SECONDS line
    line=$("$BENCH" --endpoints "$EP" --clients 64 --conns 8 --total "$KEYS" --val-size "$VAL_SIZE" \
        --format json fill --prefix space/)
    echo "   fill $KEYS x $VAL_SIZE B: $line ($((SECONDS - t0)) s)" >&2
    printf '%s\n' "$line" >"$WORK/$label-fill.json"
    measure "$label" fill "$bin" "$cport" "$pport" "$dbfile"

    t0=$SECONDS
    local b from to
    for ((b = 0; b < KEYS; b += 10000)); do
        from=$(printf 'space/%010d' "$b")
        to=$(printf 'space/%010d' $((b + 9000 < KEYS ? b + 9000 : KEYS)))
        ctl del "$from" "$to" >/dev/null
    done
    local left rev
    left=$(ctl get space/ --prefix --limit 1 -w json)
    rev=$(jget revision "$left")
    echo "   deleted in $((SECONDS - t0)) s; left: $(jget count "$left") keys at revision $rev" >&2
    printf '%s\n' "$(jget count "$left")" >"$WORK/$label-left"
    t0=$SECONDS
    ctl compact --physical "$rev" >&2
    echo "   compacted in $((SECONDS - t0)) s" >&2
    measure "$label" "delete 90% + compact" "$bin" "$cport" "$pport" "$dbfile"
    t0=$SECONDS
    ctl defrag >&2
    echo "   defragmented in $((SECONDS - t0)) s" >&2
    measure "$label" "defrag" "$bin" "$cport" "$pport" "$dbfile"
    stop_server
    rm -rf "$WORK/$label/data"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
(run cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))" member/cairn/pages.db) &
RUNS=($!)
(run etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))" member/snap/db) &
RUNS+=($!)
FAILED=0
for p in "${RUNS[@]}"; do
    wait "$p" || FAILED=1
done
RUNS=()
((FAILED == 0)) || { echo "a run failed (logs above)" >&2; exit 1; }
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
LEFT=$(cat "$WORK/cairn-left")
# live data: the remaining keys (16 bytes) and values
LIVE=$((LEFT * (16 + VAL_SIZE)))
echo
echo "cairn \`$CAIRN_BIN\`, etcd \`$ETCD_BIN\`; $KEYS keys of 16 bytes with $VAL_SIZE-byte values"
echo "($(mib $((KEYS * (16 + VAL_SIZE)))) MiB written), then $LEFT left (live data $(mib "$LIVE") MiB);"
echo "load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER. Sizes in MiB."
echo
echo "| stage | server | data folder | db file | Status dbSize | Status dbSizeInUse | folder / live | load |"
echo "|---|---|---:|---:|---:|---:|---:|---|"
paste "$WORK/cairn.tsv" "$WORK/etcd.tsv" | while IFS=$'\t' read -r st f d s u l _ f2 d2 s2 u2 l2; do
    printf '| %s | cairn | %s | %s | %s | %s | %s | %s |\n' "$st" "$(mib "$f")" "$(mib "$d")" "$(mib "$s")" \
        "$(mib "$u")" "$(awk -v a="$f" -v b="$LIVE" 'BEGIN { printf "%.2f", a / b }')" "$l"
    printf '| | etcd | %s | %s | %s | %s | %s | %s |\n' "$(mib "$f2")" "$(mib "$d2")" "$(mib "$s2")" \
        "$(mib "$u2")" "$(awk -v a="$f2" -v b="$LIVE" 'BEGIN { printf "%.2f", a / b }')" "$l2"
done
for label in cairn etcd; do
    echo
    echo "$label fill: $(cat "$WORK/$label-fill.json")"
done
