# The checked kubectl workload of scripts/k8s/control-plane.sh (sourced by it; uses its
# kc, fail, log, result, wait_for, now_ms and the sizes it sets). Every step checks the
# object counts it should leave behind.

# count_of KUBECTL_GET_ARGS...: number of objects a chunked list returns.
count_of() { kc get "$@" --chunk-size="$chunk" -o name | wc -l; }

# expect_count WHAT WANT KUBECTL_GET_ARGS...
expect_count() {
    local what="$1" want="$2" got
    shift 2
    got="$(count_of "$@")" || fail "listing $what failed"
    [[ "$got" == "$want" ]] || fail "$what: $got objects, expected $want"
}

# wait_count WHAT WANT SECONDS KUBECTL_GET_ARGS...: waits until a list has WANT objects.
wait_count() {
    local what="$1" want="$2" secs="$3" deadline got
    shift 3
    deadline=$(( $(date +%s) + secs ))
    while :; do
        got="$(count_of "$@" 2>/dev/null)" || got="?"
        [[ "$got" == "$want" ]] && return 0
        (( $(date +%s) < deadline )) || fail "$what: $got objects after ${secs}s, expected $want"
        sleep 0.5
    done
}

# gen_list KIND COUNT PARTS PREFIX FOLDER: writes PARTS v1 Lists holding COUNT objects of
# KIND (ConfigMap, Secret or Widget) named PREFIX-<i>, labelled batch=<i mod 10>.
gen_list() {
    local kind="$1" count="$2" parts="$3" prefix="$4" dir="$5" p
    mkdir -p "$dir"
    for (( p = 0; p < parts; p++ )); do
        awk -v kind="$kind" -v count="$count" -v parts="$parts" -v p="$p" -v prefix="$prefix" '
        BEGIN {
            print "apiVersion: v1\nkind: List\nitems:"
            for (i = p; i < count; i += parts) {
                if (kind == "Widget") api = "cairn.test/v1"; else api = "v1"
                printf "- apiVersion: %s\n  kind: %s\n  metadata:\n    name: %s-%d\n", api, kind, prefix, i
                printf "    labels: {batch: \"%d\"}\n", i % 10
                if (kind == "ConfigMap") printf "  data: {index: \"%d\", payload: \"%0200d\"}\n", i, i
                if (kind == "Secret") printf "  stringData: {index: \"%d\", token: \"%064d\"}\n", i, i
                if (kind == "Widget") printf "  spec: {index: %d, size: \"medium\"}\n", i
            }
        }' > "$dir/part-$p.yaml"
    done
}

