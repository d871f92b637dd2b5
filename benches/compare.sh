#!/usr/bin/env bash
# Runs the same cairn-bench suite against a cairn and an etcd binary, one after
# the other (each single-node on loopback with a fresh temp data dir), and
# prints a markdown table comparing them.
#
# usage: benches/compare.sh CAIRN_BIN ETCD_BIN [--total N] [--bench PATH] [--port BASE]
#            [--with-leases | --leases-only] [--leases N] [--lease-ttl S]
#            [--with-watch | --watch-only] [--watch-puts N] [--watch-rounds N]
#            [--with-auth | --auth-only] [--auth-rounds N] [--logins N]
#   Ports: cairn client BASE, peer BASE+1; etcd client BASE+10, peer BASE+11 (BASE=32379).
#   --with-leases adds `cairn-bench lease-expiry` (N leases, default 100000, TTL S s, default
#   60 so the setup ends before the first lease is due) on a fresh server of each kind;
#   --leases-only runs just that. etcd revokes <= 1000 leases/s: expect ~100 s for 100k.
#   --with-auth adds the cost of auth (issue 14), on a fresh server of each kind: a user with
#   readwrite on every key (plus 8 other prefix roles), then N rounds (default 3) of the put and
#   linearizable range entries with auth disabled, then enabled and the token on every request
#   (`--user`), alternating so both see the same machine load; then Authenticate/s (N logins,
#   default 200, 16 clients, bcrypt at the server's default cost); --auth-only runs just that.
#   --with-watch adds the watch benchmarks (issue 3), each on a fresh server, cairn then etcd
#   entry by entry: `watch` with 500x20 = 10,000 watches on 1 conn and on 8 conns (N puts,
#   default 10000, 16 clients at 2000/s), `watch-progress` on 10,000 watches / 1 conn
#   (N rounds, default 200) idle and with 300 puts/s; --watch-only runs just those.
#   e.g. benches/compare.sh target/release/cairn /usr/bin/etcd
#        benches/compare.sh target/release/cairn /usr/bin/etcd --leases-only
#        benches/compare.sh target/release/cairn /usr/bin/etcd --watch-only --port 44379
#        benches/compare.sh target/release/cairn /usr/bin/etcd --auth-only
#        benches/compare.sh /usr/bin/etcd /usr/bin/etcd --total 5000   # self-check
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/args.sh
source "$ROOT/benches/args.sh"
take_binaries "$@"
shift 2
TOTAL=20000
BENCH=""
BASE_PORT=32379
SUITE_RUN=1
LEASES_RUN=0
LEASES=100000
LEASE_TTL=60
WATCH_RUN=0
WATCH_PUTS=10000
WATCH_ROUNDS=200
AUTH_RUN=0
AUTH_ROUNDS=3
LOGINS=200
ETCDCTL=${ETCDCTL:-etcdctl}
while [[ $# -gt 0 ]]; do
    case $1 in
    --total) TOTAL=$2; shift 2 ;;
    --total=*) TOTAL=${1#*=}; shift ;;
    --bench) BENCH=$2; shift 2 ;;
    --bench=*) BENCH=${1#*=}; shift ;;
    --port) BASE_PORT=$2; shift 2 ;;
    --port=*) BASE_PORT=${1#*=}; shift ;;
    --with-leases) LEASES_RUN=1; shift ;;
    --leases-only) LEASES_RUN=1; SUITE_RUN=0; shift ;;
    --leases) LEASES=$2; shift 2 ;;
    --leases=*) LEASES=${1#*=}; shift ;;
    --lease-ttl) LEASE_TTL=$2; shift 2 ;;
    --lease-ttl=*) LEASE_TTL=${1#*=}; shift ;;
    --with-watch) WATCH_RUN=1; shift ;;
    --watch-only) WATCH_RUN=1; SUITE_RUN=0; LEASES_RUN=0; AUTH_RUN=0; shift ;;
    --watch-puts) WATCH_PUTS=$2; shift 2 ;;
    --watch-puts=*) WATCH_PUTS=${1#*=}; shift ;;
    --watch-rounds) WATCH_ROUNDS=$2; shift 2 ;;
    --watch-rounds=*) WATCH_ROUNDS=${1#*=}; shift ;;
    --with-auth) AUTH_RUN=1; shift ;;
    --auth-only) AUTH_RUN=1; SUITE_RUN=0; LEASES_RUN=0; WATCH_RUN=0; shift ;;
    --auth-rounds) AUTH_ROUNDS=$2; shift 2 ;;
    --auth-rounds=*) AUTH_ROUNDS=${1#*=}; shift ;;
    --logins) LOGINS=$2; shift 2 ;;
    --logins=*) LOGINS=${1#*=}; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done


if [[ -z $BENCH ]]; then
    BENCH=$ROOT/target/release/cairn-bench
    if [[ ! -x $BENCH ]]; then
        echo "building cairn-bench (release)..." >&2
        (cd "$ROOT" && cargo build --release -p cairn-bench >&2)
    fi
fi
[[ -x $BENCH ]] || { echo "cairn-bench not found at $BENCH" >&2; exit 2; }

# shellcheck source=benches/single.sh
source "$ROOT/benches/single.sh"
single_server_work cairn-compare

# name | cairn-bench arguments (global flags, then subcommand)
SUITE=(
    "put 1 client|--clients 1 --conns 1 put"
    "put 64 clients/8 conns|--clients 64 --conns 8 put"
    "range l 1 client|--clients 1 --conns 1 --consistency l range foo --prepopulate"
    "range l 64 clients|--clients 64 --conns 8 --consistency l range foo --prepopulate"
    "range s 64 clients|--clients 64 --conns 8 --consistency s range foo --prepopulate"
    "update 64 clients|--clients 64 --conns 8 --key-space 1000 update"
)

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

# run_leases LABEL BIN CLIENT_PORT PEER_PORT: lease-expiry on a fresh server; the result
# goes to $WORK/LABEL-leases.json
run_leases() {
    local label=$1 bin=$2 cport=$3 pport=$4
    echo "== $label lease-expiry: $bin (127.0.0.1:$cport)" >&2
    start_server "$label-leases" "$bin" "$cport" "$pport"
    local cmd=("$BENCH" --endpoints "127.0.0.1:$cport" --clients 64 --conns 8 --format json
        lease-expiry --leases "$LEASES" --ttl "$LEASE_TTL")
    echo "   ${cmd[*]}" >&2
    local line
    if ! line=$("${cmd[@]}"); then
        echo "   lease-expiry: cairn-bench failed" >&2
        line=${line:-'{"expiry_s":null,"errors":-1}'}
    fi
    echo "   lease-expiry: $line" >&2
    printf '%s\n' "$line" >"$WORK/$label-leases.json"
    stop_server
}

# Watch benchmarks: name | cairn-bench arguments. Every entry runs on a fresh server (so the
# RSS growth is the watches'), cairn then etcd, entry by entry, so that both see the same
# machine load. --server-pid is added per server.
WATCH_SUITE=(
    "watch 500x20, 1 conn|--conns 1 --clients 16 --total $WATCH_PUTS watch --tenants 500 --resources 20 --rate 2000"
    "watch 500x20, 8 conns|--conns 8 --clients 16 --total $WATCH_PUTS watch --tenants 500 --resources 20 --rate 2000"
    "watch-progress 500x20, 1 conn, idle|--conns 1 --total $WATCH_ROUNDS watch-progress --tenants 500 --resources 20"
    "watch-progress 500x20, 1 conn, 300 puts/s|--conns 1 --total $WATCH_ROUNDS watch-progress --tenants 500 --resources 20 --rate 300 --round-gap-ms 10"
)

# run_watch_entry LABEL BIN CLIENT_PORT PEER_PORT NAME ARGS: one watch benchmark on a fresh
# server; appends "NAME<TAB>JSON" to $WORK/LABEL-watch.jsonl
run_watch_entry() {
    local label=$1 bin=$2 cport=$3 pport=$4 name=$5 args=$6
    start_server "$label-watch" "$bin" "$cport" "$pport"
    # shellcheck disable=SC2206 # args is a deliberate word list
    local cmd=("$BENCH" --endpoints "127.0.0.1:$cport" --format json $args --server-pid "$SERVER_PID")
    echo "   $label $name: ${cmd[*]}" >&2
    local line
    # every wait inside cairn-bench has a deadline; this one bounds the whole run
    if ! line=$(timeout 900 "${cmd[@]}"); then
        echo "   $label $name: cairn-bench failed" >&2
    fi
    line=${line:-'{"ok":false,"error":"no result"}'}
    echo "   $label $name: $line" >&2
    printf '%s\t%s\n' "$name" "$line" >>"$WORK/$label-watch.jsonl"
    stop_server
    rm -rf "$WORK/$label-watch"
}

# The cost of auth (issue 14): name | cairn-bench arguments, run with auth off and on.
AUTH_SUITE=(
    "put 64 clients/8 conns|--clients 64 --conns 8 put"
    "range l 64 clients/8 conns|--clients 64 --conns 8 --consistency l range foo"
)

# auth_setup CLIENT_PORT: root, and user `bench` (password `bench`) with readwrite on every
# key through role `bench` and 8 roles on other prefixes, so a check walks a real permission
# set; auth stays disabled.
auth_setup() {
    local ep=127.0.0.1:$1 i
    ctl() { ETCDCTL_API=3 "$ETCDCTL" --endpoints "$ep" "$@" >/dev/null; }
    ctl user add root --new-user-password root
    ctl role add root
    ctl user grant-role root root
    ctl user add bench --new-user-password bench
    ctl role add bench
    ctl role grant-permission bench readwrite --prefix=true ''
    ctl user grant-role bench bench
    for i in 0 1 2 3 4 5 6 7; do
        ctl role add "tenant-$i"
        ctl role grant-permission "tenant-$i" readwrite --prefix=true "/tenant-$i/"
        ctl user grant-role bench "tenant-$i"
    done
    "$BENCH" --endpoints "$ep" --total 1 --format json put --key-space 1 >/dev/null
    ctl put foo bar
}

# run_auth LABEL BIN CLIENT_PORT PEER_PORT: results go to $WORK/LABEL-auth.jsonl as
# "NAME<TAB>off|on<TAB>JSON" lines, and $WORK/LABEL-logins.json
run_auth() {
    local label=$1 bin=$2 cport=$3 pport=$4
    echo "== $label auth: $bin (127.0.0.1:$cport)" >&2
    start_server "$label-auth" "$bin" "$cport" "$pport"
    auth_setup "$cport"
    local out=$WORK/$label-auth.jsonl round entry name args mode line user
    : >"$out"
    for ((round = 1; round <= AUTH_ROUNDS; round++)); do
        for mode in off on; do
            user=()
            if [[ $mode == on ]]; then
                ETCDCTL_API=3 "$ETCDCTL" --endpoints "127.0.0.1:$cport" auth enable >/dev/null
                user=(--user bench:bench)
            fi
            for entry in "${AUTH_SUITE[@]}"; do
                name=${entry%%|*}
                args=${entry#*|}
                # shellcheck disable=SC2086 # args is a deliberate word list
                if ! line=$("$BENCH" --endpoints "127.0.0.1:$cport" --total "$TOTAL" --format json "${user[@]}" $args); then
                    echo "   $name ($mode): cairn-bench failed" >&2
                    line=${line:-'{"qps":0,"p50_ms":0,"p99_ms":0,"errors":-1}'}
                fi
                echo "   round $round, auth $mode, $name: $line" >&2
                printf '%s\t%s\t%s\n' "$name" "$mode" "$line" >>"$out"
            done
            if [[ $mode == on ]]; then
                ETCDCTL_API=3 "$ETCDCTL" --endpoints "127.0.0.1:$cport" --user root:root auth disable >/dev/null
            fi
        done
    done
    ETCDCTL_API=3 "$ETCDCTL" --endpoints "127.0.0.1:$cport" auth enable >/dev/null
    if ! line=$("$BENCH" --endpoints "127.0.0.1:$cport" --clients 16 --conns 4 --total "$LOGINS" --format json \
        --user bench:bench authenticate); then
        echo "   authenticate: cairn-bench failed" >&2
        line=${line:-'{"qps":0,"p50_ms":0,"p99_ms":0,"errors":-1}'}
    fi
    echo "   authenticate: $line" >&2
    printf '%s\n' "$line" >"$WORK/$label-logins.json"
    stop_server
}

# jstr KEY JSON: the value of a string or boolean key in a flat JSON object.
jstr() {
    sed -nE "s/.*\"$1\":(\"([^\"]*)\"|(true|false|null)).*/\2\3/p" <<<"$2"
}

# jget KEY JSON: the value of a numeric key in a flat JSON object.
jget() {
    local v
    v=$(sed -nE "s/.*\"$1\":(-?[0-9.eE+-]+).*/\1/p" <<<"$2")
    echo "${v:-0}"
}

# ratio_g A B: A / B with 3 significant digits (for ratios far from 1).
ratio_g() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.3g", a / b }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

if ((SUITE_RUN)); then
    run_suite cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))"
    run_suite etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))"
