#!/usr/bin/env bash
# Installs what the tests need, if missing, then runs the whole test suite:
#   - etcd and etcdctl (Debian packages etcd-server, etcd-client): the
#     integration tests compare cairn with real etcd and drive it with etcdctl;
#   - protoc (protobuf-compiler) and the well-known protobuf types (libprotobuf-dev):
#     the build scripts of raft-rs and of the etcd-client crate (a dev-dependency) need them;
#   - make: jemalloc, the binary's allocator (src/main.rs), is built with it.
# Extra arguments are passed on to `cargo test`, e.g.
#   scripts/test.sh --test differential -- --nocapture
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
[ -x /usr/bin/etcd ] || missing+=(etcd-server)
[ -x /usr/bin/etcdctl ] || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# the well-known types (google/protobuf/*.proto) that etcd-client's protos import
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
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

# Release: the storage tests are heavy.
# raft-node's Raft driver is behind a feature (its build needs protoc); the server enables
# it, and this turns it on for raft-node's own tests too.
exec cargo test --workspace --release --features cairn-raft-node/raft "$@"
