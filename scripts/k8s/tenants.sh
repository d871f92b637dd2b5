#!/usr/bin/env bash
# Many tenants on one store: one three-member store and N kube-apiservers, each with its own
# --etcd-prefix (/tenant-<i>), port and certificate folder (no controller-manager or
# scheduler), each driven by its own kubectl workload, and measured.
#
#   scripts/k8s/tenants.sh [--n 20] [--store cairn|etcd|etcd34] [--wave 4] [--objects 200]
#                          [--keep] [--results FILE]
#
#   --n N          tenants (apiservers) [20]
#   --wave W       apiservers started together; the next wave starts once all of these
#                  answer /readyz [4]
#   --objects N    configmaps each tenant creates [200]
#   (--store, --keep, --results as in control-plane.sh)
#
# Per tenant: a `kubectl get -w` on configmaps, N configmaps created in one kubectl call,
# a tenth labelled, a chunked list (--chunk-size 25: consistent reads, the count checked),
# a tenth deleted; the watch must see every ADDED and DELETED exactly once. The tenants'
# workloads run all at once. Measured: each apiserver's start to /readyz (its watch caches
# filled from the store: the watch creations against it), its RSS, its list time, its
# request latency by verb (apiserver_request_duration_seconds) and its storage latency
# (etcd_request_duration_seconds) from its /metrics, p50/p99; the same over all tenants;
# the store members' CPU and RSS; the load average. Exits non-zero on any failure.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/args.sh"
n=20
wave=4
objects=200
while (( $# )); do
    case "$1" in
        --n) n="$2"; shift 2 ;;
        --wave) wave="$2"; shift 2 ;;
        --objects) objects="$2"; shift 2 ;;
        *) common_arg "$@"; shift "$taken" ;;
    esac
done
compact_every=60s
chunk=25
base_port=27000

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$here/workload.sh"
source "$here/measure.sh"

result load_average_at_start "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
start_store
make_pki

tdir() { echo "$work/t$1"; }
tport() { echo $(( base_port + $1 )); }
# kt I KUBECTL_ARGS...: kubectl against tenant I's apiserver.
kt() { "$kubectl_bin" --kubeconfig "$(tdir "$1")/kubeconfig" --request-timeout=60s "${@:2}"; }

# ---- the apiservers, in waves --------------------------------------------------------------
declare -a api_pids t_start ready_ms
for (( first = 0; first < n; first += wave )); do
    last=$(( first + wave < n ? first + wave : n ))
    for (( i = first; i < last; i++ )); do
        mkdir -p "$(tdir "$i")"
        write_kubeconfig "$(tdir "$i")/kubeconfig" "$(tport "$i")"
        t_start[$i]=$(now_ms)
        launch_apiserver "$(tport "$i")" "$(tdir "$i")/pki" "$(tdir "$i")/apiserver.log" \
            --etcd-prefix "/tenant-$i" --profiling=false
        api_pids[$i]=$launched_pid
    done
    deadline=$(( $(date +%s) + 300 ))
    for (( i = first; i < last; i++ )); do
        until api_ready_port "$(tport "$i")"; do
            kill -0 "${api_pids[$i]}" 2>/dev/null \
                || fail "tenant $i's apiserver exited: $(tail -5 "$(tdir "$i")/apiserver.log")"
            (( $(date +%s) < deadline )) || fail "tenant $i's apiserver not ready within 300s"
            sleep 0.2
        done
        ready_ms[$i]=$(( $(now_ms) - t_start[$i] ))
    done
    log "apiservers $first..$(( last - 1 )) ready (${ready_ms[*]:first:last-first} ms)"
done

# ---- the workloads, all at once ---------------------------------------------------------------
for (( i = 0; i < n; i++ )); do
    kt "$i" create configmap wl-sentinel -n default --from-literal=k=v >/dev/null \
        || fail "tenant $i: first write failed"
    start_watch "t$i" configmaps --kubeconfig "$(tdir "$i")/kubeconfig"
done
log "$n watches established"
gen_list ConfigMap "$objects" 1 cm "$work/cm"
labelled=$(( (objects + 9) / 10 ))
deleted=$(( (objects + 8) / 10 ))