# create_parallel NAMESPACE FOLDER: creates every part file of FOLDER with one kubectl per
# part, in parallel; prints how many objects were created.
create_parallel() {
    local ns="$1" dir="$2" f pids=() rc=0 pid
    for f in "$dir"/part-*.yaml; do
        kc create -n "$ns" -f "$f" -o name > "$f.out" 2> "$f.err" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    if (( rc )); then cat "$dir"/*.err >&2; fail "kubectl create in $ns failed"; fi
    cat "$dir"/*.out | wc -l
}

# start_watch NAME RESOURCE: `kubectl get -w` on RESOURCE in every namespace, one line
# per event ("EVENT namespace name data.v", <none> without data.v), into $work/watch-NAME.txt. Returns once the watch
# has listed the sentinel object (so it is established before the workload goes on).
declare -A watch_pid
start_watch() {
    local name="$1" resource="$2"
    "$kubectl_bin" get "$resource" -A --watch --output-watch-events --no-headers \
        -o custom-columns=EVENT:.type,NS:.object.metadata.namespace,NAME:.object.metadata.name,V:.object.data.v \
        "${@:3}" >> "$work/watch-$name.txt" 2>> "$work/watch-$name.err" &
    watch_pid[$name]=$!; pids+=($!)
    if [[ "${3:-}" != --watch-only ]]; then
        wait_for "the $name watch to list its sentinel" 60 grep -q "wl-sentinel" "$work/watch-$name.txt"
    fi
}

# sentinel_touched N: the configmap watch has seen N or more updates of the sentinel.
sentinel_touched() { (( $(grep -c "^MODIFIED  *default  *wl-sentinel" "$work/watch-cm.txt") >= $1 )); }

# rewatch_configmaps: a new `kubectl get -w --watch-only` on configmaps after an apiserver
# restart, appending to the same file; established once it sees the sentinel updated.
rewatch_configmaps() {
    local seen i
    seen=$(grep -c "^MODIFIED  *default  *wl-sentinel" "$work/watch-cm.txt" || true)
    start_watch cm configmaps --watch-only
    for (( i = 1; i <= 60; i++ )); do
        kc label configmap wl-sentinel -n default --overwrite "touch=$i" >/dev/null \
            || fail "updating the sentinel after the restart"
        sentinel_touched $(( seen + 1 )) && return 0
        sleep 0.5
    done
    fail "the configmap watch did not come back after the apiserver restart"
}

# watch_events NAME EVENT PREFIX: how many EVENT lines the watch NAME has for objects whose
# name starts with PREFIX.
watch_events() {
    awk -v ev="$2" -v pre="$3" '$1 == ev && index($3, pre) == 1' "$work/watch-$1.txt" | wc -l
}

# watch_has NAME EVENT PREFIX WANT: at least WANT such events.
watch_has() { (( $(watch_events "$1" "$2" "$3") >= $4 )); }

# check_watch NAME EVENT PREFIX WANT: exactly WANT events, each object once.
check_watch() {
    local name="$1" ev="$2" pre="$3" want="$4" dups
    wait_for "the $name watch to see $want $ev events of $pre*" 120 \
        watch_has "$name" "$ev" "$pre" "$want"
    [[ "$(watch_events "$name" "$ev" "$pre")" == "$want" ]] \
        || fail "$name watch: $(watch_events "$name" "$ev" "$pre") $ev events of $pre*, expected $want"
    dups="$(awk -v ev="$ev" -v pre="$pre" '$1 == ev && index($3, pre) == 1 {print $2 "/" $3}' \
        "$work/watch-$name.txt" | sort | uniq -d | sed -n 1,3p)"
    [[ -z "$dups" ]] || fail "$name watch: duplicate $ev events for $dups"
}

run_workload() {
    local t0 ms i ns n labelled deleted pages
    local bulk=wl-bulk
    local all_ns=("$bulk")
    for (( i = 0; i < namespaces; i++ )); do all_ns+=("wl-$i"); done

    # Watches first, so they see the whole run.
    kc create configmap wl-sentinel -n default --from-literal=k=v >/dev/null \
        || fail "first write through the apiserver failed"
    start_watch cm configmaps
    log "watch on configmaps established"

    # Namespaces and deployments: the controller-manager makes ReplicaSets and Pods.
    for ns in "${all_ns[@]}"; do kc create namespace "$ns" >/dev/null || fail "create ns $ns"; done
    n="$(kc get namespaces -o name | grep -c '^namespace/wl-')" || true
    [[ "$n" == "${#all_ns[@]}" ]] || fail "namespaces: $n, expected ${#all_ns[@]}"
    for (( i = 0; i < namespaces; i++ )); do
        kc create deployment web -n "wl-$i" --image=registry.invalid/pause:1 \
            --replicas="$replicas" >/dev/null || fail "create deployment in wl-$i"
    done
    wait_count "replicasets" "$namespaces" 120 replicasets -A -l app=web
    wait_count "pods" $(( namespaces * replicas )) 120 pods -A -l app=web
    kc scale deployment web -n wl-0 --replicas=$(( replicas + 2 )) >/dev/null || fail "scale"
    wait_count "pods after scale-up" $(( namespaces * replicas + 2 )) 120 pods -A -l app=web
    log "deployments: $namespaces ReplicaSets, $(( namespaces * replicas + 2 )) Pods (Pending, no nodes)"

    # ConfigMaps and Secrets by the thousand.
    gen_list ConfigMap "$objects" "$parallel" cm "$work/cm"
    t0=$(now_ms)
    n="$(create_parallel "$bulk" "$work/cm")"
    ms=$(( $(now_ms) - t0 ))
    [[ "$n" == "$objects" ]] || fail "created $n configmaps, expected $objects"
    result create_configmaps_ms "$ms"
    result create_configmaps_per_s $(( objects * 1000 / (ms > 0 ? ms : 1) ))
    log "created $objects configmaps in ${ms}ms"

    gen_list Secret "$secrets" "$parallel" sec "$work/sec"
    t0=$(now_ms)
    n="$(create_parallel "$bulk" "$work/sec")"
    [[ "$n" == "$secrets" ]] || fail "created $n secrets, expected $secrets"
    result create_secrets_ms $(( $(now_ms) - t0 ))
    log "created $secrets secrets"

    # Paginated lists: the right count, over several pages.
    t0=$(now_ms)
    n="$(kc get configmaps -n "$bulk" -l batch --chunk-size="$chunk" -o name -v=6 \
        2> "$work/list-cm.log" | wc -l)"
    ms=$(( $(now_ms) - t0 ))
    [[ "$n" == "$objects" ]] || fail "paginated list: $n configmaps, expected $objects"
    pages="$(grep -c "configmaps?.*limit=$chunk" "$work/list-cm.log" || true)"
    (( pages >= (objects + chunk - 1) / chunk )) \
        || fail "paginated list took $pages pages, expected $(( (objects + chunk - 1) / chunk ))"
    result list_configmaps_ms "$ms"
    result list_configmaps_pages "$pages"
    t0=$(now_ms)
    n="$(kc get configmaps -n "$bulk" -l batch --chunk-size=0 -o name | wc -l)"
    result list_configmaps_unpaged_ms $(( $(now_ms) - t0 ))
    [[ "$n" == "$objects" ]] || fail "unpaged list: $n configmaps, expected $objects"
    expect_count "secrets" "$secrets" secrets -n "$bulk" -l batch
    log "lists: $objects configmaps in $pages pages of $chunk (${ms}ms), $secrets secrets"

    # Updates seen by the watch: label one batch in one kubectl call.
    labelled=$(( (objects + 9) / 10 ))
    kc label configmaps -n "$bulk" -l batch=0 touched=yes >/dev/null || fail "label batch 0"
    expect_count "labelled configmaps" "$labelled" configmaps -n "$bulk" -l touched=yes
    check_watch cm ADDED cm- "$objects"
    check_watch cm MODIFIED cm- "$labelled"

    # The apiserver restarted on the filled store: its time to ready (every watch cache
    # filled again from the store); the configmap watch is opened again after it.
    kill "${watch_pid[cm]}"
    restart_apiserver apiserver_restart_ready_ms
    rewatch_configmaps
    expect_count "configmaps after the apiserver restart" "$objects" configmaps -n "$bulk" -l batch
    log "apiserver restarted on $(( objects + secrets )) objects; watch re-established"

    # A CRD with custom objects, watched too.
    kc apply -f - >/dev/null <<'EOF' || fail "create CRD"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.cairn.test
spec:
  group: cairn.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              index: {type: integer}
              size: {type: string}
EOF
    kc wait --for condition=established --timeout=60s crd/widgets.cairn.test >/dev/null \
        || fail "CRD not established"
    wait_for "the widget resource to be served" 60 kc get widgets -A
    kc apply -n default -f - >/dev/null <<'EOF' || fail "create sentinel widget"
apiVersion: cairn.test/v1
kind: Widget
metadata: {name: wl-sentinel}
spec: {index: -1, size: small}
EOF
    start_watch widget widgets
    gen_list Widget "$customs" "$parallel" w "$work/w"
    n="$(create_parallel "$bulk" "$work/w")"
    [[ "$n" == "$customs" ]] || fail "created $n widgets, expected $customs"
    expect_count "widgets" "$customs" widgets -n "$bulk"
    log "CRD established, $customs widgets"

    # Deletes: one batch by label, every widget, a deployment (the garbage collector removes
    # its ReplicaSet and Pods), then every namespace (the namespace controller empties it).
    kc delete configmaps -n "$bulk" -l batch=1 --wait=false >/dev/null || fail "delete batch 1"
    deleted=$(( (objects + 8) / 10 ))
    expect_count "configmaps after deleting batch 1" $(( objects - deleted )) configmaps -n "$bulk" -l batch
    kc delete widgets -n "$bulk" --all --wait=false >/dev/null || fail "delete widgets"
    wait_count "widgets after delete" 0 60 widgets -n "$bulk"
    check_watch widget ADDED w- "$customs"
    check_watch widget DELETED w- "$customs"
    kc delete deployment web -n wl-0 >/dev/null || fail "delete deployment"
    wait_count "pods in wl-0 after deleting its deployment" 0 120 pods -n wl-0
    wait_count "replicasets in wl-0" 0 60 replicasets -n wl-0
    t0=$(now_ms)
    kc delete namespace "${all_ns[@]}" --wait=false >/dev/null || fail "delete namespaces"
    for ns in "${all_ns[@]}"; do
        kc wait --for=delete "namespace/$ns" --timeout=300s >/dev/null 2>&1 \
            || fail "namespace $ns not deleted within 300s"
    done
    result delete_namespaces_ms $(( $(now_ms) - t0 ))
    wait_count "pods left" 0 30 pods -A -l app=web
    kc delete crd widgets.cairn.test >/dev/null || fail "delete CRD"
    log "deleted: batch 1, widgets, deployment, all namespaces, the CRD"

    # The watch saw every change exactly once.
    check_watch cm ADDED cm- "$objects"
    check_watch cm MODIFIED cm- "$labelled"
    check_watch cm DELETED cm- "$objects"
    for i in "${watch_pid[@]}"; do
        kill -0 "$i" 2>/dev/null || fail "a kubectl get -w exited early: $(cat "$work"/watch-*.err)"
    done
    log "watches saw every ADDED/MODIFIED/DELETED once ($objects configmaps, $customs widgets)"
}
