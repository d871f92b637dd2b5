//! What the log reports about itself, for metrics: the [`NodeObserver`] trait the server
//! implements (this crate does not depend on the server or on a metrics library), and
//! [`Observer`], the cheap handle the WAL, the node and the transport call.
//!
//! Every method runs on a hot path (the Raft thread, a peer task) and must be cheap: a few
//! atomic operations, no I/O, no lock held long. The default methods do nothing, so an
//! observer implements only what it reports.
//!
//! Peer round-trip times are measured here, from Raft's own heartbeats: the leader's
//! transport notes when it queues a `MsgHeartbeat` for a peer ([`Observer::heartbeat_sent`])
//! and its peer service when that peer's `MsgHeartbeatResponse` arrives
//! ([`Observer::heartbeat_answered`]); the time between is reported. Only the newest
//! heartbeat per peer is timed, so a lost heartbeat is never measured against a later
//! answer (etcd measures with a separate HTTP prober; heartbeats cross the same queues and
//! connection as the log, which is what a slow network delays).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Receives the log's measurements (see the module docs). All methods default to nothing.
pub trait NodeObserver: Send + Sync {
    /// One WAL fdatasync took `took`.
    fn wal_fsync(&self, _took: Duration) {}
    /// The leader this node knows changed to `leader` (0: none).
    fn leader_changed(&self, _leader: u64) {}
    /// After each `Ready`: the commit index, the applied index and proposals waiting here.
    fn progress(&self, _committed: u64, _applied: u64, _pending_proposals: usize) {}
    /// A proposal was refused or timed out.
    fn proposal_failed(&self) {}
    /// A heartbeat could not be queued for its peer (queue full, peer unknown).
    fn heartbeat_send_failed(&self) {}
    /// `bytes` of Raft traffic went out to peer `to`.
    fn peer_sent(&self, _to: u64, _bytes: usize) {}
    /// `bytes` of Raft traffic came in from peer `from`.
    fn peer_received(&self, _from: u64, _bytes: usize) {}
    /// A heartbeat to `to` was answered after `rtt`.
    fn peer_round_trip(&self, _to: u64, _rtt: Duration) {}
}

/// Reports nothing.
struct Silent;

impl NodeObserver for Silent {}

/// The handle the log's parts report through; cheap to clone. The default reports nothing.
#[derive(Clone)]
pub struct Observer {
    inner: Arc<dyn NodeObserver>,
    /// When the newest unanswered heartbeat to each peer was queued. Held only to insert or
    /// take one entry; no other lock is taken while it is held.
    heartbeats: Arc<Mutex<HashMap<u64, Instant>>>,
}

impl Observer {
    /// Reports to `inner`.
    pub fn new(inner: Arc<dyn NodeObserver>) -> Observer {
        Observer { inner, heartbeats: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A heartbeat to `to` was queued.
    pub fn heartbeat_sent(&self, to: u64) {
        self.heartbeats.lock().insert(to, Instant::now());
    }

    /// `from` answered a heartbeat: reports the round trip of the newest one sent to it.
    pub fn heartbeat_answered(&self, from: u64) {
        let sent = self.heartbeats.lock().remove(&from);
        if let Some(sent) = sent {
            self.inner.peer_round_trip(from, sent.elapsed());
        }
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new(Arc::new(Silent))
    }
}

impl std::ops::Deref for Observer {
    type Target = dyn NodeObserver;

    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Rtts(AtomicU64);

    impl NodeObserver for Rtts {
        fn peer_round_trip(&self, to: u64, _rtt: Duration) {
            self.0.fetch_add(to, Ordering::Relaxed);
        }
    }

    #[test]
    fn only_answered_heartbeats_are_timed_once() {
        let rtts = Arc::new(Rtts::default());
        let o = Observer::new(rtts.clone());
        o.heartbeat_answered(2); // nothing sent: nothing reported
        o.heartbeat_sent(2);
        o.heartbeat_sent(3);
        o.heartbeat_answered(2);
        o.heartbeat_answered(2); // answered already
        assert_eq!(rtts.0.load(Ordering::Relaxed), 2);
        o.heartbeat_answered(3);
        assert_eq!(rtts.0.load(Ordering::Relaxed), 5);
    }
}
