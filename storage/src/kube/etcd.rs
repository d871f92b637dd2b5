//! [`EtcdKv`]: the primitives over any etcd v3 endpoint, for many tenants on one
//! connection: one tonic `Channel` (one HTTP/2 connection) carries every unary call and a
//! small fixed number of shared Watch streams (see `mux.rs`). The channel reconnects by
//! itself; each shared stream is replaced by its mux when it breaks, and its watches go on
//! from where they were (`mux.rs`, "Recovery").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    CompactionRequest, LeaseGrantRequest, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::codec::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::error::{Result, StorageError};
use super::mux::{Backoff, Connector, Pacing, RequestSink, ResponseSource, WatchMux};
use super::raw::RawKv;
use super::store::KubeStore;
use super::types::Watcher;

/// The storage interface over an etcd v3 endpoint (real etcd or cairn).
pub type EtcdStorage = KubeStore<EtcdKv>;

/// How an [`EtcdKv`] connects and shares its streams.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Watch streams shared by all watches (watches are spread round-robin).
    pub watch_streams: usize,
    /// Events a watch buffers for its consumer before it is stopped as too slow.
    pub watch_buffer: usize,
    /// Least time between two progress requests on one stream (each answer wakes every
    /// watch of the stream).
    pub progress_interval: Duration,
    /// After this long without an answer to a progress request, another one is sent.
    pub progress_retry: Duration,
    /// Timeout of the initial connection.
    pub connect_timeout: Duration,
    /// First wait before a broken watch stream is replaced (doubling up to
    /// `reconnect_max` while new streams break unanswered).
    pub reconnect_min: Duration,
    /// Longest wait before a broken watch stream is replaced.
    pub reconnect_max: Duration,
}

impl EtcdConfig {
    fn pacing(&self) -> Pacing {
        Pacing { min_interval: self.progress_interval, retry: self.progress_retry.max(self.progress_interval) }
    }

    fn backoff(&self) -> Backoff {
        Backoff { min: self.reconnect_min, max: self.reconnect_max.max(self.reconnect_min) }
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            watch_streams: 1,
            watch_buffer: 1024,
            progress_interval: Duration::from_millis(50),
            progress_retry: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
        }
    }
}

/// etcd's primitives over one connection (see the module docs). Clones share it.
#[derive(Clone)]
pub struct EtcdKv {
    inner: Arc<Inner>,
}

struct Inner {
    channel: Channel,
    cfg: EtcdConfig,
    /// The shared watch streams, opened on first use and replaced when they fail. Each slot's
    /// lock is held only to look at or replace the slot; it may be taken before a mux's lock,
    /// never under it.
    streams: Vec<Mutex<Option<Arc<WatchMux>>>>,
    next_stream: AtomicUsize,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv").field("cfg", &self.inner.cfg).finish()
    }
}

/// etcd's answer for a read at a compacted or future revision, as the interface's error.
fn map_status(status: Status, requested: i64) -> StorageError {
    if status.code() == Code::OutOfRange {
        if status.message().ends_with("required revision has been compacted") {
            return StorageError::Expired { requested, compact_revision: None };
        }
        if status.message().ends_with("required revision is a future revision") {
            return StorageError::TooLargeResourceVersion { requested, current: None };
        }
    }
    StorageError::Rpc(status)
}

