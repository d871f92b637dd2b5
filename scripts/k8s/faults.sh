# The fault mode of scripts/k8s/control-plane.sh (`--faults`; sourced by it, uses its kc,
# api_get, fail, log, result, wait_for, now_ms, the store helpers of lib.sh and the watch
# helpers of workload.sh). While writers create, patch and delete configmaps through the
# apiserver, two `kubectl get -w` watch them, a probe patches one configmap every 0.2 s and
# the controller-manager reconciles a Deployment being scaled, the store is hit by:
#   1. kill -9 of its current leader (found with `etcdctl endpoint status`), restarted
#      once the other two have moved on; three times;
#   2. SIGSTOP of the leader, then of a follower, for 6 s (six election timeouts), SIGCONT;
#   3. a rolling restart: each member in turn SIGTERMed, started again, and healthy (it
#      answers a linearizable read) before the next.
# Every request is retried (at most $attempts times, 0.5 s apart) on a connection error,
# 429, 500, 503 or 504; results: how many retries, the longest a request took through its
# retries, the longest gap between two successful probes. Then it checks:
#   - no lost or duplicated object: every object the writers were told exists exists
#     exactly once with the last value written; an object whose request ran out of
#     attempts is in one of the states that request allowed; a create answered 409 on
#     its first attempt, or a patch or first delete answered 404, fails;
#   - no stuck watch: both watches are still running and their last event for every
#     object matches the final list (DELETED, or no event, for an absent one);
#   - no relist storm: the apiserver's watch cache initializations
#     (apiserver_watch_cache_initializations_total), terminated watchers
#     (apiserver_terminated_watchers_total) and LISTs sent to the store
#     (etcd_requests_total, operation list*) during the faults, its "Terminating all
#     watchers" lines and its "watch chan error" lines by reason are reported; a
#     terminated watcher, or a store watch ending for a reason other than "compacted" or
#     "no leader" (see report_faults), fails. The faults start after the apiserver's first
#     compaction.
#   - the Deployment ends with the replicas it was last scaled to.

source "$here/workload.sh"

fdir="$work/faults"
fns=faults
attempts=60
writers=3

# api_call METHOD PATH [BODY [CONTENT_TYPE]]: one request, prints the HTTP code (000 when
# no answer arrived).
api_call() {
    local args=(-sk -o /dev/null -w '%{http_code}' --max-time 10 -X "$1"
        -H "Authorization: Bearer $token")
    if [[ -n "${3:-}" ]]; then args+=(-H "Content-Type: ${4:-application/json}" -d "$3"); fi
    curl "${args[@]}" "https://$ip:$api_port$2" || true
}

# fop LEDGER NAME OP METHOD PATH [BODY [CONTENT_TYPE]]: one writer operation with bounded
# retries; appends "NAME OP OUTCOME ATTEMPTS START_MS END_MS LAST_CODE" to LEDGER.
# OUTCOME: ok, existed (a create retried after an unanswered attempt found it), gone (a
# delete retried likewise found it gone), fail (out of attempts), or bad-CODE (an answer
# no correct store allows). Returns 0 on ok/existed/gone.
fop() {
    local ledger="$1" name="$2" op="$3" t0 n code out
    shift 3
    t0=$(now_ms)
    for (( n = 1; n <= attempts; n++ )); do
        code="$(api_call "$@")"
        case "$code" in
            2??) out=ok ;;
            409) if [[ "$op" == create ]] && (( n > 1 )); then out=existed; else out="bad-$code"; fi ;;
            404) if [[ "$op" == delete ]] && (( n > 1 )); then out=gone; else out="bad-$code"; fi ;;
            000|429|500|502|503|504) out=fail; sleep 0.5; continue ;;
            *) out="bad-$code" ;;
        esac
        break
    done
    (( n <= attempts )) || n=$attempts
    echo "$name $op $out $n $t0 $(now_ms) $code" >> "$ledger"
    [[ "$out" == ok || "$out" == existed || "$out" == gone ]]
}

# writer J: objects fJ-0, fJ-1, ... each created (v=0), patched to v=1 and v=2, and every
# third deleted, until $fdir/stop exists. An object whose operation failed is left alone.
writer() {
    local j="$1" k=0 name path ledger v
    ledger="$fdir/ledger-$j"
    path="/api/v1/namespaces/$fns/configmaps"
    while [[ ! -e "$fdir/stop" ]]; do
        name="f$j-$k"
        k=$(( k + 1 ))
        fop "$ledger" "$name" create POST "$path" \
            "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"$name\"},\"data\":{\"v\":\"0\"}}" \
            || continue
        for v in 1 2; do
            fop "$ledger" "$name" "v$v" PATCH "$path/$name" "{\"data\":{\"v\":\"$v\"}}" \
                application/merge-patch+json || continue 2
        done
        if (( k % 3 == 1 )); then fop "$ledger" "$name" delete DELETE "$path/$name" || true; fi
    done
}

