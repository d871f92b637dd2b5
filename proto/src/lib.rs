//! The etcd v3 wire protocol for cairn.
//!
//! This crate holds the protobuf messages and gRPC services of etcd's v3 API,
//! generated at build time (with `protox` and `tonic-prost-build`, no system
//! `protoc`) from `.proto` files that keep etcd's package, service, message
//! and field names and field numbers, so the wire format and gRPC paths
//! (e.g. `/etcdserverpb.KV/Range`) are identical to etcd's.
//!
//! Modules:
//! - [`mvccpb`]: `KeyValue` and `Event`.
//! - [`authpb`]: users, roles and permissions.
//! - [`leasepb`]: the lease record etcd stores in its backend file.
//! - [`etcdserverpb`]: every request and response, plus clients
//!   (`kv_client::KvClient`, ...) and servers (`kv_server::KvServer`, ...)
//!   for the `KV`, `Watch`, `Lease`, `Cluster`, `Maintenance` and `Auth`
//!   services.
//! - [`raftpb`], [`walpb`]: etcd's WAL records and Raft log entries, and (in
//!   `etcdserverpb`) `InternalRaftRequest`, read only to import an etcd data folder.
//! - [`cairnpb`]: cairn's own state-machine commands carried by Raft entries.
//! - [`nested`]: Txn messages decoded without recursion (prost's derived decoder stops at
//!   50 nested Txns), and [`codec`], the gRPC codec that uses it.
//! - [`json`]: the workspace's one JSON string escaper (Go's and zap's styles), here
//!   because every crate that writes JSON by hand depends on this one.
//!
//! Field names are snake_cased by prost: etcd's `ID` is `id`, `TTL` is `ttl`,
//! `dbSize` is `db_size`, and `peerURLs` / `clientURLs` become `peer_ur_ls` /
//! `client_ur_ls`.

pub mod codec;
pub mod json;
pub mod nested;

/// etcd's MVCC data model (protobuf package `mvccpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's authentication data model (protobuf package `authpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's stored lease record (protobuf package `leasepb`), the values of the `lease`
/// bucket in etcd's backend file.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod leasepb {
    tonic::include_proto!("leasepb");
}

/// etcd's v3 gRPC API (protobuf package `etcdserverpb`): messages, clients
/// and servers.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's Raft log records (protobuf package `raftpb`), read to import an etcd WAL.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod raftpb {
    tonic::include_proto!("raftpb");
}

/// etcd's WAL framing (protobuf package `walpb`), read to import an etcd WAL.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod walpb {
    tonic::include_proto!("walpb");
}

/// cairn's internal state-machine commands (protobuf package `cairnpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

#[cfg(test)]
mod tests {
    use super::etcdserverpb::{Compare, PutRequest};
    use prost::Message;

    #[test]
    fn known_encodings() {
        let put = PutRequest {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            ..Default::default()
        };
        assert_eq!(put.encode_to_vec(), [0x0a, 0x01, 0x61, 0x12, 0x01, 0x62]);

        // range_end is field 64, wire type 2: tag varint (64 << 3) | 2 = 0x202.
        let cmp = Compare {
            range_end: b"z".to_vec(),
            ..Default::default()
        };
        assert_eq!(cmp.encode_to_vec(), [0x82, 0x04, 0x01, b'z']);
    }
}
