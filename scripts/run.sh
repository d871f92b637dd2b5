#!/usr/bin/env bash
# Builds and runs cairn. raft-rs (the Raft library cairn's replication uses) generates its
# protobuf code with protoc at build time: install it (Debian package protobuf-compiler)
# if it is missing, then `cargo run --release -- "$@"`.
#   scripts/run.sh                       a single-node cairn on 127.0.0.1:2379 (./default.etcd)
#   scripts/run.sh cluster --size 3      three members on 127.0.0.1:2379, :12379, :22379
#   scripts/run.sh --name n1 ...         any etcd flag
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v protoc >/dev/null 2>&1; then
    echo "installing protobuf-compiler (protoc, needed to build raft-rs)" >&2
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends protobuf-compiler
fi
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
exec cargo run --release --bin cairn -- "$@"
