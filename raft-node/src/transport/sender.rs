//! The sending side: one [`PeerLink`] per peer, with its queues and its two tasks (the
//! batch stream and the snapshot sender). Policy is described in the module docs of
//! `transport`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::{PeerAck, PeerBatch, SnapshotChunk};
use raft::eraftpb::Message;
use prost::Message as _;
use raft_prost::Message as _;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::dial::{peer_endpoint, Dial, PeerTls};

use super::{TransportError, TransportOptions, MAX_PEER_MESSAGE_BYTES};
use crate::node::Mailbox;

/// What every peer link of a transport shares.
pub(super) struct LinkCtx {
    pub(super) local_id: u64,
    pub(super) cluster_id: u64,
    /// The local node's mailbox, for reports about peers.
    pub(super) mailbox: Mailbox,
    pub(super) tls: Option<PeerTls>,
    pub(super) options: TransportOptions,
}

/// Why sending to a peer failed (logged; the node only hears "unreachable").
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("the peer has no URLs")]
    NoUrls,
    #[error("bad URL {url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to {url} failed: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the peer answered: {0}")]
    Refused(#[from] tonic::Status),
    #[error("the stream ended")]
    StreamEnded,
}

/// Checks that `url` is one a link can connect to.
pub(super) fn check_url(peer: u64, url: &str, have_tls: bool) -> Result<(), TransportError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|source| TransportError::BadUrl {
        peer,
        url: url.to_owned(),
        source,
    })?;
    match endpoint.uri().scheme_str() {
        Some("http") => Ok(()),
        Some("https") if have_tls => Ok(()),
        Some("https") => Err(TransportError::NoTls { peer, url: url.to_owned() }),
        _ => Err(TransportError::BadScheme { peer, url: url.to_owned() }),
    }
}

/// One peer: its address, its queues and its tasks. Dropping it closes the queues and aborts
/// the tasks.
pub(super) struct PeerLink {
    urls: watch::Sender<Vec<String>>,
    messages: mpsc::Sender<Message>,
    snapshots: mpsc::Sender<Message>,
    tasks: [JoinHandle<()>; 2],
}

impl PeerLink {
    /// Starts the link to `peer` at `urls` on `runtime`.
    pub(super) fn spawn(peer: u64, ctx: &LinkCtx, urls: Vec<String>, runtime: &Handle) -> PeerLink {
        let task = Arc::new(TaskCtx {
            peer,
            local_id: ctx.local_id,
            cluster_id: ctx.cluster_id,
            mailbox: ctx.mailbox.clone(),
            tls: ctx.tls.clone(),
            options: ctx.options.clone(),
        });
        let (urls_tx, urls_rx) = watch::channel(urls);
        let (messages, messages_rx) = mpsc::channel(ctx.options.queue_len.max(1));
        let (snapshots, snapshots_rx) = mpsc::channel(ctx.options.snapshot_queue_len.max(1));
        let stream = runtime.spawn(run_stream(task.clone(), urls_rx.clone(), messages_rx));
        let snapshot = runtime.spawn(run_snapshots(task, urls_rx, snapshots_rx));
        PeerLink { urls: urls_tx, messages, snapshots, tasks: [stream, snapshot] }
    }

    /// Gives the peer new addresses.
    pub(super) fn set_urls(&self, urls: Vec<String>) {
        self.urls.send_replace(urls);
    }

    /// Queues `msg`; false (and the message dropped) if its queue is full.
    pub(super) fn enqueue(&self, msg: Message, snapshot: bool) -> bool {
        let queue = if snapshot { &self.snapshots } else { &self.messages };
        match queue.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(msg)) => {
                tracing::debug!(peer = msg.to, "queue full; dropping a raft message");
                false
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                tracing::debug!(peer = msg.to, "link stopped; dropping a raft message");
                false
            }
        }
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a link's tasks know.
struct TaskCtx {
    peer: u64,
    local_id: u64,
    cluster_id: u64,
    mailbox: Mailbox,
    tls: Option<PeerTls>,
    options: TransportOptions,
}

impl TaskCtx {
    fn endpoint(&self, url: &str) -> Result<(Endpoint, Dial), LinkError> {
        let bad = |source| LinkError::BadUrl { url: url.to_owned(), source };
        let (endpoint, dial) = peer_endpoint(url, self.tls.as_ref()).map_err(bad)?;
        let endpoint = endpoint
            .connect_timeout(self.options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.options.keepalive_interval)
            .keep_alive_timeout(self.options.keepalive_timeout)
            .keep_alive_while_idle(true);
        Ok((endpoint, dial))
    }

