#!/usr/bin/env bash
# Builds the real Kubernetes control plane and the newest etcd server from pinned
# versions, for scripts/k8s/control-plane.sh.
#
#   scripts/k8s/build.sh            # build what is missing, print where it is
#   scripts/k8s/build.sh --print    # only print the binary folder (exit 1 if incomplete)
#
# Versions and module checksums are pinned in scripts/k8s/kube/go.{mod,sum} (k8s.io/kubernetes
# plus every k8s.io staging module at v0.<same release>) and scripts/k8s/etcd/go.{mod,sum}
# (go.etcd.io/etcd/server/v3, run through etcd's own etcdmain entry point).
# Everything goes into one cache folder, outside the repo:
#   ${CAIRN_K8S_CACHE:-$HOME/.cache/cairn-k8s}/{bin,gomod,gocache}
# A binary is rebuilt only when it is missing or its pin (go.mod + go.sum) changed, so a
# second run returns in well under a second. The go builds run under `nice -n 10`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CAIRN_K8S_CACHE:-$HOME/.cache/cairn-k8s}"
bin="$cache/bin"

kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# The pin of one module folder: a hash of its go.mod and go.sum.
pin_of() { cat "$here/$1/go.mod" "$here/$1/go.sum" | sha256sum | cut -c1-16; }

# up_to_date NAME MODULE_DIR: the binary exists and was built from the current pin.
up_to_date() {
    [[ -x "$bin/$1" && -f "$bin/$1.pin" && "$(cat "$bin/$1.pin")" == "$(pin_of "$2")" ]]
}

all_up_to_date() {
    local c
    for c in "${kube_cmds[@]}"; do up_to_date "$c" kube || return 1; done
    up_to_date etcd etcd
}

if [[ "${1:-}" == "--print" ]]; then
    all_up_to_date || { echo "k8s build incomplete: run scripts/k8s/build.sh" >&2; exit 1; }
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
mkdir -p "$bin" "$cache/gomod" "$cache/gocache"
export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gocache" GOFLAGS="-modcacherw -mod=readonly -trimpath"
export GOTOOLCHAIN=local CGO_ENABLED=0

# The Kubernetes release pinned in kube/go.mod, stamped into the binaries as `make` would.
kube_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/kube/go.mod")"
kube_minor="${kube_version#v1.}"; kube_minor="${kube_minor%%.*}"
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=$kube_minor"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"

# build_one NAME MODULE_DIR PACKAGE [EXTRA_LDFLAGS]
build_one() {
    local name="$1" dir="$2" pkg="$3" extra="${4:-}" t0
    if up_to_date "$name" "$dir"; then
        return 0
    fi
    t0=$(date +%s)
    echo "build.sh: building $name ($pkg) ..." >&2
    (cd "$here/$dir" && nice -n 10 go build -ldflags="-s -w $extra" -o "$bin/$name.tmp" "$pkg")
    mv "$bin/$name.tmp" "$bin/$name"
    pin_of "$dir" > "$bin/$name.pin"
    echo "build.sh: $name built in $(( $(date +%s) - t0 ))s" >&2
}

start=$(date +%s)
built_any=0
all_up_to_date || built_any=1
build_one etcd etcd .
for c in "${kube_cmds[@]}"; do
    build_one "$c" kube "k8s.io/kubernetes/cmd/$c" "$kube_ldflags"
done
if (( built_any )); then
    echo "build.sh: build took $(( $(date +%s) - start ))s" >&2
fi
"$bin/kube-apiserver" --version >&2
"$bin/etcd" --version | sed -n 1p >&2  # sed reads all: head would close the pipe, and etcd dies of SIGPIPE under pipefail
echo "$bin"
