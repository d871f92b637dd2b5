//! One Watch stream and the task that reads it.
//!
//! Each watch connection carries one stream. One task (the reader) owns the stream and
//! everything it taught: which watch IDs were created, the highest revision each watch has
//! observed, the delivery latencies. The coordinator asks the reader for a condition over a
//! command channel and gets the instant it first held on a oneshot; the coordinator puts a
//! deadline on every such wait, so nothing here sleeps or waits for ever.
//!
//! Creation responses are matched to creations by order (the n-th `created` response
//! answers the n-th create request), as etcd's clients do; progress responses
//! (`watch_id == -1`) are matched to progress requests the same way, so that a round only
//! counts answers to requests sent in that round.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use cairn_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, oneshot};
// tonic re-exports tokio-stream; using it keeps this crate's dependency list unchanged.
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::writers::decode_value;

/// The instant a condition first held, or why it never will.
pub type Reply = oneshot::Sender<Result<Instant, String>>;

/// Each request's answer latency in a burst (microseconds), or why it failed.
pub type BurstReply = oneshot::Sender<Result<Vec<u32>, String>>;

enum Cmd {
    /// Answer once every creation has been answered: with the instant of the last answer.
    Created(Reply),
    /// Answer once `n` distinct events have arrived.
    Events(u64, Reply),
    /// Send a progress request; answer once every watch has observed a revision >= the
    /// target, from an event or from an answer to this or a later progress request.
    Progress(i64, Reply),
    /// Send one more progress request for the current round.
    Resend,
    /// Send this many progress requests back to back; answer with each one's time to its
    /// answer (microseconds, in order: etcd answers a stream's requests in order).
    Burst(u64, BurstReply),
    /// Hand over the tallies and stop.
    Finish(oneshot::Sender<Tally>),
}

/// What one stream saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub created: usize,
    pub create_failures: u64,
    /// Distinct events (by the put's sequence number).
    pub events: u64,
    pub duplicates: u64,
    /// Events whose key is not under their watch's prefix.
    pub misrouted: u64,
    /// Events whose value is not one the writers made, or for an unknown watch ID.
    pub malformed: u64,
    /// Watches cancelled by the server after creation.
    pub canceled: u64,
    pub progress_responses: u64,
    /// Events at or below the revision of a progress response that came before them: the
    /// progress response overtook events it claims were delivered (etcd issue #15220).
    pub progress_ahead: u64,
    /// Delivery latency of each distinct event, microseconds.
    pub latencies_us: Vec<u32>,
    /// The first thing that went wrong (stream error, cancellation, ...).
    pub failure: Option<String>,
}

/// The coordinator's handle on one stream.
pub struct Stream {
    cmds: mpsc::UnboundedSender<Cmd>,
}

enum Waiter {
    Created(Reply),
    Events(u64, Reply),
    /// `below`: watches not yet known to be at the target; `first`: the index of the
    /// round's first progress request.
    Progress {
        target: i64,
        below: usize,
        first: u64,
        reply: Reply,
    },
    /// A burst: the send instant of each request from index `first` on, and the answer
    /// latencies so far.
    Burst {
        first: u64,
        sent: Vec<Instant>,
        latencies_us: Vec<u32>,
        reply: BurstReply,
    },
}

struct Reader {
    base: Instant,
    prefixes: Vec<Vec<u8>>,
    requests: mpsc::UnboundedSender<WatchRequest>,
    ids: HashMap<i64, usize>,
    /// Highest revision each watch observed from its events (or its own progress notices).
    revs: Vec<i64>,
    seen: HashSet<u64>,
    last_created: Option<Instant>,
    progress_sent: u64,
    /// The highest revision a progress response (`watch_id` -1) claimed.
    progress_rev: i64,
    waiter: Option<Waiter>,
    tally: Tally,
}

const GONE: &str = "watch stream reader is gone";