    /// Connects to the first of `urls` that answers.
    async fn connect(&self, urls: &[String]) -> Result<PeerClient<Channel>, LinkError> {
        let mut last = LinkError::NoUrls;
        for url in urls {
            let (endpoint, dial) = match self.endpoint(url) {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match dial.connect(endpoint).await {
                Ok(channel) => {
                    tracing::debug!(peer = self.peer, url = %url, "connected to peer");
                    return Ok(PeerClient::new(channel)
                        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
                        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES));
                }
                Err(source) => last = LinkError::Connect { url: url.clone(), source },
            }
        }
        Err(last)
    }

    /// `first` and whatever else is queued, up to the batch size.
    fn batch(&self, first: &Message, queue: &mut mpsc::Receiver<Message>) -> PeerBatch {
        let first = first.encode_to_vec();
        let mut bytes = first.len();
        let mut messages = vec![first];
        while bytes < self.options.max_batch_bytes {
            let Ok(msg) = queue.try_recv() else { break };
            let encoded = msg.encode_to_vec();
            bytes += encoded.len();
            messages.push(encoded);
        }
        PeerBatch { cluster_id: self.cluster_id, from: self.local_id, to: self.peer, messages }
    }

    /// Reports a failure to the local node; logs a warning when the peer was reachable until
    /// now (`down` is false), at debug level while it stays down.
    fn failed(&self, error: &LinkError, lost: usize, down: &mut bool) {
        if *down {
            tracing::debug!(peer = self.peer, lost, %error, "peer still unreachable");
        } else {
            tracing::warn!(peer = self.peer, lost, %error, "peer unreachable");
            *down = true;
        }
        self.mailbox.report_unreachable(self.peer);
    }
}

/// The retry delay: `min`, doubling after each failure, capped at `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(options: &TransportOptions) -> Self {
        Backoff { min: options.backoff_min, max: options.backoff_max, next: options.backoff_min }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max).max(self.min);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

type Call = Pin<Box<dyn Future<Output = Result<tonic::Response<PeerAck>, tonic::Status>> + Send>>;

/// An open `Stream` call.
struct OpenStream {
    /// Batches to send; a buffer of one, so backpressure builds up in the peer's queue.
    batches: mpsc::Sender<PeerBatch>,
    /// The call; it resolves only when the stream ends, which is a failure while we hold
    /// `batches`.
    call: Call,
    opened: Instant,
}

impl OpenStream {
    fn open(mut client: PeerClient<Channel>) -> Self {
        let (batches, rx) = mpsc::channel(1);
        let call = Box::pin(async move { client.stream(ReceiverStream::new(rx)).await });
        OpenStream { batches, call, opened: Instant::now() }
    }
}

/// Resolves when the open stream (if any) ends.
async fn stream_ended(stream: &mut Option<OpenStream>) -> LinkError {
    match stream {
        Some(s) => match (&mut s.call).await {
            Ok(_) => LinkError::StreamEnded,
            Err(status) => LinkError::Refused(status),
        },
        None => std::future::pending().await,
    }
}

/// After a failure: waits out the backoff, discarding what is queued meanwhile (Raft
/// resends; after an address change the wait ends early). False once the link is gone.
async fn cool_down(
    task: &TaskCtx,
    backoff: &mut Backoff,
    lived: Option<Duration>,
    urls: &mut watch::Receiver<Vec<String>>,
    queue: &mut mpsc::Receiver<Message>,
) -> bool {
    if lived.is_some_and(|lived| lived >= backoff.max) {
        backoff.reset();
    }
    let sleep = tokio::time::sleep(backoff.next());
    tokio::pin!(sleep);
    let mut discarded = 0usize;
    let alive = loop {
        tokio::select! {
            () = &mut sleep => break true,
            changed = urls.changed() => {
                backoff.reset();
                break changed.is_ok();
            }
            msg = queue.recv() => match msg {
                Some(_) => discarded += 1,
                None => break false,
            },
        }
    };
    if discarded > 0 {
        tracing::debug!(peer = task.peer, discarded, "discarded raft messages while the peer was unreachable");
    }
    alive
}

