//! One watch stream shared by many watches: the client side of etcd's Watch protocol, over
//! any transport (a gRPC stream to an etcd endpoint in `etcd.rs`, cairn's watch hub
//! in-process in `local.rs`).
//!
//! etcd lets one stream carry any number of watches: a create request is answered by a
//! `created` response naming the server-assigned watch id, events carry that id, and a
//! progress request is answered by one response with `watch_id = -1` meaning "every watch on
//! this stream has everything up to the header's revision".
//!
//! - **Creation is pipelined**: a create is queued on the stream at once, whatever other
//!   creates are still unanswered. etcd answers creates of one stream strictly in the order
//!   it received them (its receive loop handles one request at a time), so the n-th
//!   `created` response belongs to the n-th create sent: `pending` keeps the creates in
//!   sending order, and sending a create and pushing it onto `pending` happen under one
//!   lock so the two orders cannot differ.
//! - **Events are routed** by watch id to each watch's own bounded channel, never waiting:
//!   a watch whose consumer fell behind is stopped (`WatchTooSlow`) and cancelled, the
//!   others go on.
//! - **Progress**: a `watch_id = -1` response becomes a `Bookmark` on every watch of the
//!   stream, so each answer costs one wake-up per watch: requests are merged and paced.
//!   While one is unanswered, later requests wait for its answer and then go out as one
//!   (sent after all of them asked, so its revision covers each); and requests are at least
//!   `Pacing::min_interval` apart. After `Pacing::retry` without an answer a new request goes
//!   out anyway, since a server may defer or drop one (etcd #20242). A caller's request is
//!   thus answered within about `min_interval` plus the server's delay, never forgotten: a
//!   queued request always has a send scheduled (the answer path or a timer).
//! - **Failure**: a mux opened with [`WatchMux::open`] ends every watch with the error when
//!   its stream breaks (pending creates fail too); the owner replaces a failed mux.
//! - **Recovery**: a mux opened with [`WatchMux::open_reconnecting`] outlives its streams.
//!   When one breaks (the connection dropped, the member restarted, or a member without a
//!   leader ended it, as etcd ends `hasleader` streams), it opens another after a backoff
//!   (doubling from `Backoff::min` to `Backoff::max`, reset by the first response) and
//!   re-creates there every live watch from the revision after the newest it reported (an
//!   event or a bookmark: etcd sends a revision's events in one response, so this neither
//!   skips nor repeats one), then re-sends the creates still unanswered, in order. A watch
//!   "from now" counts as having reported its created response's header revision. Its
//!   consumer sees no break; a watch whose next revision was compacted meanwhile ends with
//!   the compaction error, as any watch starting there would. Watches are known to callers
//!   by a local key, since the server's watch ids change with the stream.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    watch_request, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::error::{Result, StorageError};
use super::events::{cancel_error, Route};
use super::types::{watch_channel, Watcher};

/// The id etcd gives responses that belong to no single watch (progress answers).
const NO_WATCH_ID: i64 = -1;

/// Where a mux sends its requests. Called with the mux lock held: it must not block, and
/// must not call back into the mux.
pub(crate) trait RequestSink: Send + 'static {
    /// Sends one request; false when the stream is gone.
    fn send(&self, req: WatchRequest) -> bool;
}

/// Where a mux receives its responses.
pub(crate) trait ResponseSource: Send + 'static {
    /// The next responses, in order; `Ok(None)` when the stream ended.
    fn next(&mut self) -> impl Future<Output = Result<Option<Vec<WatchResponse>>>> + Send;
}

/// Opens the streams of a mux that outlives them ([`WatchMux::open_reconnecting`]).
pub(crate) trait Connector: Send + 'static {
    /// The receiving half of a stream.
    type Source: ResponseSource;
    /// A new stream's halves (it may connect lazily, at the first `next`); `None` when
    /// this connector opens no more streams.
    fn connect(&mut self) -> Option<(Box<dyn RequestSink>, Self::Source)>;
}

/// How long a reconnecting mux waits before opening a new stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    /// The first wait after a stream broke.
    pub min: Duration,
    /// The longest wait (the wait doubles while streams keep breaking unanswered).
    pub max: Duration,
}

/// One watch of the mux, under whichever stream carries it now.
struct Watch {
    /// The key callers know it by (server ids change with the stream).
    local: u64,
    route: Route,
    /// What creates it (again): a re-create starts at the route's `resume_from`.
    req: WatchCreateRequest,
}

/// A create request sent and not yet answered.
struct Pending {
    /// The caller waiting for the watch; `None` for a re-create after a new stream.
    reply: Option<oneshot::Sender<Result<()>>>,
    watch: Watch,
}