# probe: patches the configmap probe every 0.2 s; "END_MS CODE" per request.
probe() {
    local i=0 code
    while [[ ! -e "$fdir/stop" ]]; do
        i=$(( i + 1 ))
        code="$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 -X PATCH \
            -H "Authorization: Bearer $token" -H "Content-Type: application/merge-patch+json" \
            -d "{\"data\":{\"n\":\"$i\"}}" "https://$ip:$api_port/api/v1/namespaces/$fns/configmaps/probe" || true)"
        echo "$(now_ms) $code" >> "$fdir/probe"
        sleep 0.2
    done
}

# kc_retry WHAT KUBECTL_ARGS...: kubectl with the writers' bounded retries.
kc_retry() {
    local what="$1" n
    shift
    for (( n = 1; n <= attempts; n++ )); do
        kc "$@" >/dev/null 2>>"$fdir/kc-retry.err" && return 0
        echo "retry $what" >> "$fdir/kc-retries"
        sleep 0.5
    done
    fail "$what: out of $attempts attempts"
}

# ---- the store's members ----------------------------------------------------------------
# leader_index: the index of the member that says it leads (nothing if none answers so).
leader_index() {
    local url i
    url="$(etcdctl_ --endpoints "$endpoints" endpoint status 2>/dev/null \
        | awk -F', ' '$5 == "true" {print $1; exit}')" || true
    for i in 0 1 2; do [[ "$url" == "$(member_url "$i")" ]] && echo "$i"; done
    return 0
}
# member_healthy I: member I answers a linearizable read (it has a leader and caught up to
# the read index).
member_healthy() { etcdctl_ --endpoints "$(member_url "$1")" endpoint health; }
wait_leader() {
    local l deadline=$(( $(date +%s) + 30 ))
    while :; do
        l="$(leader_index)"
        [[ -n "$l" ]] && { echo "$l"; return 0; }
        (( $(date +%s) < deadline )) || fail "no leader within 30s"
        sleep 0.2
    done
}
fault() { echo "$(now_ms) $*" >> "$fdir/fault-log"; log "fault: $*"; }

kill_leader() {
    local l
    l="$(wait_leader)"
    fault "kill -9 leader m$l (pid ${store_pids[$l]})"
    kill -9 "${store_pids[$l]}"
    wait "${store_pids[$l]}" 2>/dev/null || true
    sleep 3
    wait_leader >/dev/null
    start_member "$l"
    wait_for "m$l to rejoin after kill -9" 60 member_healthy "$l"
    fault "m$l restarted and healthy"
    sleep 2
}

pause_member() {
    local i="$1"
    fault "SIGSTOP m$i for 6s"
    kill -STOP "${store_pids[$i]}"
    sleep 6
    kill -CONT "${store_pids[$i]}"
    wait_for "m$i to be healthy after SIGCONT" 60 member_healthy "$i"
    fault "m$i continued and healthy"
    sleep 2
}

restart_member() {
    local i="$1" p="${store_pids[$1]}"
    fault "SIGTERM m$i (rolling restart)"
    kill "$p"
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && fail "m$i did not stop within 20s of SIGTERM"
    wait "$p" 2>/dev/null || true
    start_member "$i"
    wait_for "m$i to rejoin after its restart" 60 member_healthy "$i"
    fault "m$i restarted and healthy"
    sleep 1
}

# ---- measurements -----------------------------------------------------------------------
# metric_sum FILE NAME [LABEL_REGEX]: the sum of every sample of NAME (whose labels match
# LABEL_REGEX) in a /metrics dump.
metric_sum() {
    awk -v m="$2" -v re="${3:-}" '
        $1 == m || index($1, m "{") == 1 { if (re == "" || $1 ~ re) s += $NF }
        END { printf "%d\n", s }' "$1"
}

