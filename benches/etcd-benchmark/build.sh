#!/usr/bin/env bash
# Builds etcd's own load tool, `benchmark` (go.etcd.io/etcd/v3/tools/benchmark, pinned with its
# checksums in this folder's go.mod/go.sum), for benches/compare_go.sh. It drives a server
# through clientv3, the Go client kube-apiserver uses: a clientv3-shaped load to check the
# ratios cairn-bench measures (on two cores the Go client's CPU competes with the server's).
#
#   benches/etcd-benchmark/build.sh          # build it if missing or its pin changed; print its path
#
# Output: ${CAIRN_K8S_CACHE:-$HOME/.cache/cairn-k8s}/bin/etcd-benchmark (the cache folder
# scripts/k8s/build.sh uses, sharing its Go module cache). A second run returns at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CAIRN_K8S_CACHE:-$HOME/.cache/cairn-k8s}"
bin="$cache/bin"
out="$bin/etcd-benchmark"
pin="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)"

if [[ -x "$out" && -f "$out.pin" && "$(cat "$out.pin")" == "$pin" ]]; then
    echo "$out"
    exit 0
fi
command -v go >/dev/null || { echo "etcd-benchmark/build.sh: go is not installed" >&2; exit 1; }
mkdir -p "$bin" "$cache/gomod" "$cache/gocache"
export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gocache" GOFLAGS="-modcacherw -mod=readonly -trimpath"
export GOTOOLCHAIN=local CGO_ENABLED=0
echo "etcd-benchmark/build.sh: building go.etcd.io/etcd/v3/tools/benchmark ..." >&2
(cd "$here" && nice -n 10 go build -ldflags="-s -w" -o "$out.tmp" go.etcd.io/etcd/v3/tools/benchmark)
mv "$out.tmp" "$out"
echo "$pin" >"$out.pin"
echo "$out"