fi
if ((LEASES_RUN)); then
    run_leases cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))"
    run_leases etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))"
fi

if ((AUTH_RUN)); then
    AUTH_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    run_auth cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))"
    run_auth etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))"
    AUTH_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
fi

if ((WATCH_RUN)); then
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    : >"$WORK/cairn-watch.jsonl"
    : >"$WORK/etcd-watch.jsonl"
    for entry in "${WATCH_SUITE[@]}"; do
        echo "== watch: ${entry%%|*}" >&2
        run_watch_entry cairn "$CAIRN_BIN" "$BASE_PORT" "$((BASE_PORT + 1))" "${entry%%|*}" "${entry#*|}"
        run_watch_entry etcd "$ETCD_BIN" "$((BASE_PORT + 10))" "$((BASE_PORT + 11))" "${entry%%|*}" "${entry#*|}"
    done
    LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
fi

if ((SUITE_RUN)); then
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
fi

if ((LEASES_RUN)); then
    a=$(cat "$WORK/cairn-leases.json") b=$(cat "$WORK/etcd-leases.json")
    echo
    echo "lease-expiry: $LEASES leases, TTL ${LEASE_TTL}s, 1 key each, 64 clients / 8 conns, $(nproc) cores"
    echo
    echo "| lease-expiry | cairn | etcd | cairn/etcd |"
    echo "|---|---:|---:|---:|"
    for k in expiry_s revocations_per_sec due_window_s left_at_last_due grant_s attach_s errors; do
        printf '| %s | %s | %s | %s |\n' "$k" "$(jget "$k" "$a")" "$(jget "$k" "$b")" \
            "$(ratio_g "$(jget "$k" "$a")" "$(jget "$k" "$b")")"
    done