/// How progress requests of one stream are spaced (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pacing {
    /// Least time between two progress requests.
    pub min_interval: Duration,
    /// After this long without an answer, the request is presumed lost and sent again.
    pub retry: Duration,
}

#[derive(Default)]
struct Progress {
    /// Progress requests sent and not answered.
    in_flight: u32,
    /// A caller asked for progress and no request was sent since.
    queued: bool,
    /// A timer task will look at `queued` again.
    timer_armed: bool,
    last_sent: Option<Instant>,
}

/// Everything about one stream. `MuxShared::state` guards it. Lock order: this lock, then a
/// watch queue's lock (`types.rs`) or the transport's own locks (the hub lock, for a local
/// stream); never the reverse: neither calls back into the mux. Nothing awaits under it.
struct MuxState {
    requests: Box<dyn RequestSink>,
    /// Creates in the order they were sent (see the module docs).
    pending: VecDeque<Pending>,
    /// Established watches by the server's watch id.
    active: HashMap<i64, Watch>,
    /// Server watch id of each established watch, by local key.
    by_local: HashMap<u64, i64>,
    next_local: u64,
    progress: Progress,
    pacing: Pacing,
    /// The mux opens a new stream when one breaks (the module docs).
    reconnecting: bool,
    failed: bool,
}

struct MuxShared {
    state: Mutex<MuxState>,
}

impl MuxShared {
    fn new(requests: Box<dyn RequestSink>, pacing: Pacing, reconnecting: bool) -> Arc<MuxShared> {
        Arc::new(MuxShared {
            state: Mutex::new(MuxState {
                requests,
                pending: VecDeque::new(),
                active: HashMap::new(),
                by_local: HashMap::new(),
                next_local: 0,
                progress: Progress::default(),
                pacing,
                reconnecting,
                failed: false,
            }),
        })
    }
}

/// The connector of a mux that does not reconnect: it opens no stream.
struct NoConnector<S>(std::marker::PhantomData<fn() -> S>);

impl<S: ResponseSource> Connector for NoConnector<S> {
    type Source = S;
    fn connect(&mut self) -> Option<(Box<dyn RequestSink>, S)> {
        None
    }
}

/// The handle of one shared stream; dropping it closes the stream.
pub(crate) struct WatchMux {
    shared: Arc<MuxShared>,
    _shutdown: oneshot::Sender<()>,
}

fn request(union: watch_request::RequestUnion) -> WatchRequest {
    WatchRequest { request_union: Some(union) }
}

impl MuxState {
    fn send(&self, union: watch_request::RequestUnion) -> bool {
        self.requests.send(request(union))
    }

