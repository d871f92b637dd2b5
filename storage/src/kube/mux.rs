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
//! - **Failure**: when the stream breaks, every watch ends with the error and pending creates
//!   fail; the owner replaces a failed mux with a new stream.

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

/// A create request sent and not yet answered.
struct Pending {
    reply: oneshot::Sender<Result<i64>>,
    route: Route,
    start_revision: i64,
}

/// An established watch.
struct Active {
    route: Route,
    start_revision: i64,
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
    active: HashMap<i64, Active>,
    progress: Progress,
    pacing: Pacing,
    failed: bool,
}

struct MuxShared {
    state: Mutex<MuxState>,
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
        self.active.remove(&watch_id);
        if !self.failed {
            self.send(watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
        }
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
            let Some(p) = self.pending.pop_front() else {
                self.fail_all(|| StorageError::Protocol("created response without a pending create"));
                return None;
            };
            if resp.canceled || resp.watch_id == NO_WATCH_ID {
                let _ = p.reply.send(Err(cancel_error(p.start_revision, resp.compact_revision, resp.cancel_reason)));
                return None;
            }
            if p.reply.send(Ok(resp.watch_id)).is_err() {
                // The creator gave up waiting: nobody will read this watch.
                self.cancel(resp.watch_id);
                return None;
            }
            self.active.insert(resp.watch_id, Active { route: p.route, start_revision: p.start_revision });
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
                w.route.fail(cancel_error(w.start_revision, resp.compact_revision, resp.cancel_reason));
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
            let _ = p.reply.send(Err(err()));
        }
        for (_, w) in self.active.drain() {
            w.route.fail(err());
        }
    }
}

impl WatchMux {
    /// A mux sending through `requests` and receiving from `responses` (its receive loop is
    /// spawned on the current tokio runtime).
    pub(crate) fn open(requests: Box<dyn RequestSink>, responses: impl ResponseSource, pacing: Pacing) -> WatchMux {
        let shared = Arc::new(MuxShared {
            state: Mutex::new(MuxState {
                requests,
                pending: VecDeque::new(),
                active: HashMap::new(),
                progress: Progress::default(),
                pacing,
                failed: false,
            }),
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        tokio::spawn(run(shared.clone(), responses, shutdown_rx));
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
        {
            let mut st = self.shared.state.lock();
            if st.failed {
                return Err(StorageError::Closed);
            }
            let start_revision = req.start_revision;
            if !st.send(watch_request::RequestUnion::CreateRequest(req)) {
                return Err(StorageError::Closed);
            }
            st.pending.push_back(Pending { reply, route: Route::new(sink, start_revision), start_revision });
        }
        let watch_id = confirmed.await.map_err(|_| StorageError::Closed)??;
        let weak = Arc::downgrade(&self.shared);
        Ok(watcher.with_cancel(Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.state.lock().cancel(watch_id);
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

/// The stream's receive loop: routes every response until the stream ends or the mux is
/// dropped.
async fn run(shared: Arc<MuxShared>, mut responses: impl ResponseSource, mut shutdown: oneshot::Receiver<()>) {
    loop {
        let next = tokio::select! {
            r = responses.next() => r,
            _ = &mut shutdown => Err(StorageError::Closed),
        };
        match next {
            Ok(Some(batch)) => {
                let mut timer = None;
                {
                    let mut st = shared.state.lock();
                    for resp in batch {
                        timer = timer.or(st.dispatch(resp));
                    }
                }
                if let Some(at) = timer {
                    arm_progress_timer(Arc::downgrade(&shared), at);
                }
            }
            Ok(None) => {
                shared.state.lock().fail_all(|| StorageError::Closed);
                return;
            }
            Err(StorageError::Rpc(status)) => {
                shared.state.lock().fail_all(|| StorageError::Rpc(status.clone()));
                return;
            }
            Err(_) => {
                shared.state.lock().fail_all(|| StorageError::Closed);
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "mux_tests.rs"]
mod tests;
