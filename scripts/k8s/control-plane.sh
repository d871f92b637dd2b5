#!/usr/bin/env bash
# Runs the real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler; no kubelets) on a three-member store on loopback and drives a checked
# workload through it with kubectl.
#
#   scripts/k8s/control-plane.sh [--store cairn|etcd34|etcd] [--smoke] [--objects N]
#                                [--keep] [--results FILE]
#
#   --store cairn   three cairn members (target/release/cairn; built if missing) [default]
#   --store etcd34  three members of Debian's etcd 3.4 (/usr/bin/etcd)
#   --store etcd    three members of the newest etcd built by scripts/k8s/build.sh
#   --smoke         a small workload (a few minutes with cached builds)
#   --objects N     configmaps to create in the bulk namespace (default 3000; smoke 300);
#                   secrets N/2, custom objects N/5
#   --keep          keep the work folder (logs, data, kubeconfig) after exit
#   --results FILE  append "store key value" result lines (timings, latencies, CPU, RSS)
#
# The workload: namespaces; one Deployment per namespace (the controller-manager creates
# its ReplicaSet and Pods, which stay Pending without nodes); configmaps and secrets by the
# thousand; a CustomResourceDefinition with custom objects; `kubectl get -w` watching the
# whole run (checked to have seen every ADDED and DELETED event); paginated lists
# (--chunk-size, checked to have taken several pages); deletes (namespaces, cascading
# through the garbage collector and the namespace controller). Every step checks its object
# counts; the apiserver log is checked for storage errors; the apiserver's own compaction
# (every 10s in --smoke, 30s otherwise) must reach the store. Exits non-zero on any failure.
# Everything listens on 127.0.0.15 and is stopped and removed on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${CAIRN_REPO:-$(cd "$here/../.." && pwd)}"

store=cairn
smoke=0
objects=""
keep=0
results=""
while (( $# )); do
    case "$1" in
        --store) store="$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --objects) objects="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --results) results="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "control-plane.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if (( smoke )); then
    : "${objects:=300}"; namespaces=2; replicas=2; chunk=50; compact_every=10s
else
    : "${objects:=3000}"; namespaces=5; replicas=3; chunk=500; compact_every=30s
fi
secrets=$(( objects / 2 ))
customs=$(( objects / 5 ))
parallel=4

ip=127.0.0.15
api_port=26443
client_ports=(23791 23792 23793)
peer_ports=(23801 23802 23803)

# ---- binaries -------------------------------------------------------------------------
kbin="$("$here/build.sh" --print 2>/dev/null)" || kbin="$("$here/build.sh")"
kubectl_bin="$kbin/kubectl"
case "$store" in
    cairn)
        store_bin="$repo/target/release/cairn"
        if [[ ! -x "$store_bin" || -n "$(find "$repo/server" "$repo/storage" "$repo/raft-node" \
                "$repo/proto" "$repo/src" -newer "$store_bin" -name '*.rs' -print -quit)" ]]; then
            (cd "$repo" && nice -n 10 cargo build --release --bin cairn)
        fi ;;
    etcd34) store_bin=/usr/bin/etcd ;;
    etcd) store_bin="$kbin/etcd" ;;
    *) echo "control-plane.sh: --store must be cairn, etcd34 or etcd" >&2; exit 2 ;;
esac

