#!/usr/bin/env bash
# Runs scripts/k8s/control-plane.sh once per store, one after the other in the same run,
# and prints the results side by side (the BENCHMARKS.md "Under kube-apiserver" table).
#
#   scripts/k8s/bench.sh [--objects N] [--stores "cairn etcd etcd34"]
#
# Default: 10,000 configmaps (5,000 secrets, 2,000 custom objects) per store.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
objects=10000
stores="cairn etcd etcd34"
while (( $# )); do
    case "$1" in
        --objects) objects="$2"; shift 2 ;;
        --stores) stores="$2"; shift 2 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

out="$(mktemp /tmp/cairn-k8s-bench.XXXXXX)"
trap 'rm -f "$out"' EXIT
for s in $stores; do
    "$here/control-plane.sh" --store "$s" --objects "$objects" --results "$out" >/dev/null
done

# One row per result key, one column per store, in the order the keys first appeared.
awk -v stores="$stores" '
    BEGIN { ns = split(stores, st, " ") }
    { if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } v[$1 " " $2] = $3 }
    END {
        printf "| %s |", "result"; for (i = 1; i <= ns; i++) printf " %s |", st[i]; print ""
        printf "|---|"; for (i = 1; i <= ns; i++) printf "---:|"; print ""
        for (k = 1; k <= n; k++) {
            printf "| %s |", order[k]
            for (i = 1; i <= ns; i++) { x = v[st[i] " " order[k]]; printf " %s |", x == "" ? "-" : x }
            print ""
        }
    }' "$out"