report_faults() {
    local before="$fdir/metrics-before" after="$fdir/metrics-after" m d
    api_get /metrics > "$after" || fail "reading the apiserver's /metrics"
    for m in apiserver_watch_cache_initializations_total apiserver_terminated_watchers_total; do
        d=$(( $(metric_sum "$after" "$m") - $(metric_sum "$before" "$m") ))
        result "faults_${m}" "$d"
    done
    # Why the apiserver's store watches ended. A watch the Go client resumes on another
    # member (the store answered Unavailable) logs nothing; "compacted": it resumed from a
    # revision the apiserver's own compaction had removed (a watch on an idle resource
    # resumes from its creation revision); "no leader": a require-leader watch ended by a
    # member without a leader. Anything else (e.g. EOF: a stream ended with OK) is the
    # store's fault.
    grep -o 'watch chan error: .*' "$work/apiserver.log" | sed 's/^watch chan error: //' \
        | sort | uniq -c > "$fdir/watch-errors" || true
    result faults_watch_ended_compacted "$(awk '/required revision has been compacted/ {s += $1} END {print s + 0}' "$fdir/watch-errors")"
    result faults_watch_ended_no_leader "$(awk '/etcdserver: no leader/ {s += $1} END {print s + 0}' "$fdir/watch-errors")"
    d="$(awk '!/required revision has been compacted|etcdserver: no leader/ {s += $1} END {print s + 0}' "$fdir/watch-errors")"
    result faults_watch_ended_other "$d"
    (( d == 0 )) || fail "store watches ended with: $(cat "$fdir/watch-errors")"
    d=$(( $(metric_sum "$after" apiserver_terminated_watchers_total) - $(metric_sum "$before" apiserver_terminated_watchers_total) ))
    (( d == 0 )) || fail "the apiserver terminated $d watchers during the faults"
    result faults_store_lists $(( $(metric_sum "$after" etcd_requests_total 'operation="list') \
        - $(metric_sum "$before" etcd_requests_total 'operation="list') ))
    result faults_log_terminating_watchers "$(grep -c 'Terminating all watchers' "$work/apiserver.log" || true)"
    result faults_log_watch_chan_errors "$(grep -c 'watch chan error' "$work/apiserver.log" || true)"
    result faults_apiserver_error_lines "$(grep -cE '^E[0-9]{4} ' "$work/apiserver.log" || true)"
    cat "$fdir"/ledger-* > "$fdir/ledger"
    result faults_writer_ops "$(wc -l < "$fdir/ledger")"
    result faults_writer_retries "$(awk '{s += $4 - 1} END {print s + 0}' "$fdir/ledger")"
    result faults_writer_ops_failed "$(awk '$3 == "fail"' "$fdir/ledger" | wc -l)"
    result faults_writer_longest_op_ms "$(awk '$6 - $5 > m {m = $6 - $5} END {print m + 0}' "$fdir/ledger")"
    result faults_kubectl_retries "$(cat "$fdir/kc-retries" 2>/dev/null | wc -l)"
    result faults_probes "$(wc -l < "$fdir/probe")"
    result faults_probes_failed "$(awk '$2 !~ /^2/' "$fdir/probe" | wc -l)"
    local gap
    gap="$(awk '$2 ~ /^2/ { if (last && $1 - last > m) { m = $1 - last; from = last }; last = $1 }
        END {printf "%.0f %.0f\n", m, from}' "$fdir/probe")"
    result faults_longest_unavailable_ms "${gap% *}"
    # the fault that gap followed
    log "longest gap between successful probes: ${gap% *} ms, after: $(awk -v t="${gap#* }" \
        '$1 <= t {line = $0} END {sub(/^[0-9]+ /, "", line); print line}' "$fdir/fault-log")"
}

# final_state: "NAME VALUE" for every configmap f* in the namespace (VALUE - if it has no
# v), from one list; fails on a name listed twice, or a chunked list that disagrees.
final_state() {
    kc get configmaps -n "$fns" -o json \
        | jq -r '.items[] | select(.metadata.name | startswith("f")) | "\(.metadata.name) \(.data.v // "-")"' \
        | sort > "$fdir/final" || fail "listing the configmaps after the faults"
    local dups
    dups="$(cut -d' ' -f1 "$fdir/final" | uniq -d | sed -n 1,5p)"
    [[ -z "$dups" ]] || fail "objects listed twice: $dups"
    kc get configmaps -n "$fns" --chunk-size=7 -o name | sed -n 's|^configmap/\(f.*\)|\1|p' | sort \
        > "$fdir/final-chunked" || fail "chunked list after the faults"
    diff <(cut -d' ' -f1 "$fdir/final") "$fdir/final-chunked" >&2 \
        || fail "the chunked list differs from the unchunked one"
}

