//! The Watch service: etcd's bidirectional watch stream over the store's watch hub
//! (`cairn_storage::watch`). The hub is fed by the Raft member's state machine
//! (`member/machine.rs`), which publishes every revision as it becomes visible.
//!
//! Per call: a task reads the client's requests and hands each to the hub's stream at
//! once (a creation never waits for anything, so thousands of creations sent back to back
//! are answered as fast as they arrive). Reading promptly matters: HTTP/2 frames the task
//! has not read yet are held by h2, which closes the whole connection when too many small
//! ones pile up (see `net/serve.rs`). The task stops reading only while the stream holds
//! `MAX_UNANSWERED` answers the client has not taken yet
//! ([`WatchStream::accepting`]): a client that sends faster than it reads is then held
//! back by HTTP/2 flow control, never disconnected.
//!
//! The response stream takes the stream's answers in order, completes their headers (cluster ID, member ID, Raft term, as the KV service
//! does) and runs the periodic progress ticker (`--watch-progress-notify-interval`, etcd's
//! `--experimental-watch-progress-notify-interval`, 10 minutes by default, with etcd's
//! jitter of up to a tenth). As in etcd, the call ends when the client closes its side,
//! and every call ends when the server shuts down ([`WatchShutdown`]), so that a graceful
//! shutdown does not wait for watch streams, which never end by themselves; it ends with
//! Unavailable ("etcdserver: server stopped"), the code on which etcd's clients resume
//! their watches on another member.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{WatchRequest, WatchResponse};
use cairn_storage::watch::{WatchHub, WatchStream};
use futures::Stream;
use tokio::sync::watch as signal;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::api::status::rpc_error;
use crate::auth::{common_name, AuthGate};
use crate::error::RequestError;
use crate::member::identity::Membership;
use crate::member::role::{requires_leader, Role};

/// etcd's default progress notification interval.
pub const DEFAULT_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// The Watch service.
pub struct WatchService {
    hub: WatchHub,
    membership: Arc<Membership>,
    progress_interval: Duration,
    /// Seeds each stream's jitter.
    streams_opened: AtomicU64,
    /// Becomes true at shutdown.
    stop: signal::Receiver<bool>,
    stop_tx: Arc<signal::Sender<bool>>,
    /// The member's role, when served by a member: learners refuse watches, and
    /// require-leader streams end once the leader is lost.
    role: Option<Role>,
    /// Access control of watch creations.
    auth: AuthGate,
}

/// Ends every watch call of a [`WatchService`] (at server shutdown).
#[derive(Clone)]
pub struct WatchShutdown(Arc<signal::Sender<bool>>);

impl WatchShutdown {
    /// Ends every current and future watch call.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut signal::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        debug!("watch shutdown signal dropped");
    }
}

impl WatchService {
    /// A Watch service over `hub`; `progress_interval` is the periodic progress notification
    /// interval (zero: etcd's default).
    pub fn new(
        hub: WatchHub,
        membership: Arc<Membership>,
        progress_interval: Duration,
    ) -> WatchService {
        let progress_interval = if progress_interval.is_zero() {
            DEFAULT_PROGRESS_NOTIFY_INTERVAL
        } else {
            progress_interval
        };
        let (stop_tx, stop) = signal::channel(false);
        WatchService {
            hub,
            membership,
            progress_interval,
            streams_opened: AtomicU64::new(0),
            stop,
            stop_tx: Arc::new(stop_tx),
            role: None,
            auth: AuthGate::default(),
        }
    }

    /// Checks each watch creation through `auth` (read permission on its range).
    pub fn with_auth(mut self, auth: AuthGate) -> WatchService {
        self.auth = auth;
        self
    }

    /// Checks every call against this member's `role` (see [`Role`]).
    pub fn with_role(mut self, role: Role) -> WatchService {
        self.role = Some(role);
        self
    }

    /// The handle that ends every watch call.
    pub fn shutdown_handle(&self) -> WatchShutdown {
        WatchShutdown(self.stop_tx.clone())
    }

    /// etcd's interval plus a jitter of up to a tenth, so that streams opened together do
    /// not all tick together (deterministic per stream: no random source needed).
    fn jittered_interval(&self) -> Duration {
        let n = self.streams_opened.fetch_add(1, Ordering::Relaxed);
        let tenth = (self.progress_interval.as_nanos() / 10).max(1);
        let spread = u128::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % tenth;
        self.progress_interval + Duration::from_nanos(u64::try_from(spread).unwrap_or(0))
    }
}

/// Who a watch call's creations are checked as: its metadata and client certificate,
/// taken once when the call starts (etcd checks each creation against the stream's context).
struct Caller {
    auth: AuthGate,
    metadata: tonic::metadata::MetadataMap,
    common_name: Option<String>,
}

impl Caller {
    /// etcd's `isWatchPermitted`: read permission on the watched range; an invalid token
    /// refuses the creation too.
    fn may_watch(&self, key: &[u8], range_end: &[u8]) -> bool {
        self.auth
            .who_parts(&self.metadata, self.common_name.clone())
            .and_then(|who| self.auth.check_range(&who, key, range_end))
            .is_ok()
    }
}

/// Hands one client request to the stream (etcd's `recvLoop`): never waits.
fn handle(stream: &WatchStream, caller: &Caller, request: WatchRequest) {
    match request.request_union {
        Some(RequestUnion::CreateRequest(create)) => {
            if caller.may_watch(&create.key, &create.range_end) {
                stream.create(&create)
            } else {
                stream.refuse_create()
            }
        }
        Some(RequestUnion::CancelRequest(cancel)) => stream.cancel(cancel.watch_id),
        Some(RequestUnion::ProgressRequest(_)) => stream.request_progress(),
        // etcd ignores a request with no known member instead of closing the stream
        None => debug!("empty watch request ignored"),
    }
}