impl Stream {
    /// Opens a Watch stream on `channel` with one prefix watch per entry of `prefixes`: all
    /// creations are queued before the call starts, so they go out back to back.
    pub fn open(channel: Channel, prefixes: Vec<Vec<u8>>, base: Instant) -> Stream {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        for p in &prefixes {
            let create =
                WatchCreateRequest { key: p.clone(), range_end: super::prefix_end(p), ..Default::default() };
            // The receiver is alive: it is in this scope.
            let _queued =
                requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) });
        }
        let (cmds, cmds_rx) = mpsc::unbounded_channel();
        let reader = Reader {
            base,
            revs: vec![0; prefixes.len()],
            prefixes,
            requests,
            ids: HashMap::new(),
            seen: HashSet::new(),
            last_created: None,
            progress_sent: 0,
            progress_rev: 0,
            waiter: None,
            tally: Tally::default(),
        };
        tokio::spawn(reader.run(channel, requests_rx, cmds_rx));
        Stream { cmds }
    }

    async fn ask(&self, cmd: impl FnOnce(Reply) -> Cmd, deadline: Instant) -> Result<Instant, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(cmd(tx)).map_err(|_| GONE.to_string())?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(GONE.into()),
            Err(_) => Err("deadline passed".into()),
        }
    }

    /// The instant the last creation was answered.
    pub async fn created(&self, deadline: Instant) -> Result<Instant, String> {
        self.ask(Cmd::Created, deadline).await
    }

    /// The instant the `n`-th distinct event arrived.
    pub async fn events(&self, n: u64, deadline: Instant) -> Result<Instant, String> {
        self.ask(|r| Cmd::Events(n, r), deadline).await
    }

    /// Sends a progress request; the receiver gets the instant every watch on the stream
    /// has observed `target` (see [`Cmd::Progress`]).
    pub fn progress(&self, target: i64) -> Result<oneshot::Receiver<Result<Instant, String>>, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Progress(target, tx)).map_err(|_| GONE.to_string())?;
        Ok(rx)
    }

    /// Sends `n` progress requests back to back; the receiver gets each one's answer latency.
    pub fn burst(&self, n: u64) -> Result<oneshot::Receiver<Result<Vec<u32>, String>>, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Burst(n, tx)).map_err(|_| GONE.to_string())?;
        Ok(rx)
    }

    /// Sends one more progress request for the current round.
    pub fn resend(&self) -> Result<(), String> {
        self.cmds.send(Cmd::Resend).map_err(|_| GONE.to_string())
    }

    /// Stops the reader (closing the stream) and returns what it saw.
    pub async fn finish(self, deadline: Instant) -> Tally {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Finish(tx)).is_err() {
            return Tally { failure: Some(GONE.into()), ..Default::default() };
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(t)) => t,
            _ => Tally { failure: Some(GONE.into()), ..Default::default() },
        }
    }
}

