# Measurements and log checks of scripts/k8s/control-plane.sh (sourced by it; uses its
# api_get, result, fail, store_pids, work).

# hist_quantiles METRIC LABEL [FILE...]: from the apiserver's /metrics histogram METRIC
# (in FILE..., default $work/metrics.txt; several are summed), prints
# "<label value> <count> <p50 ms> <p99 ms>" per value of LABEL (summed over the other
# labels), interpolating inside buckets the way Prometheus' histogram_quantile does.
hist_quantiles() {
    local metric="$1" label="$2"
    shift 2
    (( $# )) || set -- "$work/metrics.txt"
    awk -v m="${metric}_bucket{" -v lab="$label=\"" '
        index($0, m) == 1 {
            if (!match($0, lab "[^\"]*\"")) next
            key = substr($0, RSTART + length(lab), RLENGTH - length(lab) - 1)
            if (!match($0, "le=\"[^\"]*\"")) next
            le = substr($0, RSTART + 4, RLENGTH - 5)
            sum[key " " le] += $NF
        }
        END { for (k in sum) print k, sum[k] }' "$@" \
    | sort -k1,1 -k2,2g \
    | awk '
        function flush() {
            if (key == "" || total == 0) return
            printf "%s %d %.1f %.1f\n", key, total, q(0.5), q(0.99)
        }
        function q(p,   rank, i, lo, plo) {
            rank = p * total; lo = 0; plo = 0
            for (i = 1; i <= n; i++) {
                if (c[i] >= rank) {
                    if (l[i] == "+Inf") return lo * 1000
                    if (c[i] == plo) return l[i] * 1000
                    return (lo + (l[i] - lo) * (rank - plo) / (c[i] - plo)) * 1000
                }
                lo = l[i]; plo = c[i]
            }
            return lo * 1000
        }
        $1 != key { flush(); key = $1; n = 0; total = 0 }
        { n++; l[n] = $2; c[n] = $3; if ($2 == "+Inf") total = $3 }
        END { flush() }'
}

# report_latencies: the apiserver's request latency by verb and its storage latency by
# operation, as p50/p99 in milliseconds (watches and connects left out), over both of the
# apiserver's lives (restart_apiserver kept the first one's /metrics in metrics.txt).
report_latencies() {
    api_get /metrics >> "$work/metrics.txt" || fail "reading the apiserver's /metrics"
    local verb count p50 p99
    while read -r verb count p50 p99; do
        case "$verb" in WATCH|CONNECT) continue ;; esac
        result "apiserver_${verb}_count" "$count"
        result "apiserver_${verb}_p50_ms" "$p50"
        result "apiserver_${verb}_p99_ms" "$p99"
    done < <(hist_quantiles apiserver_request_duration_seconds verb)
    while read -r verb count p50 p99; do
        result "storage_${verb}_count" "$count"
        result "storage_${verb}_p50_ms" "$p50"
        result "storage_${verb}_p99_ms" "$p99"
    done < <(hist_quantiles etcd_request_duration_seconds operation)
}

# report_store_usage: CPU seconds and peak RSS of the three store members, summed, and
# their data folders' size.
report_store_usage() {
    local tck cpu=0 hwm=0 rss=0 p t h r
    tck="$(getconf CLK_TCK)"
    for p in "${store_pids[@]}"; do
        kill -0 "$p" 2>/dev/null || fail "store member $p exited"
        t="$(awk '{print $14 + $15}' "/proc/$p/stat")"
        h="$(awk '$1 == "VmHWM:" {print $2}' "/proc/$p/status")"
        r="$(awk '$1 == "VmRSS:" {print $2}' "/proc/$p/status")"
        cpu=$(( cpu + t )); hwm=$(( hwm + h )); rss=$(( rss + r ))
    done
    result store_cpu_s "$(awk -v t="$cpu" -v k="$tck" 'BEGIN {printf "%.1f", t / k}')"
    result store_peak_rss_mib $(( hwm / 1024 ))
    result store_rss_mib $(( rss / 1024 ))
    result store_data_mib $(( $(du -sk "$work"/m0 "$work"/m1 "$work"/m2 | awk '{s += $1} END {print s}') / 1024 ))
}

# check_apiserver_log: no error the apiserver logged about its storage.
check_apiserver_log() {
    local bad
    bad="$(grep -E '^E[0-9]{4} ' "$work/apiserver.log" \
        | grep -iE 'etcd|storage|rpc error|watch|compact|Internal error' | sed -n 1,20p || true)"
    if [[ -n "$bad" ]]; then
        echo "$bad" >&2
        fail "the apiserver logged storage errors (above)"
    fi
    result apiserver_error_lines "$(grep -cE '^E[0-9]{4} ' "$work/apiserver.log" || true)"
}
