# Helpers shared by scripts/k8s/control-plane.sh and scripts/k8s/tenants.sh (sourced by
# them, after args.sh and their own options, and after they set `compact_every`): the binaries, the
# work folder and clean-up, logging and results, the three store members (started,
# stopped and restarted one by one, for the fault mode), certificates and tokens, and
# kube-apiserver itself. Everything listens on 127.0.0.15.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${CAIRN_REPO:-$(cd "$here/../.." && pwd)}"
ip=127.0.0.15
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
    *) echo "$(basename "$0"): --store must be cairn, etcd34 or etcd" >&2; exit 2 ;;
esac

# ---- work folder, processes, clean-up ---------------------------------------------------
work="$(mktemp -d /tmp/cairn-k8s.XXXXXX)"
pids=()        # everything but the store members, in start order
store_pids=()  # the store members' current processes, by member index
# stop_all PID...: SIGTERM to all, up to 5 s for them to exit, then SIGKILL to the rest.
stop_all() {
    local p left
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        left=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && left=1; done
        (( left )) || break
        sleep 0.1
    done
    for p in "$@"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # Watches, controllers and the apiservers stop before the store.
    (( ${#pids[@]} == 0 )) || stop_all "${pids[@]}"
    for i in "${!store_pids[@]}"; do kill -CONT "${store_pids[$i]}" 2>/dev/null || true; done
    (( ${#store_pids[@]} == 0 )) || stop_all "${store_pids[@]}"
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
member_url() { echo "http://$ip:${client_ports[$1]}"; }
etcdctl_() { ETCDCTL_API=3 etcdctl --dial-timeout 2s --command-timeout 5s "$@"; }

# start_member I: starts member I on its data folder (new or existing; a restarted member
# finds its data and ignores the initial-cluster flags, as etcd does).
start_member() {
    local i="$1"
    "$store_bin" --name "m$i" --data-dir "$work/m$i" \
        --listen-client-urls "$(member_url "$i")" \
        --advertise-client-urls "$(member_url "$i")" \
        --listen-peer-urls "http://$ip:${peer_ports[$i]}" \
        --initial-advertise-peer-urls "http://$ip:${peer_ports[$i]}" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token cairn-k8s >> "$work/m$i.log" 2>&1 &
    store_pids[$i]=$!
}

# start_store: the three members, healthy; records how long that took.
start_store() {
    local t0 i
    t0=$(now_ms)
    for i in 0 1 2; do start_member "$i"; done
    log "store $store ($store_bin) starting on $endpoints"
    wait_for "the store to be healthy" 60 etcdctl_ --endpoints "$endpoints" endpoint health
    result store_ready_ms $(( $(now_ms) - t0 ))
}

# store_compacted: revision 1 is gone (kube-apiserver compacts every --etcd-compaction-interval
# to the revision it saw one interval before).
store_compacted() {
    local out
    out="$(etcdctl_ --endpoints "$endpoints" get /registry/health --rev=1 2>&1)" || true
    [[ "$out" == *"required revision has been compacted"* ]]
}

# ---- certificates, keys, tokens, kubeconfig ----------------------------------------------
# make_pki: a service-account key pair and a static admin token ($token) in $work/pki.
make_pki() {
    mkdir -p "$work/pki"
    openssl genrsa -out "$work/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$work/pki/sa.key" -pubout -out "$work/pki/sa.pub" 2>/dev/null
    token="$(openssl rand -hex 24)"
    echo "$token,cairn-admin,cairn-admin,system:masters" > "$work/pki/tokens.csv"
}

# write_kubeconfig FILE PORT: a kubeconfig for the admin token against the apiserver on PORT.
write_kubeconfig() {
    cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cairn
  cluster:
    server: https://$ip:$2
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
}

# api_get_port PORT PATH: an authenticated GET against the apiserver on PORT.
api_get_port() { curl -sk --max-time 10 -H "Authorization: Bearer $token" "https://$ip:$1$2"; }
api_ready_port() { [[ "$(api_get_port "$1" /readyz)" == ok ]]; }

# launch_apiserver PORT CERT_DIR LOG [EXTRA_FLAGS...]: starts a kube-apiserver on the
# store (log appended to LOG), without waiting; its pid is in $launched_pid.
launch_apiserver() {
    local port="$1" certs="$2" logf="$3"
    shift 3
    mkdir -p "$certs"
    "$kbin/kube-apiserver" \
        --etcd-servers "$endpoints" \
        --etcd-compaction-interval "$compact_every" \
        --bind-address "$ip" --advertise-address "$ip" --secure-port "$port" \
        --cert-dir "$certs" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$work/pki/sa.pub" \
        --service-account-signing-key-file "$work/pki/sa.key" \
        --token-auth-file "$work/pki/tokens.csv" \
        --authorization-mode RBAC --endpoint-reconciler-type none \
        --service-cluster-ip-range 10.96.0.0/16 \
        "$@" >> "$logf" 2>&1 &
    launched_pid=$!
    pids+=("$launched_pid")
}