impl Reader {
    async fn run(
        mut self,
        channel: Channel,
        requests: mpsc::UnboundedReceiver<WatchRequest>,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
    ) {
        let mut client = WatchClient::new(channel);
        // A server may send the response headers only with its first message: serve
        // commands while the call starts.
        let call = client.watch(UnboundedReceiverStream::new(requests));
        tokio::pin!(call);
        let mut responses: Option<Streaming<WatchResponse>> = loop {
            tokio::select! {
                started = &mut call => match started {
                    Ok(r) => break Some(r.into_inner()),
                    Err(s) => {
                        self.fail(format!("watch call failed: {}", s.message()));
                        break None;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    Some(c) => if let Some(done) = self.command(c) { return self.finish(done) },
                    None => return,
                },
            }
        };
        loop {
            tokio::select! {
                msg = next(&mut responses) => match msg {
                    Ok(Some(r)) => self.response(r),
                    Ok(None) => {
                        self.fail("the server ended the watch stream".into());
                        responses = None;
                    }
                    Err(s) => {
                        self.fail(format!("watch stream failed: {} ({:?})", s.message(), s.code()));
                        responses = None;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    Some(c) => if let Some(done) = self.command(c) { return self.finish(done) },
                    None => return,
                },
            }
        }
    }

    fn finish(self, done: oneshot::Sender<Tally>) {
        // The coordinator may have given up waiting; nothing to do then.
        let _unwanted = done.send(self.tally);
    }

    fn fail(&mut self, msg: String) {
        self.tally.failure.get_or_insert(msg);
        self.check();
    }

    fn send_progress(&mut self) {
        let req =
            WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
        if self.requests.send(req).is_err() {
            self.fail("watch request stream closed".into());
        }
        self.progress_sent += 1;
    }

    fn command(&mut self, cmd: Cmd) -> Option<oneshot::Sender<Tally>> {
        self.waiter = match cmd {
            Cmd::Created(reply) => Some(Waiter::Created(reply)),
            Cmd::Events(n, reply) => Some(Waiter::Events(n, reply)),
            Cmd::Progress(target, reply) => {
                let below = self.revs.iter().filter(|&&r| r < target).count();
                let first = self.progress_sent;
                self.send_progress();
                Some(Waiter::Progress { target, below, first, reply })
            }
            Cmd::Resend => {
                self.send_progress();
                self.waiter.take()
            }
            Cmd::Burst(n, reply) => {
                let first = self.progress_sent;
                let mut sent = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
                for _ in 0..n {
                    sent.push(Instant::now());
                    self.send_progress();
                }
                Some(Waiter::Burst { first, sent, latencies_us: Vec::new(), reply })
            }
            Cmd::Finish(done) => return Some(done),
        };
        self.check();
        None
    }

    /// Answers the waiter if its condition holds, or with the failure if the stream failed.
    fn check(&mut self) {
        let met = match &self.waiter {
            None => return,
            Some(Waiter::Created(_)) => self.tally.created >= self.prefixes.len(),
            Some(Waiter::Events(n, _)) => self.tally.events >= *n,
            Some(Waiter::Progress { below, .. }) => *below == 0,
            Some(Waiter::Burst { sent, latencies_us, .. }) => latencies_us.len() >= sent.len(),
        };
        if !met && self.tally.failure.is_none() {
            return;
        }
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let now = Instant::now();
        let (at, reply) = match waiter {
            Waiter::Created(r) => (self.last_created.unwrap_or(now), r),
            Waiter::Events(_, r) | Waiter::Progress { reply: r, .. } => (now, r),
            Waiter::Burst { latencies_us, reply, .. } => {
                let answer = if met { Ok(latencies_us) } else { Err(self.tally.failure.clone().unwrap_or_default()) };
                // The coordinator may have given up waiting.
                let _unwanted = reply.send(answer);
                return;
            }
        };
        let answer = if met { Ok(at) } else { Err(self.tally.failure.clone().unwrap_or_default()) };
        // The coordinator may have given up waiting.
        let _unwanted = reply.send(answer);
    }

    /// Notes that watch `w` observed revision `rev`.
    fn observed(&mut self, w: usize, rev: i64) {
        let Some(old) = self.revs.get_mut(w) else {
            return;
        };
        if rev <= *old {
            return;
        }
        let was = *old;
        *old = rev;
        if let Some(Waiter::Progress { target, below, .. }) = &mut self.waiter {
            if was < *target && rev >= *target {
                *below = below.saturating_sub(1);
            }
        }
    }

    fn response(&mut self, r: WatchResponse) {
        let now = Instant::now();
        let rev = r.header.as_ref().map_or(0, |h| h.revision);
        if r.created {
            self.creation(&r, now);
        } else if r.canceled {
            self.tally.canceled += 1;
            let why = format!("watch {} cancelled by the server: {:?}", r.watch_id, r.cancel_reason);
            self.fail(why);
        } else if r.watch_id == -1 && r.events.is_empty() {
            // Answers the progress request with this index (they are answered in order).
            let index = self.tally.progress_responses;
            self.tally.progress_responses += 1;
            self.progress_rev = self.progress_rev.max(rev);
            match &mut self.waiter {
                Some(Waiter::Progress { target, below, first, .. }) if index >= *first && rev >= *target => *below = 0,
                Some(Waiter::Burst { first, sent, latencies_us, .. }) if index >= *first => {
                    if let Some(at) = usize::try_from(index - *first).ok().and_then(|i| sent.get(i)) {
                        let us = now.saturating_duration_since(*at).as_micros();
                        latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                }
                _ => {}
            }
        } else if let Some(&w) = self.ids.get(&r.watch_id) {
            if r.events.is_empty() {
                // A periodic progress notice for this watch alone.
                self.observed(w, rev);
            }
            self.events(w, &r, now);
        } else {
            self.tally.malformed += r.events.len() as u64;
            self.fail(format!("a response for unknown watch ID {}", r.watch_id));
        }
        self.check();
    }

    fn creation(&mut self, r: &WatchResponse, now: Instant) {
        let n = self.tally.created;
        if n >= self.prefixes.len() {
            return self.fail("more `created` responses than creations".into());
        }
        self.tally.created += 1;
        self.last_created = Some(now);
        if r.canceled || r.watch_id < 0 {
            self.tally.create_failures += 1;
            let why = format!("creation {n} refused: {:?}", r.cancel_reason);
            self.fail(why);
        } else if self.ids.insert(r.watch_id, n).is_some() {
            self.fail(format!("watch ID {} given twice", r.watch_id));
        }
    }

    fn events(&mut self, w: usize, r: &WatchResponse, now: Instant) {
        let now_ns = now.saturating_duration_since(self.base).as_nanos();
        let mut highest = 0;
        for ev in &r.events {
            let Some(kv) = &ev.kv else {
                self.tally.malformed += 1;
                continue;
            };
            highest = highest.max(kv.mod_revision);
            if kv.mod_revision <= self.progress_rev {
                self.tally.progress_ahead += 1;
            }
            if !kv.key.starts_with(&self.prefixes[w]) {
                self.tally.misrouted += 1;
            }
            let Some((sent_ns, seq)) = decode_value(&kv.value) else {
                self.tally.malformed += 1;
                continue;
            };
            if !self.seen.insert(seq) {
                self.tally.duplicates += 1;
                continue;
            }
            self.tally.events += 1;
            let us = now_ns.saturating_sub(u128::from(sent_ns)) / 1000;
            self.tally.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
        self.observed(w, highest);
    }
}

/// The next response, or never when there is no stream any more.
async fn next(
    responses: &mut Option<Streaming<WatchResponse>>,
) -> Result<Option<WatchResponse>, tonic::Status> {
    match responses {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}