    fn cancel(&mut self, watch_id: i64) {
        if let Some(w) = self.active.remove(&watch_id) {
            self.by_local.remove(&w.local);
        }
        if !self.failed {
            self.send(watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
        }
    }

    /// Cancels the watch known as `local` (a create still unanswered is cancelled when its
    /// answer comes: its route is closed by then).
    fn cancel_local(&mut self, local: u64) {
        if let Some(id) = self.by_local.get(&local).copied() {
            self.cancel(id);
        }
    }

    /// Sends a create for `watch` and queues it as pending (even when the stream is gone:
    /// a reconnecting mux sends every pending create again on its next stream).
    fn send_create(&mut self, reply: Option<oneshot::Sender<Result<()>>>, watch: Watch) -> bool {
        let sent = self.send(watch_request::RequestUnion::CreateRequest(watch.req.clone()));
        if sent || self.reconnecting {
            self.pending.push_back(Pending { reply, watch });
        }
        sent || self.reconnecting
    }

    /// Moves every watch onto a new stream sending through `requests` (the module docs).
    /// Returns when a progress timer must be armed.
    fn resume(&mut self, requests: Box<dyn RequestSink>, now: Instant) -> Option<Instant> {
        self.requests = requests;
        self.by_local.clear();
        let mut established: Vec<Watch> = self.active.drain().map(|(_, w)| w).collect();
        established.sort_by_key(|w| w.local);
        let pending = std::mem::take(&mut self.pending);
        for mut w in established {
            if w.route.is_closed() {
                continue; // its consumer left while the stream was down
            }
            w.req.start_revision = w.route.resume_from();
            self.send_create(None, w);
        }
        for p in pending {
            self.send_create(p.reply, p.watch);
        }
        // progress asked on the old stream and not answered is asked again
        let p = &mut self.progress;
        p.queued |= p.in_flight > 0;
        p.in_flight = 0;
        p.last_sent = None;
        self.progress_step(now)
    }

    /// Sends the queued progress request if pacing allows. Returns when a timer must look
    /// again (at most one timer is armed at a time).
    fn progress_step(&mut self, now: Instant) -> Option<Instant> {
        let p = &mut self.progress;
        if !p.queued || self.failed {
            return None;
        }
        let spaced = p.last_sent.is_none_or(|t| now >= t + self.pacing.min_interval);
        let overdue = p.in_flight > 0 && p.last_sent.is_none_or(|t| now >= t + self.pacing.retry);
        if (p.in_flight == 0 && spaced) || overdue {
            if overdue {
                p.in_flight = 0; // the unanswered requests are presumed lost
            }
            p.queued = false;
            if self.send(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})) {
                self.progress.in_flight += 1;
                self.progress.last_sent = Some(now);
            }
            return None;
        }
        if p.timer_armed {
            return None;
        }
        p.timer_armed = true;
        let last = p.last_sent.unwrap_or(now);
        Some(if p.in_flight == 0 { last + self.pacing.min_interval } else { last + self.pacing.retry })
    }

    /// Routes one response of the stream. Returns when a progress timer must be armed.
    fn dispatch(&mut self, resp: WatchResponse) -> Option<Instant> {
        let revision = resp.header.as_ref().map(|h| h.revision);
        if resp.created {
            let Some(Pending { reply, mut watch }) = self.pending.pop_front() else {
                self.fail_all(|| StorageError::Protocol("created response without a pending create"));
                return None;
            };
            if resp.canceled || resp.watch_id == NO_WATCH_ID {
                let err = cancel_error(watch.req.start_revision, resp.compact_revision, resp.cancel_reason);
                match reply {
                    Some(reply) => drop(reply.send(Err(err))),
                    None => watch.route.fail(err),
                }
                return None;
            }
            if let (0, Some(rev)) = (watch.req.start_revision, revision) {
                watch.route.started_after(rev);
            }
            let wanted = match reply {
                Some(reply) => reply.send(Ok(())).is_ok(),
                None => !watch.route.is_closed(),
            };
            // the creator gave up waiting (or the consumer left): nobody reads this watch
            self.by_local.insert(watch.local, resp.watch_id);
            self.active.insert(resp.watch_id, watch);
            if !wanted {
                self.cancel(resp.watch_id);
            }
            return None;
        }
        if resp.watch_id == NO_WATCH_ID && !resp.canceled {
            self.progress.in_flight = self.progress.in_flight.saturating_sub(1);
            if let Some(rev) = revision {
                let mut gone = Vec::new();
                for (id, w) in self.active.iter_mut() {
                    if !w.route.bookmark(rev) {
                        gone.push(*id);
                    }
                }
                for id in gone {
                    self.cancel(id);
                }
            }
            return self.progress_step(Instant::now());
        }
        if resp.canceled {
            if let Some(w) = self.active.remove(&resp.watch_id) {
                self.by_local.remove(&w.local);
                w.route.fail(cancel_error(w.req.start_revision, resp.compact_revision, resp.cancel_reason));
            }
            return None;
        }
        let Some(w) = self.active.get_mut(&resp.watch_id) else {
            return None; // a watch we cancelled: its last responses may still arrive
        };
        let alive = if resp.events.is_empty() {
            // A periodic progress notification for this watch.
            match revision {
                Some(rev) => w.route.bookmark(rev),
                None => !w.route.is_closed(),
            }
        } else {
            w.route.events(resp.events)
        };
        if !alive {
            self.cancel(resp.watch_id);
        }
        None
    }

    /// Ends every watch and pending create with `err()`; the mux accepts nothing more.
    fn fail_all(&mut self, err: impl Fn() -> StorageError) {
        self.failed = true;
        for p in self.pending.drain(..) {
            match p.reply {
                Some(reply) => drop(reply.send(Err(err()))),
                None => p.watch.route.fail(err()),
            }
        }
        self.by_local.clear();
        for (_, w) in self.active.drain() {
            w.route.fail(err());
        }
    }
}

impl WatchMux {
    /// A mux sending through `requests` and receiving from `responses` (its receive loop is
    /// spawned on the current tokio runtime).
    pub(crate) fn open<S: ResponseSource>(requests: Box<dyn RequestSink>, responses: S, pacing: Pacing) -> WatchMux {
        let shared = MuxShared::new(requests, pacing, false);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let none = (NoConnector(std::marker::PhantomData), Backoff { min: Duration::ZERO, max: Duration::ZERO });
        tokio::spawn(run(shared.clone(), responses, shutdown_rx, none));
        WatchMux { shared, _shutdown: shutdown_tx }
    }