/// The sending side of one call.
struct Outgoing {
    stream: Arc<WatchStream>,
    membership: Arc<Membership>,
    ticker: Interval,
    ready: VecDeque<WatchResponse>,
    stop: signal::Receiver<bool>,
    /// For a require-leader call: resolves once the member has lost its leader for good.
    leader_lost: Option<LeaderLost>,
    /// Set once the call ended with an error; the next poll ends the response stream.
    ended: bool,
    /// Why the client's request stream failed (undecodable or oversized message), sent
    /// before the request reader closes the stream: the call ends with that status, as
    /// etcd's ends with its receive loop's error.
    receive_failed: tokio::sync::oneshot::Receiver<Status>,
}

/// Resolves with the error that ends the call: no leader for too long, or the member stopping.
type LeaderLost = Pin<Box<dyn std::future::Future<Output = RequestError> + Send>>;

impl Drop for Outgoing {
    /// The call is over (the client went away or the call ended): close the stream, which
    /// also releases a request reader waiting in [`WatchStream::accepting`] for answers
    /// nobody will take any more.
    fn drop(&mut self) {
        self.stream.close();
    }
}

/// Resolves when `lost` does; never without one.
async fn lost(lost: &mut Option<LeaderLost>) -> RequestError {
    match lost {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Outgoing {
    /// The next response: from what is ready, else waiting for the stream or the ticker.
    async fn next(mut self) -> Option<(Result<WatchResponse, Status>, Outgoing)> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(response) = self.ready.pop_front() {
                return Some((Ok(response), self));
            }
            tokio::select! {
                batch = self.stream.next() => {
                    let Some(batch) = batch else {
                        // closed by the request reader: the client's request stream failed,
                        // the server is stopping, or the client closed its side (the call
                        // then ends with OK, as etcd's)
                        let status = match self.receive_failed.try_recv() {
                            Ok(status) => status,
                            Err(_) if *self.stop.borrow() => rpc_error(RequestError::Stopped),
                            Err(_) => return None,
                        };
                        self.ended = true;
                        return Some((Err(status), self));
                    };
                    for mut response in batch {
                        self.membership.fill(&mut response.header);
                        self.ready.push_back(response);
                    }
                }
                _ = self.ticker.tick() => self.stream.progress_tick(),
                _ = stopped(&mut self.stop) => {
                    // Unavailable, never OK: etcd's Go client resumes a watch elsewhere
                    // only on Unavailable (or Internal); a call that ends with OK (the
                    // client reads EOF) ends its watches with an error, and
                    // kube-apiserver then re-lists every resource
                    self.stream.close();
                    self.ended = true;
                    return Some((Err(rpc_error(RequestError::Stopped)), self));
                }
                why = lost(&mut self.leader_lost) => {
                    // etcd's monitorLeader: the client moves on to a member with a leader
                    self.stream.close();
                    self.ended = true;
                    return Some((Err(rpc_error(why)), self));
                }
            }
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut leader_lost: Option<LeaderLost> = None;
        if let Some(role) = &self.role {
            role.refuse_learner().map_err(rpc_error)?;
            if requires_leader(request.metadata()) {
                role.require_leader().map_err(rpc_error)?;
                let role = role.clone();
                leader_lost = Some(Box::pin(async move { role.leader_lost().await }));
            }
        }
        let caller = Caller { auth: self.auth.clone(), metadata: request.metadata().clone(), common_name: common_name(&request) };
        let stream = Arc::new(self.hub.open_stream());
        let mut inbound = request.into_inner();
        let receiving = stream.clone();
        let mut stop = self.stop.clone();
        let (failed, receive_failed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = async {
                        receiving.accepting().await;
                        inbound.message().await
                    } => message,
                    _ = stopped(&mut stop) => break,
                };
                match message {
                    Ok(Some(request)) => handle(&receiving, &caller, request),
                    Ok(None) => break,
                    Err(status) => {
                        debug!(error = %status, "watch stream receive failed");
                        let _ = failed.send(status);
                        break;
                    }
                }
            }
            // etcd ends the call when its receive loop ends
            receiving.close();
        });
        let period = self.jittered_interval();
        let mut ticker = interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outgoing = Outgoing {
            stream,
            membership: self.membership.clone(),
            ticker,
            ready: VecDeque::new(),
            stop: self.stop.clone(),
            leader_lost,
            ended: false,
            receive_failed,
        };
        let responses = futures::stream::unfold(outgoing, Outgoing::next);
        Ok(Response::new(Box::pin(responses)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Watch service over a fresh store (keep the directory while it runs).
    fn service(progress: Duration) -> (tempfile::TempDir, WatchHub, WatchService) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = cairn_storage::Store::open(cairn_storage::StoreConfig::new(dir.path())).expect("store");
        let hub = WatchHub::new(store, Default::default()).expect("hub");
        let membership = Arc::new(Membership {
            cluster_id: 1,
            member_id: 2,
            name: "t".into(),
            peer_urls: vec![],
            client_urls: vec![],
            raft_term: crate::member::identity::RaftTerm::new(2),
        });
        let svc = WatchService::new(hub.clone(), membership, progress);
        (dir, hub, svc)
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let (_dir, _hub, svc) = service(Duration::from_secs(10));
        for _ in 0..100 {
            let d = svc.jittered_interval();
            assert!(
                d >= Duration::from_secs(10) && d < Duration::from_secs(11),
                "{d:?}"
            );
        }
        let default = WatchService::new(svc.hub.clone(), svc.membership.clone(), Duration::ZERO);
        assert_eq!(default.progress_interval, DEFAULT_PROGRESS_NOTIFY_INTERVAL);
    }
}
