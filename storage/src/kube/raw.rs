//! The primitives a [`super::KubeStore`] needs from a key-value store: etcd's Range, Txn,
//! LeaseGrant, Compact and Watch. [`super::EtcdKv`] provides them over the network;
//! [`super::LocalKv`] in-process. The Kubernetes semantics (resource versions, continue
//! tokens, the update loop, event types) are built once on top, in `store.rs`.

use std::future::Future;

use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchCreateRequest};

use super::error::Result;
use super::types::Watcher;

/// etcd's KV, Lease and Watch primitives (see the module docs).
///
/// Error contract: a read or write at a compacted revision fails with
/// `StorageError::Expired { requested, .. }`, at a future revision with
/// `StorageError::TooLargeResourceVersion { requested, .. }`; everything else in the
/// implementation's own variant (`Rpc`, `Engine`).
pub trait RawKv: Send + Sync + 'static {
    /// A linearizable Range.
    fn range(&self, req: RangeRequest) -> impl Future<Output = Result<RangeResponse>> + Send;

    /// A Txn.
    fn txn(&self, req: TxnRequest) -> impl Future<Output = Result<TxnResponse>> + Send;

    /// Grants a lease of `ttl` seconds; returns its ID.
    fn lease_grant(&self, ttl: i64) -> impl Future<Output = Result<i64>> + Send;

    /// Compacts the history below `revision`.
    fn compact(&self, revision: i64) -> impl Future<Output = Result<()>> + Send;

    /// Creates a watch with etcd's semantics for `req` (the caller sets `prev_kv`) and
    /// resolves once the server confirmed it. The returned watcher's events are converted with
    /// `events::Route`: events in revision order, bookmarks for progress notifications
    /// (never below `start_revision - 1` nor below an event already delivered), and a final
    /// `Error` (`Expired` for a compacted start revision, `WatchCanceled`, `Rpc`).
    fn watch(&self, req: WatchCreateRequest) -> impl Future<Output = Result<Watcher>> + Send;

    /// Requests a progress notification for every watch (see
    /// [`super::KubeStorage::request_watch_progress`]).
    fn request_progress(&self) -> impl Future<Output = Result<()>> + Send;
}