fi

# watch_row NAME METRIC KEY CAIRN_JSON ETCD_JSON [GOAL]: one row, ratio etcd/cairn.
watch_row() {
    local a b
    a=$(jget "$3" "$4") b=$(jget "$3" "$5")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$a" "$b" "$(ratio_g "$b" "$a")" "${6:-}"
}

if ((WATCH_RUN)); then
    echo
    echo "watch (issue 3): cairn \`$CAIRN_BIN\`, etcd \`$ETCD_BIN\`, $(nproc) cores, fresh server per row group;"
    echo "$WATCH_PUTS puts per \`watch\` (16 clients on 1 separate conn, 2000/s), $WATCH_ROUNDS rounds per \`watch-progress\`;"
    echo "load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
    echo
    echo "| benchmark | metric | cairn | etcd | etcd/cairn | goal |"
    echo "|---|---|---:|---:|---:|---|"
    paste "$WORK/cairn-watch.jsonl" "$WORK/etcd-watch.jsonl" | while IFS=$'\t' read -r name a _ b; do
        case $name in
        watch-progress*)
            watch_row "$name" "create all (s)" create_s "$a" "$b"
            watch_row "" "progress wait p50 (ms)" progress_p50_ms "$a" "$b"
            watch_row "" "progress wait p99 (ms)" progress_p99_ms "$a" "$b" "cairn <= 5 ms"
            watch_row "" "progress wait max (ms)" progress_max_ms "$a" "$b"
            printf '| | rounds done / timed out | %s / %s | %s / %s | | all done |\n' \
                "$(jget completed "$a")" "$(jget timed_out "$a")" "$(jget completed "$b")" "$(jget timed_out "$b")"
            printf '| | events behind a progress response | %s | %s | | 0 |\n' \
                "$(jget progress_ahead "$a")" "$(jget progress_ahead "$b")"
            ;;
        *)
            watch_row "$name" "create all (s)" create_s "$a" "$b" ">= 5x (etcd/cairn)"
            watch_row "" "server RSS bytes/watch" bytes_per_watch "$a" "$b" "cairn <= 150"
            watch_row "" "put p50 (ms)" put_p50_ms "$a" "$b"
            watch_row "" "put p99 (ms)" put_p99_ms "$a" "$b"
            watch_row "" "delivery p50 (ms)" delivery_p50_ms "$a" "$b"
            watch_row "" "delivery p99 (ms)" delivery_p99_ms "$a" "$b" "cairn <= etcd"
            watch_row "" "delivery max (ms)" delivery_max_ms "$a" "$b"
            printf '| | events received / expected | %s / %s | %s / %s | | equal |\n' \
                "$(jget received "$a")" "$(jget expected "$a")" "$(jget received "$b")" "$(jget expected "$b")"
            ;;
        esac
        for side in cairn:"$a" etcd:"$b"; do
            if [[ $(jstr ok "${side#*:}") != true ]]; then
                printf '| | **%s FAILED** | %s | | | |\n' "${side%%:*}" "$(jstr error "${side#*:}")"
            fi
        done
    done
fi

# auth_mean LABEL NAME MODE KEY: the mean of KEY over the rounds of one auth entry.
auth_mean() {
    local sum=0 n=0 name mode line
    while IFS=$'\t' read -r name mode line; do
        [[ $name == "$2" && $mode == "$3" ]] || continue
        sum=$(awk -v a="$sum" -v b="$(jget "$4" "$line")" 'BEGIN { print a + b }')
        n=$((n + 1))
    done <"$WORK/$1-auth.jsonl"
    awk -v s="$sum" -v n="$n" 'BEGIN { if (n == 0) print 0; else printf "%.3f", s / n }'
}

if ((AUTH_RUN)); then
    echo
    echo "auth (issue 14): cairn \`$CAIRN_BIN\`, etcd \`$ETCD_BIN\`, $(nproc) cores, $TOTAL requests per run,"
    echo "mean of $AUTH_ROUNDS alternating rounds (auth off, then on with a token on every request);"
    echo "load average (1/5/15 min) before: $AUTH_LOAD_BEFORE, after: $AUTH_LOAD_AFTER"
    echo
    echo "| benchmark | server | qps off | qps on | on/off | p99 ms off | p99 ms on | on/off |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for entry in "${AUTH_SUITE[@]}"; do
        name=${entry%%|*}
        for label in cairn etcd; do
            qoff=$(auth_mean $label "$name" off qps) qon=$(auth_mean $label "$name" on qps)
            poff=$(auth_mean $label "$name" off p99_ms) pon=$(auth_mean $label "$name" on p99_ms)
            printf '| %s | %s | %.0f | %.0f | %s | %.2f | %.2f | %s |\n' "$name" "$label" \
                "$qoff" "$qon" "$(ratio "$qon" "$qoff")" "$poff" "$pon" "$(ratio "$pon" "$poff")"
        done
    done
    a=$(cat "$WORK/cairn-logins.json") b=$(cat "$WORK/etcd-logins.json")
    echo
    echo "| Authenticate, $LOGINS logins, 16 clients | cairn | etcd | cairn/etcd |"
    echo "|---|---:|---:|---:|"
    for k in qps p50_ms p99_ms errors; do
        printf '| %s | %s | %s | %s |\n' "$k" "$(jget "$k" "$a")" "$(jget "$k" "$b")" \
            "$(ratio_g "$(jget "$k" "$a")" "$(jget "$k" "$b")")"
    done
fi