impl EtcdStorage {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:2379`) with default settings.
    pub async fn connect(endpoint: &str) -> Result<EtcdStorage> {
        Self::connect_with(endpoint, EtcdConfig::default()).await
    }

    /// One connection per member of `endpoints` (as kube-apiserver's `--etcd-servers`),
    /// connected lazily: unary calls and new watch streams go to members whose connection
    /// is ready, so a member that dies or restarts is avoided until it is back, and a
    /// shared watch stream it carried is re-opened on another member (`mux.rs`).
    pub fn connect_members(endpoints: &[&str], cfg: EtcdConfig) -> Result<EtcdStorage> {
        let mut list = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            list.push(Endpoint::from_shared(e.to_string())?.connect_timeout(cfg.connect_timeout).tcp_nodelay(true));
        }
        Ok(KubeStore::new(EtcdKv::new(Channel::balance_list(list.into_iter()), cfg)))
    }

    /// Connects to `endpoint`.
    pub async fn connect_with(endpoint: &str, cfg: EtcdConfig) -> Result<EtcdStorage> {
        let channel = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(KubeStore::new(EtcdKv::new(channel, cfg)))
    }
}

impl EtcdKv {
    /// The primitives over an established channel.
    pub fn new(channel: Channel, cfg: EtcdConfig) -> EtcdKv {
        let streams = (0..cfg.watch_streams.max(1)).map(|_| Mutex::new(None)).collect();
        EtcdKv { inner: Arc::new(Inner { channel, cfg, streams, next_stream: AtomicUsize::new(0) }) }
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.inner.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The mux of stream `i`, opening it (or a new one, after a protocol failure).
    fn stream(&self, i: usize) -> Arc<WatchMux> {
        let mut slot = self.inner.streams[i].lock();
        match slot.as_ref() {
            Some(mux) if mux.is_usable() => mux.clone(),
            _ => {
                let connector = GrpcConnector(self.inner.channel.clone());
                let (sink, source) = connector.open();
                let (pacing, backoff) = (self.inner.cfg.pacing(), self.inner.cfg.backoff());
                let mux = Arc::new(WatchMux::open_reconnecting(sink, source, connector, pacing, backoff));
                *slot = Some(mux.clone());
                mux
            }
        }
    }

    /// Established watches per stream (streams not opened yet count 0).
    pub fn watches_per_stream(&self) -> Vec<usize> {
        self.inner.streams.iter().map(|s| s.lock().as_ref().map_or(0, |m| m.watch_count())).collect()
    }
}

impl RawKv for EtcdKv {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let requested = req.revision;
        self.kv().range(req).await.map(|r| r.into_inner()).map_err(|s| map_status(s, requested))
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        self.kv().txn(req).await.map(|r| r.into_inner()).map_err(|s| map_status(s, 0))
    }

    async fn lease_grant(&self, ttl: i64) -> Result<i64> {
        let mut client = LeaseClient::new(self.inner.channel.clone());
        let resp = client.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await?.into_inner();
        Ok(resp.id)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let req = CompactionRequest { revision, physical: false };
        self.kv().compact(req).await.map(|_| ()).map_err(|s| map_status(s, revision))
    }

    async fn watch(&self, req: WatchCreateRequest) -> Result<Watcher> {
        let n = self.inner.streams.len();
        let i = self.inner.next_stream.fetch_add(1, Ordering::Relaxed) % n;
        self.stream(i).watch(req, self.inner.cfg.watch_buffer).await
    }

    async fn request_progress(&self) -> Result<()> {
        for slot in &self.inner.streams {
            let mux = slot.lock().clone();
            if let Some(mux) = mux {
                if mux.is_usable() {
                    mux.request_progress()?;
                }
            }
        }
        Ok(())
    }
}

/// Opens the Watch call, sending what arrives on `requests`.
async fn open_stream(
    mut client: WatchClient<Channel>,
    requests: mpsc::UnboundedReceiver<WatchRequest>,
) -> Result<Streaming<WatchResponse>, Status> {
    let outbound = futures::stream::unfold(requests, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut req = tonic::Request::new(outbound);
    // As kube-apiserver: ask the server to end the stream when it has no leader.
    req.metadata_mut().insert("hasleader", MetadataValue::from_static("true"));
    Ok(client.watch(req).await?.into_inner())
}

/// The sending half of a gRPC Watch stream.
struct GrpcSink(mpsc::UnboundedSender<WatchRequest>);

impl RequestSink for GrpcSink {
    fn send(&self, req: WatchRequest) -> bool {
        self.0.send(req).is_ok()
    }
}

/// Opens Watch calls on one channel, for a reconnecting mux.
struct GrpcConnector(Channel);

impl Connector for GrpcConnector {
    type Source = GrpcSource;

    fn connect(&mut self) -> Option<(Box<dyn RequestSink>, GrpcSource)> {
        Some(self.open())
    }
}

impl GrpcConnector {
    /// A new Watch call's halves (the call starts at the source's first `next`).
    fn open(&self) -> (Box<dyn RequestSink>, GrpcSource) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Box::new(GrpcSink(tx)), GrpcSource::new(self.0.clone(), rx))
    }
}

/// The receiving half of a gRPC Watch stream, opened on the first `next`.
struct GrpcSource {
    client: WatchClient<Channel>,
    requests: Option<mpsc::UnboundedReceiver<WatchRequest>>,
    inbound: Option<Streaming<WatchResponse>>,
}

impl GrpcSource {
    fn new(channel: Channel, requests: mpsc::UnboundedReceiver<WatchRequest>) -> GrpcSource {
        let client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
        GrpcSource { client, requests: Some(requests), inbound: None }
    }
}

impl ResponseSource for GrpcSource {
    async fn next(&mut self) -> Result<Option<Vec<WatchResponse>>> {
        if let Some(requests) = self.requests.take() {
            self.inbound = Some(open_stream(self.client.clone(), requests).await?);
        }
        let Some(inbound) = self.inbound.as_mut() else {
            return Err(StorageError::Closed);
        };
        Ok(inbound.message().await?.map(|r| vec![r]))
    }
}