/// The stream task: batches from the queue onto one long-lived `Stream` call, reconnecting
/// with backoff. Ends when the link is dropped.
async fn run_stream(task: Arc<TaskCtx>, mut urls: watch::Receiver<Vec<String>>, mut queue: mpsc::Receiver<Message>) {
    let mut backoff = Backoff::new(&task.options);
    let mut stream: Option<OpenStream> = None;
    // failed since the last batch that went out (for logging only)
    let mut down = false;
    loop {
        let first = tokio::select! {
            changed = urls.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::debug!(peer = task.peer, "peer address changed; reconnecting");
                stream = None;
                backoff.reset();
                continue;
            }
            error = stream_ended(&mut stream) => {
                let lived = stream.take().map(|s| s.opened.elapsed());
                task.failed(&error, 0, &mut down);
                if !cool_down(&task, &mut backoff, lived, &mut urls, &mut queue).await {
                    return;
                }
                continue;
            }
            msg = queue.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
        };
        let batch = task.batch(&first, &mut queue);
        let count = batch.messages.len();
        let bytes = batch.encoded_len();
        if stream.is_none() {
            let current = urls.borrow_and_update().clone();
            match task.connect(&current).await {
                Ok(client) => stream = Some(OpenStream::open(client)),
                Err(error) => {
                    task.failed(&error, count, &mut down);
                    if !cool_down(&task, &mut backoff, None, &mut urls, &mut queue).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(open) = stream.as_mut() else { continue };
        let sent = tokio::select! {
            sent = open.batches.send(batch) => sent.map_err(|_| LinkError::StreamEnded),
            result = &mut open.call => Err(match result {
                Ok(_) => LinkError::StreamEnded,
                Err(status) => LinkError::Refused(status),
            }),
        };
        if sent.is_ok() {
            task.mailbox.observer().peer_sent(task.peer, bytes);
        }
        match sent {
            Ok(()) if down => {
                tracing::info!(peer = task.peer, "peer reachable again");
                down = false;
            }
            Ok(()) => {}
            Err(error) => {
                let lived = stream.take().map(|s| s.opened.elapsed());
                task.failed(&error, count, &mut down);
                if !cool_down(&task, &mut backoff, lived, &mut urls, &mut queue).await {
                    return;
                }
            }
        }
    }
}

/// The snapshot task: each queued snapshot message on a call of its own, outcome reported
/// to the local node. Ends when the link is dropped.
async fn run_snapshots(task: Arc<TaskCtx>, urls: watch::Receiver<Vec<String>>, mut queue: mpsc::Receiver<Message>) {
    while let Some(msg) = queue.recv().await {
        let current = urls.borrow().clone();
        let index = msg.snapshot.as_ref().and_then(|s| s.metadata.as_ref()).map_or(0, |m| m.index);
        match send_snapshot(&task, &current, msg).await {
            Ok(bytes) => {
                tracing::info!(peer = task.peer, index, bytes, "snapshot sent");
                task.mailbox.observer().peer_sent(task.peer, usize::try_from(bytes).unwrap_or(usize::MAX));
                task.mailbox.report_snapshot(task.peer, true);
            }
            Err(error) => {
                tracing::warn!(peer = task.peer, index, %error, "sending a snapshot failed");
                task.mailbox.report_snapshot(task.peer, false);
                task.mailbox.report_unreachable(task.peer);
            }
        }
    }
}

/// Sends one snapshot message: the header chunk, then the data in pieces.
async fn send_snapshot(task: &TaskCtx, urls: &[String], mut msg: Message) -> Result<u64, LinkError> {
    let data = msg.snapshot.as_mut().map(|s| std::mem::take(&mut s.data)).unwrap_or_default();
    let len = data.len();
    let header = SnapshotChunk {
        cluster_id: task.cluster_id,
        from: task.local_id,
        to: task.peer,
        message: msg.encode_to_vec(),
        data_len: len as u64,
        data: Vec::new(),
    };
    let piece = task.options.snapshot_chunk_bytes.max(1);
    let pieces = (0..len).step_by(piece).map(move |start| SnapshotChunk {
        data: data[start..len.min(start.saturating_add(piece))].to_vec(),
        ..SnapshotChunk::default()
    });
    let chunks = futures::stream::iter(std::iter::once(header).chain(pieces));
    let mut client = task.connect(urls).await?;
    let ack = client.snapshot(chunks).await?;
    Ok(ack.into_inner().received)
}
