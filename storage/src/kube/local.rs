//! [`LocalKv`]: the primitives over cairn's own engine, in-process: reads from the
//! [`Store`], writes through the server's write path ([`WritePath`]), watches through the
//! [`WatchHub`] (each shared stream is one hub stream driven by the same client-side mux
//! as a gRPC stream, `mux.rs`).
//!
//! Reads are served from this member's committed state: linearizable on a single node. With
//! Raft, the write path must also provide a read barrier (ReadIndex) before `range`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{
    watch_request::RequestUnion, CompactionRequest, LeaseGrantRequest, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use parking_lot::Mutex;

use super::error::{Result, StorageError};
use super::mux::{Pacing, RequestSink, ResponseSource, WatchMux};
use super::raw::RawKv;
use super::store::KubeStore;
use super::types::Watcher;
use crate::watch::{WatchHub, WatchStream};
use crate::{validate, ApplyResponse, Store};

/// The storage interface over the local engine.
pub type LocalStorage<W> = KubeStore<LocalKv<W>>;

/// Why a proposal failed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine's deterministic answer to the request (e.g. a compacted revision),
    /// or a fatal engine error.
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// The write path takes no requests (halted after a fatal error, shutting down).
    #[error("write path unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The write path as the server provides it (its proposer, later Raft).
///
/// Contract: `propose` resolves after the command was applied **and** is durable **and** its
/// changes were published to the [`WatchHub`] given to [`LocalKv::new`], with the response
/// the state machine returned for this command. A `LeaseGrant` with ID 0 gets an ID chosen by
/// the write path, which also takes charge of the lease's expiry (the server routes it
/// through its lessor).
pub trait WritePath: Send + Sync + 'static {
    /// Proposes `request` and waits for its result (see the trait docs).
    fn propose(
        &self,
        request: Request,
    ) -> impl Future<Output = std::result::Result<ApplyResponse, ProposeError>> + Send;
}

/// How a [`LocalKv`] shares hub streams.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Hub streams shared by all watches.
    pub watch_streams: usize,
    /// Events a watch buffers for its consumer before it is stopped as too slow.
    pub watch_buffer: usize,
    /// Least time between two progress requests on one stream (each answer wakes every
    /// watch of the stream).
    pub progress_interval: Duration,
    /// After this long without an answer to a progress request, another one is sent.
    pub progress_retry: Duration,
    /// Period of progress notifications to idle `progress_notify` watches (etcd's
    /// `--experimental-watch-progress-notify-interval`, 10 minutes by default).
    pub progress_notify_interval: Duration,
}

impl LocalConfig {
    fn pacing(&self) -> Pacing {
        Pacing { min_interval: self.progress_interval, retry: self.progress_retry.max(self.progress_interval) }
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            watch_streams: 1,
            watch_buffer: 1024,
            progress_interval: Duration::from_millis(50),
            progress_retry: Duration::from_millis(100),
            progress_notify_interval: Duration::from_secs(600),
        }
    }
}

/// etcd's primitives over the local engine (see the module docs). Clones share it.
pub struct LocalKv<W> {
    inner: Arc<Inner<W>>,
}

impl<W> Clone for LocalKv<W> {
    fn clone(&self) -> Self {
        LocalKv { inner: self.inner.clone() }
    }
}

impl<W> std::fmt::Debug for LocalKv<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKv").field("cfg", &self.inner.cfg).finish()
    }
}

struct Inner<W> {
    store: Arc<Store>,
    hub: WatchHub,
    write: W,
    cfg: LocalConfig,
    /// The shared hub streams, opened on first use. Each slot's lock may be taken before a
    /// mux's lock, never under it.
    streams: Vec<Mutex<Option<Arc<WatchMux>>>>,
    next_stream: AtomicUsize,
}

/// The engine's answer for a compacted or future revision, as the interface's error.
fn map_engine(e: crate::Error, requested: i64) -> StorageError {
    match e {
        crate::Error::Compacted => StorageError::Expired { requested, compact_revision: None },
        crate::Error::FutureRev => StorageError::TooLargeResourceVersion { requested, current: None },
        e => StorageError::Engine(e),
    }
}

fn map_propose(e: ProposeError, requested: i64) -> StorageError {
    match e {
        ProposeError::Engine(e) => map_engine(e, requested),
        ProposeError::Unavailable(e) => StorageError::Unavailable(e),
    }
}