# ---- work folder, processes, clean-up ---------------------------------------------------
work="$(mktemp -d /tmp/cairn-k8s.XXXXXX)"
pids=()
cleanup() {
    local rc=$? i p
    trap - EXIT INT TERM
    # Newest first: watches, controllers and the apiserver stop before the store.
    for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do
        p="${pids[$i]}"
        kill "$p" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if (( keep )); then echo "work folder kept: $work" >&2; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
fail() {
    echo "FAIL ($store): $*" >&2
    echo "--- last lines of the apiserver log ---" >&2
    tail -n 30 "$work/apiserver.log" >&2 2>/dev/null || true
    exit 1
}
result() {
    echo "RESULT $store $1 $2"
    if [[ -n "$results" ]]; then echo "$store $1 $2" >> "$results"; fi
}
now_ms() { date +%s%3N; }

# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND until it succeeds or time is up.
wait_for() {
    local what="$1" secs="$2" deadline
    shift 2
    deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || fail "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

# ---- the store --------------------------------------------------------------------------
endpoints=""
initial_cluster=""
for i in 0 1 2; do
    endpoints+="${endpoints:+,}http://$ip:${client_ports[$i]}"
    initial_cluster+="${initial_cluster:+,}m$i=http://$ip:${peer_ports[$i]}"
done
store_pids=()
t_store=$(now_ms)
for i in 0 1 2; do
    "$store_bin" --name "m$i" --data-dir "$work/m$i" \
        --listen-client-urls "http://$ip:${client_ports[$i]}" \
        --advertise-client-urls "http://$ip:${client_ports[$i]}" \
        --listen-peer-urls "http://$ip:${peer_ports[$i]}" \
        --initial-advertise-peer-urls "http://$ip:${peer_ports[$i]}" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token cairn-k8s > "$work/m$i.log" 2>&1 &
    pids+=($!); store_pids+=($!)
done
log "store $store ($store_bin) starting on $endpoints"
wait_for "the store to be healthy" 60 \
    env ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health
result store_ready_ms $(( $(now_ms) - t_store ))

# ---- certificates, keys, tokens, kubeconfig ----------------------------------------------
mkdir -p "$work/pki"
openssl genrsa -out "$work/pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$work/pki/sa.key" -pubout -out "$work/pki/sa.pub" 2>/dev/null
token="$(openssl rand -hex 24)"
echo "$token,cairn-admin,cairn-admin,system:masters" > "$work/pki/tokens.csv"
kubeconfig="$work/kubeconfig"
cat > "$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cairn
  cluster:
    server: https://$ip:$api_port
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: cairn
  context: {cluster: cairn, user: admin}
current-context: cairn
EOF
export KUBECONFIG="$kubeconfig"
kc() { "$kubectl_bin" --request-timeout=60s "$@"; }
api_get() { curl -sk --max-time 10 -H "Authorization: Bearer $token" "https://$ip:$api_port$1"; }
api_ready() { [[ "$(api_get /readyz)" == ok ]]; }

# ---- the control plane -----------------------------------------------------------------
# start_apiserver RESULT_KEY: starts kube-apiserver (log appended to apiserver.log), waits
# for /readyz (its watch caches filled) and records how long that took.
api_pid=""
start_apiserver() {
    local t0
    t0=$(now_ms)
    "$kbin/kube-apiserver" \
        --etcd-servers "$endpoints" \
        --etcd-compaction-interval "$compact_every" \
        --bind-address "$ip" --advertise-address "$ip" --secure-port "$api_port" \
        --cert-dir "$work/pki" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$work/pki/sa.pub" \
        --service-account-signing-key-file "$work/pki/sa.key" \
        --token-auth-file "$work/pki/tokens.csv" \
        --authorization-mode RBAC --endpoint-reconciler-type none \
        --service-cluster-ip-range 10.96.0.0/16 \
        --max-requests-inflight 1000 --max-mutating-requests-inflight 500 \
        >> "$work/apiserver.log" 2>&1 &
    pids+=($!); api_pid=$!
    log "kube-apiserver starting on https://$ip:$api_port"
    wait_for "kube-apiserver /readyz" 180 api_ready
    result "$1" $(( $(now_ms) - t0 ))
}

# restart_apiserver RESULT_KEY: kills the apiserver (SIGKILL: its graceful stop waits
# 30 s and more here, on every store) and starts it again on the same store.
# The first apiserver's /metrics are kept: report_latencies adds both lives up.
restart_apiserver() {
    api_get /metrics > "$work/metrics.txt" || fail "reading the apiserver's /metrics"
    kill -9 "$api_pid"
    wait "$api_pid" 2>/dev/null || true
    start_apiserver "$1"
}

start_apiserver apiserver_ready_ms
kill -0 "$api_pid" || fail "kube-apiserver exited"

"$kbin/kube-controller-manager" --kubeconfig "$kubeconfig" \
    --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
    --bind-address "$ip" --secure-port 26257 \
    --service-account-private-key-file "$work/pki/sa.key" \
    --leader-elect=true --leader-elect-lease-duration 60s --leader-elect-renew-deadline 50s \
    --controllers '*' \
    > "$work/controller-manager.log" 2>&1 &
pids+=($!)
"$kbin/kube-scheduler" --kubeconfig "$kubeconfig" \
    --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
    --bind-address "$ip" --secure-port 26259 \
    --leader-elect=true --leader-elect-lease-duration 60s --leader-elect-renew-deadline 50s \
    > "$work/scheduler.log" 2>&1 &
pids+=($!)
log "controller-manager and scheduler started"

source "$here/workload.sh"
run_workload

# The apiserver's own compaction reached the store (it compacts every interval to the
# revision it saw one interval before): revision 1 is gone, and lists still work after it.
compacted() {
    local out
    out="$(ETCDCTL_API=3 etcdctl --endpoints "$endpoints" get /registry/health --rev=1 2>&1)" || true
    [[ "$out" == *"required revision has been compacted"* ]]
}
wait_for "the apiserver to compact the store" 90 compacted
expect_count "namespaces after compaction" 4 namespaces
log "the apiserver compacted the store; lists work after it"

# ---- the store's own cost and the apiserver's view of it ----------------------------------
source "$here/measure.sh"
report_latencies
report_store_usage
kill -0 "$api_pid" || fail "kube-apiserver exited"
check_apiserver_log
log "PASS: control plane on $store ($( (( smoke )) && echo smoke || echo full) workload)"
