#!/usr/bin/env bash
# Runs the real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler; no kubelets) on a three-member store on loopback and drives a checked
# workload through it with kubectl.
#
#   scripts/k8s/control-plane.sh [--store cairn|etcd34|etcd] [--smoke] [--faults]
#                                [--objects N] [--keep] [--results FILE]
#
#   --store cairn   three cairn members (target/release/cairn; built if missing) [default]
#   --store etcd34  three members of Debian's etcd 3.4 (/usr/bin/etcd)
#   --store etcd    three members of the newest etcd built by scripts/k8s/build.sh
#   --smoke         a small workload (a few minutes with cached builds)
#   --faults        instead of the workload below, writers, watches and a Deployment while
#                   the store's leader is killed, members are paused and all are restarted
#                   in turn; checked for lost objects, stuck watches, relists (faults.sh)
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

source "$(dirname "${BASH_SOURCE[0]}")/args.sh"
smoke=0
faults=0
objects=""
while (( $# )); do
    case "$1" in
        --smoke) smoke=1; shift ;;
        --faults) faults=1; shift ;;
        --objects) objects="$2"; shift 2 ;;
        *) common_arg "$@"; shift "$taken" ;;
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
api_port=26443

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_store
make_pki
kubeconfig="$work/kubeconfig"
write_kubeconfig "$kubeconfig" "$api_port"
export KUBECONFIG="$kubeconfig"
kc() { "$kubectl_bin" --request-timeout=60s "$@"; }
api_get() { api_get_port "$api_port" "$1"; }
api_ready() { api_ready_port "$api_port"; }

# ---- the control plane -----------------------------------------------------------------
# start_apiserver RESULT_KEY: starts kube-apiserver (log appended to apiserver.log), waits
# for /readyz (its watch caches filled) and records how long that took.
api_pid=""
start_apiserver() {
    local t0
    t0=$(now_ms)
    launch_apiserver "$api_port" "$work/pki" "$work/apiserver.log" \
        --max-requests-inflight 1000 --max-mutating-requests-inflight 500
    api_pid=$launched_pid
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

if (( faults )); then
    source "$here/faults.sh"
    run_faults
else
    source "$here/workload.sh"
    run_workload
fi

# The apiserver's own compaction reached the store (it compacts every interval to the
# revision it saw one interval before): revision 1 is gone, and lists still work after it.
wait_for "the apiserver to compact the store" 90 store_compacted
(( faults )) || expect_count "namespaces after compaction" 4 namespaces
log "the apiserver compacted the store; lists work after it"

# ---- the store's own cost and the apiserver's view of it ----------------------------------
source "$here/measure.sh"
report_latencies
report_store_usage
kill -0 "$api_pid" || fail "kube-apiserver exited"
if (( faults )); then
    # Faults make the apiserver log storage errors; report_faults counted them instead.
    log "PASS: control plane on $store under faults"
else
    check_apiserver_log
    log "PASS: control plane on $store ($( (( smoke )) && echo smoke || echo full) workload)"
fi