# tenant_workload I: writes "ok LIST_MS" or "FAIL why" to the tenant's folder.
tenant_workload() {
    local i="$1" d got t0 list_ms
    d="$(tdir "$i")"
    got="$(kt "$i" create -n default -f "$work/cm/part-0.yaml" -o name | wc -l)"
    [[ "$got" == "$objects" ]] || { echo "FAIL created $got configmaps" > "$d/outcome"; return; }
    kt "$i" label configmaps -n default -l batch=0 touched=yes >/dev/null \
        || { echo "FAIL label" > "$d/outcome"; return; }
    t0=$(now_ms)
    got="$(kt "$i" get configmaps -n default -l batch --chunk-size="$chunk" -o name | wc -l)"
    list_ms=$(( $(now_ms) - t0 ))
    [[ "$got" == "$objects" ]] || { echo "FAIL chunked list: $got configmaps" > "$d/outcome"; return; }
    got="$(kt "$i" get configmaps -n default -l touched=yes -o name | wc -l)"
    [[ "$got" == "$labelled" ]] || { echo "FAIL labelled: $got" > "$d/outcome"; return; }
    kt "$i" delete configmaps -n default -l batch=1 --wait=false >/dev/null \
        || { echo "FAIL delete" > "$d/outcome"; return; }
    echo "ok $list_ms" > "$d/outcome"
}
t0=$(now_ms)
wpids=()
for (( i = 0; i < n; i++ )); do tenant_workload "$i" & wpids+=($!); done
for p in "${wpids[@]}"; do wait "$p" || true; done
result workloads_ms $(( $(now_ms) - t0 ))
for (( i = 0; i < n; i++ )); do
    read -r outcome list_ms < "$(tdir "$i")/outcome" || fail "tenant $i: no outcome"
    [[ "$outcome" == ok ]] || fail "tenant $i: $outcome $list_ms"
    echo "$list_ms" > "$(tdir "$i")/list_ms"
done
for (( i = 0; i < n; i++ )); do
    check_watch "t$i" ADDED cm- "$objects"
    check_watch "t$i" MODIFIED cm- "$labelled"
    check_watch "t$i" DELETED cm- "$deleted"
done
# Tenants are apart: each sees only its own objects (the sentinel plus the configmaps left).
for (( i = 0; i < n; i++ )); do
    got="$(kt "$i" get configmaps -n default -o name | wc -l)"
    [[ "$got" == $(( objects - deleted + 1 )) ]] || fail "tenant $i lists $got configmaps"
done
log "$n tenants: every count and every watch event checked"

# ---- measurements -------------------------------------------------------------------------
# quantile P FILE: the P-quantile (nearest rank) of the numbers in FILE.
quantile() { sort -n "$2" | awk -v p="$1" '{v[NR] = $1} END {i = int(p * NR + 0.999); if (i < 1) i = 1; print v[i]}'; }
printf '%s\n' "${ready_ms[@]}" > "$work/ready_ms"
cat "$work"/t*/list_ms > "$work/list_ms"
rss_total=0
for (( i = 0; i < n; i++ )); do
    api_get_port "$(tport "$i")" /metrics > "$(tdir "$i")/metrics.txt" || fail "tenant $i /metrics"
    rss=$(( $(awk '$1 == "VmRSS:" {print $2}' "/proc/${api_pids[$i]}/status") / 1024 ))
    echo "$rss" >> "$work/rss_mib"
    rss_total=$(( rss_total + rss ))
    line="tenant $i: ready ${ready_ms[$i]} ms, RSS $rss MiB, chunked list $(cat "$(tdir "$i")/list_ms") ms"
    while read -r verb count p50 p99; do
        case "$verb" in POST|GET|LIST|PATCH|DELETE) line+=", $verb $p50/$p99" ;; esac
    done < <(hist_quantiles apiserver_request_duration_seconds verb "$(tdir "$i")/metrics.txt")
    echo "$line" >&2
    result "tenant_${i}_ready_ms" "${ready_ms[$i]}"
    result "tenant_${i}_rss_mib" "$rss"
done
result apiserver_ready_p50_ms "$(quantile 0.5 "$work/ready_ms")"
result apiserver_ready_max_ms "$(quantile 1 "$work/ready_ms")"
result apiserver_rss_total_mib "$rss_total"
result apiserver_rss_max_mib "$(quantile 1 "$work/rss_mib")"
result chunked_list_p50_ms "$(quantile 0.5 "$work/list_ms")"
result chunked_list_max_ms "$(quantile 1 "$work/list_ms")"
while read -r verb count p50 p99; do
    case "$verb" in WATCH|CONNECT) continue ;; esac
    result "apiserver_${verb}_count" "$count"
    result "apiserver_${verb}_p50_ms" "$p50"
    result "apiserver_${verb}_p99_ms" "$p99"
done < <(hist_quantiles apiserver_request_duration_seconds verb "$work"/t*/metrics.txt)
while read -r verb count p50 p99; do
    result "storage_${verb}_count" "$count"
    result "storage_${verb}_p50_ms" "$p50"
    result "storage_${verb}_p99_ms" "$p99"
done < <(hist_quantiles etcd_request_duration_seconds operation "$work"/t*/metrics.txt)
report_store_usage
result load_average_at_end "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
for (( i = 0; i < n; i++ )); do
    kill -0 "${api_pids[$i]}" 2>/dev/null || fail "tenant $i's apiserver exited"
done
log "PASS: $n tenants on $store"
