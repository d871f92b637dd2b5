#!/usr/bin/env bash
# Builds and runs cairn. Two build steps need system tools: raft-rs (the Raft library cairn's
# replication uses) generates its protobuf code with protoc, and jemalloc (the binary's
# allocator, src/main.rs) is built with make. Installs what is missing (Debian packages
# protobuf-compiler, make), then `cargo run --release -- "$@"`.
#   scripts/run.sh                       a single-node cairn on 127.0.0.1:2379 (./default.etcd)
#   scripts/run.sh cluster --size 3      three members on 127.0.0.1:2379, :12379, :22379
#   scripts/run.sh --name n1 ...         any etcd flag
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (needed to build raft-rs and jemalloc)" >&2
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
exec cargo run --release --bin cairn -- "$@"