impl<W: WritePath> LocalStorage<W> {
    /// The storage interface over `store`, writing through `write`, watching through `hub`
    /// (the hub `write` publishes to).
    pub fn local(store: Arc<Store>, hub: WatchHub, write: W, cfg: LocalConfig) -> Self {
        KubeStore::new(LocalKv::new(store, hub, write, cfg))
    }
}

impl<W: WritePath> LocalKv<W> {
    /// See [`LocalStorage::local`].
    pub fn new(store: Arc<Store>, hub: WatchHub, write: W, cfg: LocalConfig) -> Self {
        let streams = (0..cfg.watch_streams.max(1)).map(|_| Mutex::new(None)).collect();
        LocalKv { inner: Arc::new(Inner { store, hub, write, cfg, streams, next_stream: AtomicUsize::new(0) }) }
    }

    fn stream(&self, i: usize) -> Arc<WatchMux> {
        let mut slot = self.inner.streams[i].lock();
        match slot.as_ref() {
            Some(mux) if mux.is_usable() => mux.clone(),
            _ => {
                let stream = Arc::new(self.inner.hub.open_stream());
                tokio::spawn(tick(Arc::downgrade(&stream), self.inner.cfg.progress_notify_interval));
                let source = HubSource(stream.clone());
                let mux = Arc::new(WatchMux::open(Box::new(HubSink(stream)), source, self.inner.cfg.pacing()));
                *slot = Some(mux.clone());
                mux
            }
        }
    }

    async fn propose(&self, request: Request, requested: i64) -> Result<ApplyResponse> {
        self.inner.write.propose(request).await.map_err(|e| map_propose(e, requested))
    }
}

impl<W: WritePath> RawKv for LocalKv<W> {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        validate::check_range(&req).map_err(StorageError::Engine)?;
        self.inner.store.range(&req).map_err(|e| map_engine(e, req.revision))
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        validate::check_txn(&req, self.inner.store.config().max_txn_ops).map_err(StorageError::Engine)?;
        match self.propose(Request::Txn(req), 0).await? {
            ApplyResponse::Txn(r) => Ok(r),
            _ => Err(StorageError::Protocol("the write path answered a Txn with another response")),
        }
    }

    async fn lease_grant(&self, ttl: i64) -> Result<i64> {
        match self.propose(Request::LeaseGrant(LeaseGrantRequest { ttl, id: 0 }), 0).await? {
            ApplyResponse::LeaseGrant(r) => Ok(r.id),
            _ => Err(StorageError::Protocol("the write path answered a LeaseGrant with another response")),
        }
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        match self.propose(Request::Compaction(CompactionRequest { revision, physical: false }), revision).await? {
            ApplyResponse::Compaction(_) => Ok(()),
            _ => Err(StorageError::Protocol("the write path answered a Compaction with another response")),
        }
    }

    async fn watch(&self, req: WatchCreateRequest) -> Result<Watcher> {
        let i = self.inner.next_stream.fetch_add(1, Ordering::Relaxed) % self.inner.streams.len();
        self.stream(i).watch(req, self.inner.cfg.watch_buffer).await
    }

    async fn request_progress(&self) -> Result<()> {
        for slot in &self.inner.streams {
            let mux = slot.lock().clone();
            if let Some(mux) = mux.filter(|m| m.is_usable()) {
                mux.request_progress()?;
            }
        }
        Ok(())
    }
}

/// Drives the periodic progress notifications of one hub stream until it is gone.
async fn tick(stream: Weak<WatchStream>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.tick().await; // the first tick is immediate
    loop {
        interval.tick().await;
        match stream.upgrade() {
            Some(s) => s.progress_tick(),
            None => return,
        }
    }
}

/// Requests into a hub stream (which answers through its queue, never blocking).
struct HubSink(Arc<WatchStream>);

impl RequestSink for HubSink {
    fn send(&self, req: WatchRequest) -> bool {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.0.create(&c),
            Some(RequestUnion::CancelRequest(c)) => self.0.cancel(c.watch_id),
            Some(RequestUnion::ProgressRequest(_)) => self.0.request_progress(),
            None => {}
        }
        true
    }
}

/// Responses out of a hub stream.
struct HubSource(Arc<WatchStream>);

impl ResponseSource for HubSource {
    async fn next(&mut self) -> Result<Option<Vec<WatchResponse>>> {
        Ok(self.0.next().await)
    }
}