    /// A mux over the stream `requests`/`responses`, which replaces it when it breaks with
    /// one `connector` opens and moves every watch onto the new one (the module docs).
    pub(crate) fn open_reconnecting<C: Connector>(
        requests: Box<dyn RequestSink>,
        responses: C::Source,
        connector: C,
        pacing: Pacing,
        backoff: Backoff,
    ) -> WatchMux {
        let shared = MuxShared::new(requests, pacing, true);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        tokio::spawn(run(shared.clone(), responses, shutdown_rx, (connector, backoff)));
        WatchMux { shared, _shutdown: shutdown_tx }
    }

    /// False once the stream failed: the owner opens a new one.
    pub(crate) fn is_usable(&self) -> bool {
        !self.shared.state.lock().failed
    }

    /// Number of established watches on this stream.
    pub(crate) fn watch_count(&self) -> usize {
        self.shared.state.lock().active.len()
    }

    /// Creates a watch and waits for the server to confirm it (without holding up other
    /// creates on the stream).
    pub(crate) async fn watch(&self, req: WatchCreateRequest, buffer: usize) -> Result<Watcher> {
        let (sink, watcher) = watch_channel(buffer);
        let (reply, confirmed) = oneshot::channel();
        let local = {
            let mut st = self.shared.state.lock();
            if st.failed {
                return Err(StorageError::Closed);
            }
            let local = st.next_local;
            st.next_local += 1;
            let route = Route::new(sink, req.start_revision);
            if !st.send_create(Some(reply), Watch { local, route, req }) {
                return Err(StorageError::Closed);
            }
            local
        };
        confirmed.await.map_err(|_| StorageError::Closed)??;
        let weak = Arc::downgrade(&self.shared);
        Ok(watcher.with_cancel(Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.state.lock().cancel_local(local);
            }
        })))
    }

    /// Asks for a progress notification on this stream (merged, see the module docs).
    pub(crate) fn request_progress(&self) -> Result<()> {
        let timer = {
            let mut st = self.shared.state.lock();
            if st.failed {
                return Err(StorageError::Closed);
            }
            st.progress.queued = true;
            st.progress_step(Instant::now())
        };
        if let Some(at) = timer {
            arm_progress_timer(Arc::downgrade(&self.shared), at);
        }
        Ok(())
    }
}

/// At `at`, sends the queued progress request if pacing allows by then (else re-arms).
fn arm_progress_timer(shared: Weak<MuxShared>, at: Instant) {
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        let Some(strong) = shared.upgrade() else { return };
        let again = {
            let mut st = strong.state.lock();
            st.progress.timer_armed = false;
            st.progress_step(Instant::now())
        };
        if let Some(at) = again {
            arm_progress_timer(shared, at);
        }
    });
}

/// The receive loop: routes every response until the mux is dropped, or until the stream
/// ends when there is no connector to open another (the module docs).
async fn run<S: ResponseSource, C: Connector<Source = S>>(
    shared: Arc<MuxShared>,
    mut responses: S,
    mut shutdown: oneshot::Receiver<()>,
    (mut connector, backoff): (C, Backoff),
) {
    let mut wait = backoff.min;
    loop {
        let next = tokio::select! {
            r = responses.next() => r,
            _ = &mut shutdown => {
                shared.state.lock().fail_all(|| StorageError::Closed);
                return;
            }
        };
        let ended = match next {
            Ok(Some(batch)) => {
                wait = backoff.min;
                let mut timer = None;
                {
                    let mut st = shared.state.lock();
                    for resp in batch {
                        timer = timer.or(st.dispatch(resp));
                    }
                    if st.failed {
                        return; // a protocol violation ended every watch
                    }
                }
                if let Some(at) = timer {
                    arm_progress_timer(Arc::downgrade(&shared), at);
                }
                continue;
            }
            Ok(None) => StorageError::Closed,
            Err(StorageError::Rpc(status)) => StorageError::Rpc(status),
            Err(_) => StorageError::Closed,
        };
        let end_all = |shared: &MuxShared| {
            shared.state.lock().fail_all(|| match &ended {
                StorageError::Rpc(status) => StorageError::Rpc(status.clone()),
                _ => StorageError::Closed,
            })
        };
        if !shared.state.lock().reconnecting {
            end_all(&shared);
            return;
        }
        tracing::debug!(error = %ended, wait = ?wait, "watch stream broke; opening another");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => {
                shared.state.lock().fail_all(|| StorageError::Closed);
                return;
            }
        }
        wait = (wait * 2).min(backoff.max);
        let Some((requests, next_responses)) = connector.connect() else {
            end_all(&shared);
            return;
        };
        responses = next_responses;
        let timer = shared.state.lock().resume(requests, Instant::now());
        if let Some(at) = timer {
            arm_progress_timer(Arc::downgrade(&shared), at);
        }
    }
}

#[cfg(test)]
#[path = "mux_tests.rs"]
mod tests;
