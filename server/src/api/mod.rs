//! etcd's v3 gRPC services, as clients see them: each checks a request as etcd's gRPC
//! layer does, reads from the store or writes through the member's proposer, and answers
//! with etcd's headers; `status` turns every error into etcd's code and message.

pub mod auth;
pub mod cluster;
pub mod hash_kv;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod snapshot;
pub mod status;
pub mod watch;