# check_objects: the final state against what the writers were told (see the top).
check_objects() {
    local bad
    bad="$(awk '$3 ~ /^bad-/' "$fdir/ledger" | sed -n 1,5p)"
    [[ -z "$bad" ]] || fail "answers no correct store allows (NAME OP OUTCOME ATTEMPTS START END CODE): $bad"
    # Allowed final values per object, "|"-separated; "absent" for none.
    awk '
        FNR == NR {
            ok = ($3 == "ok" || $3 == "existed" || $3 == "gone")
            if ($2 == "create") st[$1] = ok ? "0" : "0|absent"
            else if ($2 == "delete") st[$1] = ok ? "absent" : st[$1] "|absent"
            else { v = substr($2, 2); st[$1] = ok ? v : st[$1] "|" v }
            next
        }
        { final[$1] = $2 }
        END {
            for (n in st) {
                got = (n in final) ? final[n] : "absent"
                if (index("|" st[n] "|", "|" got "|") == 0) print n ": " got ", allowed " st[n]
            }
            for (n in final) if (!(n in st)) print n ": present, never written"
        }' "$fdir/ledger" "$fdir/final" > "$fdir/object-errors"
    [[ ! -s "$fdir/object-errors" ]] || fail "lost, stale or extra objects: $(head -5 "$fdir/object-errors")"
    result faults_objects_checked "$(cut -d' ' -f1 "$fdir/ledger" | sort -u | wc -l)"
    result faults_objects_present "$(wc -l < "$fdir/final")"
}

# watch_agrees NAME: the watch's last event per f* object matches the final list.
watch_agrees() {
    awk -v ns="$fns" '
        FNR == NR { if ($2 == ns && index($3, "f") == 1) last[$3] = $1 " " $4; next }
        { final[$1] = $2 }
        END {
            for (n in final) if (last[n] !~ /^(ADDED|MODIFIED) / || substr(last[n], index(last[n], " ") + 1) != final[n])
                print n ": final " final[n] ", last event " last[n]
            for (n in last) if (!(n in final) && last[n] !~ /^DELETED /) print n ": absent, last event " last[n]
        }' "$work/watch-$1.txt" "$fdir/final" > "$fdir/watch-$1-errors"
    [[ ! -s "$fdir/watch-$1-errors" ]]
}

run_faults() {
    local i l f p wpids=()
    mkdir -p "$fdir"
    kc create configmap wl-sentinel -n default --from-literal=k=v >/dev/null \
        || fail "first write through the apiserver failed"
    kc create namespace "$fns" >/dev/null || fail "create namespace $fns"
    kc create configmap probe -n "$fns" --from-literal=n=0 >/dev/null || fail "create the probe"
    start_watch f1 configmaps
    start_watch f2 configmaps
    kc create deployment web -n "$fns" --image=registry.invalid/pause:1 --replicas=3 >/dev/null \
        || fail "create deployment"
    wait_count "pods" 3 120 pods -n "$fns" -l app=web
    # Faults only after the apiserver's first compaction: from then on a watch resumed from
    # its creation revision finds it compacted, on any store, so every run sees the same.
    wait_for "the apiserver's first compaction" 120 store_compacted
    api_get /metrics > "$fdir/metrics-before" || fail "reading the apiserver's /metrics"
    log "watches, probe and a 3-replica deployment up; starting $writers writers and the faults"

    for (( i = 0; i < writers; i++ )); do writer "$i" & wpids+=($!); pids+=($!); done
    probe & wpids+=($!); pids+=($!)
    sleep 3

    for i in 1 2 3; do
        kill_leader
        if (( i == 1 )); then kc_retry "scale to 5" scale deployment web -n "$fns" --replicas=5; fi
    done
    l="$(wait_leader)"
    pause_member "$l"
    f=$(( (l + 1) % 3 ))
    if [[ "$(wait_leader)" == "$f" ]]; then f=$(( (f + 1) % 3 )); fi
    pause_member "$f"
    for i in 0 1 2; do restart_member "$i"; done
    kc_retry "scale to 2" scale deployment web -n "$fns" --replicas=2
    sleep 3
    touch "$fdir/stop"
    for p in "${wpids[@]}"; do wait "$p" || true; done
    log "faults done; writers stopped"

    report_faults
    final_state
    check_objects
    for i in f1 f2; do
        kill -0 "${watch_pid[$i]}" 2>/dev/null || fail "kubectl get -w ($i) exited: $(cat "$work/watch-$i.err")"
        if ! wait_for_quiet 60 watch_agrees "$i"; then
            fail "stuck watch $i: $(head -5 "$fdir/watch-$i-errors")"
        fi
    done
    wait_count "pods after the last scale" 2 120 pods -n "$fns" -l app=web
    log "no lost or duplicated object ($(wc -l < "$fdir/final") present), both watches agree with the final list, deployment reconciled"
}

# wait_for_quiet SECONDS COMMAND...: like wait_for, but returns 1 instead of failing.
wait_for_quiet() {
    local deadline=$(( $(date +%s) + $1 ))
    shift
    until "$@"; do
        (( $(date +%s) < deadline )) || return 1
        sleep 0.5
    done
}
