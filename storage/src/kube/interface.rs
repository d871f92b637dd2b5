//! The storage interface kube-apiserver's registry is written against, over raw bytes.
//!
//! Modelled on k8s.io/apiserver `storage.Interface` (its etcd3 implementation), without
//! Kubernetes types: objects are bytes under keys, and an object's resource version is its
//! key's mod revision. Revisions come from one store-wide counter, so a resource version
//! also orders lists and watch events.

use std::future::Future;

use super::error::{Result, UpdateError};
use super::types::{GetOptions, List, ListOptions, Object, Preconditions, UpdateOptions, WatchOptions, Watcher};

/// Kubernetes-style storage (see the module docs). Implementations: [`super::KubeStore`]
/// over any [`super::RawKv`] (an etcd endpoint, or cairn's engine in-process), and the
/// tenant-scoped view [`super::Tenant`].
pub trait KubeStorage: Send + Sync + 'static {
    /// Creates `key` with `value`, only if the key does not exist (a Txn
    /// `If(mod(key) == 0) Then(Put)`). With `lease_ttl` (seconds) the key is attached to a
    /// lease of that TTL and disappears when it expires. Returns the new object's resource
    /// version. Errors: `AlreadyExists`.
    fn create(&self, key: &[u8], value: Vec<u8>, lease_ttl: Option<i64>) -> impl Future<Output = Result<i64>> + Send;

    /// Reads `key`.
    /// - resource version 0: the latest state, linearizable;
    /// - `NotOlderThan(rv)`: the latest state, which must be at least `rv`, else
    ///   `TooLargeResourceVersion` (the caller retries later);
    /// - `Exact(rv)`: the state at revision `rv`: `Expired` when compacted,
    ///   `TooLargeResourceVersion` when in the future; `Exact` with 0 is `InvalidOptions`.
    ///
    /// A missing key is `NotFound`, or `Ok(None)` with `ignore_not_found`.
    fn get(&self, key: &[u8], opts: GetOptions) -> impl Future<Output = Result<Option<Object>>> + Send;

    /// Lists the keys starting with `prefix`, in key order, one page of at most `limit`.
    /// Resource versions as in `get`; the list's resource version is the revision the page
    /// was read at. When more items follow, `continue_token` is set (it names the next key,
    /// relative to `prefix`, and the pinned revision, so later pages read the same snapshot)
    /// and `remaining_item_count` counts the items after this page. A continue token together
    /// with a resource version is `InvalidOptions`; a token whose revision was compacted is
    /// `Expired` (start a new list).
    fn get_list(&self, prefix: &[u8], opts: ListOptions) -> impl Future<Output = Result<List>> + Send;

    /// Read-modify-write with optimistic concurrency, as kube's `GuaranteedUpdate`: read the
    /// object (or start from `opts.cached`), check the preconditions (`Conflict`), call
    /// `try_update` with it (`None` for a missing key, only with `ignore_not_found`, else
    /// `NotFound`), and write the result with a Txn
    /// `If(mod(key) == read revision) Then(Put) Else(Get)`; when another write won, retry with
    /// the Else branch's fresh object. `try_update` may run several times.
    /// - `try_update` returns `Ok(Some(bytes))`: the new value (the key keeps its lease);
    /// - `Ok(None)` or the same bytes: no write; the current object is returned (a missing key
    ///   is then `NotFound`);
    /// - `Err(e)`: abort with `UpdateRejected(e)`.
    ///
    /// Returns the object as written.
    fn guaranteed_update<F>(
        &self,
        key: &[u8],
        opts: UpdateOptions,
        try_update: F,
    ) -> impl Future<Output = Result<Object>> + Send
    where
        F: FnMut(Option<&Object>) -> std::result::Result<Option<Vec<u8>>, UpdateError> + Send;

    /// Deletes `key` when the preconditions hold, with a Txn
    /// `If(mod(key) == read revision) Then(Delete) Else(Get)`, retrying on a concurrent write.
    /// Returns the deleted object's last value at the deletion's revision. Errors: `NotFound`,
    /// `Conflict`.
    fn delete(&self, key: &[u8], preconditions: Preconditions) -> impl Future<Output = Result<Object>> + Send;

    /// Watches `key` (or every key under it, with `recursive`): see [`WatchOptions`] for where
    /// the events start. Events come in revision order: `Added` when the key was created by
    /// the write, `Modified` for other puts, `Deleted`; `Bookmark(rv)` on progress
    /// notifications (periodic ones with `progress_notify`, and the answers to
    /// `request_watch_progress`) means every event up to `rv` was delivered. A start revision
    /// that was compacted ends the watch with `Error(Expired)`. Returns once the watch is
    /// established, so a write after the return is seen.
    fn watch(&self, key: &[u8], opts: WatchOptions) -> impl Future<Output = Result<Watcher>> + Send;

    /// How many keys start with `prefix` (a count-only read).
    fn count(&self, prefix: &[u8]) -> impl Future<Output = Result<i64>> + Send;

    /// Asks for a progress notification on every watch of this storage (kube's
    /// `RequestWatchProgress`): each watch later reports a `Bookmark` at a revision R once it
    /// delivered every event up to R, where R is at least the store's revision when the
    /// request was made. Returns once the request is sent; requests made while one is
    /// outstanding may be merged into the next one. A server may defer or drop the answer
    /// (etcd does while some watcher is catching up): callers waiting for a revision ask
    /// again periodically, as kube-apiserver does every 100 ms.
    fn request_watch_progress(&self) -> impl Future<Output = Result<()>> + Send;

    /// The store's current revision (a linearizable read of only the response header).
    fn current_resource_version(&self) -> impl Future<Output = Result<i64>> + Send;
}
