//! Lease expiry on the leader: when each lease is due, renewals, and revoking what expired.
//!
//! The replicated lease *state* (which leases exist, their TTLs and keys, checkpointed
//! remaining TTLs) lives in the store and changes only through the state machine. This
//! runtime keeps the one thing that is leader-only: the deadline of every lease, in an
//! indexed min-heap ([`LeaseQueue`]), so grant, renew and revoke cost O(log n) and finding
//! what expired costs O(log n) per expired lease — never a scan of all leases.
//!
//! Expired leases are revoked through the state machine in batches (`LeaseExpire` with up
//! to `expire_batch` IDs per entry, several entries in flight at once), so 100k leases due
//! together are gone within seconds while no single apply does more than one batch's
//! deletes. A member that is not the leader keeps no deadlines at all ([`Lessor::demote`]).
//!
//! Deadlines survive leader changes through checkpoints: every `checkpoint_interval` the
//! leader records each lease's remaining TTL in the store; a new leader ([`Lessor::promote`])
//! starts each lease from its checkpointed remaining TTL (or its full TTL), extended by
//! `promote_extend`, and spreads deadlines so no more than `max_expiries_per_sec` fall in
//! any one second (no revoke storm after a failover).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{LeaseExpireRequest, RequestAuth};
use cairn_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse,
};
use cairn_storage::lease_queue::LeaseQueue;
use cairn_storage::{ApplyResponse, Error as StorageError, Store};
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::error::RequestError;
use crate::member::proposer::{response_kind, Proposer};

/// Tuning of the lessor.
#[derive(Clone, Debug)]
pub struct LessorConfig {
    /// How often the expiry loop looks for due leases.
    pub tick: Duration,
    /// Most leases revoked by one `LeaseExpire` entry.
    pub expire_batch: usize,
    /// Most `LeaseExpire` entries in flight at once.
    pub expire_inflight: usize,
    /// How often remaining TTLs are checkpointed (0: never).
    pub checkpoint_interval: Duration,
    /// Added to every deadline when this member becomes leader (etcd: the election timeout).
    pub promote_extend: Duration,
    /// Deadlines per second a promotion lets pile up before spreading them.
    pub max_expiries_per_sec: usize,
}

impl Default for LessorConfig {
    fn default() -> Self {
        LessorConfig {
            tick: Duration::from_millis(100),
            expire_batch: 1000,
            expire_inflight: 8,
            checkpoint_interval: Duration::from_secs(300),
            promote_extend: Duration::from_secs(1),
            max_expiries_per_sec: 50_000,
        }
    }
}

/// What LeaseTimeToLive reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    /// Seconds left (truncated, as etcd reports).
    pub remaining: i64,
    /// TTL the lease was granted with.
    pub granted: i64,
    /// Attached keys.
    pub keys: Vec<Vec<u8>>,
}

/// The leader's lease runtime (see the module docs).
pub struct Lessor<P> {
    store: Arc<Store>,
    proposer: Arc<P>,
    clock: Arc<dyn Clock>,
    cfg: LessorConfig,
    /// Deadlines (ms on `clock`) of every lease while this member is leader.
    /// Lock: guards the queue only; a leaf lock, never held across an await or a call into
    /// the store or the proposer.
    queue: Mutex<LeaseQueue>,
    /// Source of lease IDs for grants that do not choose one.
    next_id: AtomicU64,
    /// Whether this member expires leases (it is the leader); set by promote/demote.
    leader: AtomicBool,
    /// Counts renewals (`etcd_debugging_lease_renewed_total`).
    metrics: Arc<Metrics>,
}

impl<P: Proposer> Lessor<P> {
    /// A lessor; `id_base` seeds generated lease IDs (unique per member and start).
    pub fn new(store: Arc<Store>, proposer: Arc<P>, clock: Arc<dyn Clock>, cfg: LessorConfig, id_base: u64) -> Self {
        Lessor {
            store,
            proposer,
            clock,
            cfg,
            queue: Mutex::new(LeaseQueue::new()),
            next_id: AtomicU64::new(id_base),
            leader: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts renewals into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn ttl_ms(secs: i64) -> u64 {
        (secs.max(0) as u64).saturating_mul(1000)
    }

    /// Becomes the expiring member: queues every lease of the store (see the module docs).
    pub fn promote(&self) {
        let now = self.clock.now_ms();
        let extend = self.cfg.promote_extend.as_millis() as u64;
        let mut due: Vec<(u64, i64)> = self
            .store
            .lease_ids()
            .into_iter()
            .filter_map(|id| self.store.lease(id))
            .map(|l| {
                let left = if l.remaining_ttl > 0 { l.remaining_ttl } else { l.ttl };
                (now + extend + Self::ttl_ms(left), l.id)
            })
            .collect();
        due.sort_unstable();
        let spread = spread_deadlines(&due, self.cfg.max_expiries_per_sec.max(1));
        let mut q = self.queue.lock();
        q.clear();
        for (deadline, id) in spread {
            q.upsert(id, deadline);
        }
        self.leader.store(true, Ordering::Release);
    }

    /// Stops expiring (no longer leader): keeps no deadlines.
    pub fn demote(&self) {
        self.leader.store(false, Ordering::Release);
        self.queue.lock().clear();
    }

    /// Whether this member expires leases.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// A grant was applied (proposed by any member): the leader starts its clock unless it
    /// already runs. Called by the Raft state machine after each applied grant.
    pub fn observe_grant(&self, id: i64, ttl: i64) {
        if !self.is_leader() {
            return;
        }
        let deadline = self.clock.now_ms() + Self::ttl_ms(ttl);
        let mut q = self.queue.lock();
        if q.deadline(id).is_none() && self.is_leader() {
            q.upsert(id, deadline);
        }
    }

    /// Number of leases with a deadline.
    pub fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    fn generate_id(&self) -> i64 {
        loop {
            let id = (self.next_id.fetch_add(1, Ordering::Relaxed) & (i64::MAX as u64)) as i64;
            if id != 0 && self.store.lease(id).is_none() {
                return id;
            }
        }
    }

    /// LeaseGrant: chooses an ID if none is given, applies the grant, starts its clock.
    pub async fn grant(&self, mut req: LeaseGrantRequest) -> Result<LeaseGrantResponse, RequestError> {
        let chosen = req.id == 0;
        loop {
            if chosen {
                req.id = self.generate_id();
            }
            match self.proposer.propose(Request::LeaseGrant(req)).await {
                Ok(ApplyResponse::LeaseGrant(resp)) => {
                    // only the leader keeps deadlines (a follower's would only grow)
                    if self.is_leader() {
                        let deadline = self.clock.now_ms() + Self::ttl_ms(resp.ttl);
                        self.queue.lock().upsert(resp.id, deadline);
                    }
                    return Ok(resp);
                }
                // a generated ID raced with a client-chosen one: pick another
                Err(RequestError::Storage(StorageError::LeaseExists)) if chosen => continue,
                Ok(other) => {
                    return Err(RequestError::ResponseMismatch { request: "LeaseGrant", got: response_kind(&other) })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// LeaseRevoke: deletes the lease and its keys in one revision.
    pub async fn revoke(&self, id: i64) -> Result<LeaseRevokeResponse, RequestError> {
        self.revoke_as(id, None).await
    }

    /// LeaseRevoke on behalf of the user `auth` names (who needs write permission on every
    /// key of the lease, checked at apply).
    pub async fn revoke_as(&self, id: i64, auth: Option<RequestAuth>) -> Result<LeaseRevokeResponse, RequestError> {
        match self.proposer.propose_as(Request::LeaseRevoke(LeaseRevokeRequest { id }), auth).await? {
            ApplyResponse::LeaseRevoke(resp) => {
                self.queue.lock().remove(id);
                Ok(resp)
            }
            other => Err(RequestError::ResponseMismatch { request: "LeaseRevoke", got: response_kind(&other) }),
        }
    }

    /// LeaseKeepAlive: restarts the lease's TTL; returns the TTL, or `LeaseNotFound`.
    pub async fn renew(&self, id: i64) -> Result<i64, RequestError> {
        let lease = self.store.lease(id).ok_or(StorageError::LeaseNotFound)?;
        let now = self.clock.now_ms();
        {
            let mut q = self.queue.lock();
            // a lease past its deadline (or already taken out to be revoked) cannot be
            // renewed: its revocation is, or is about to be, in the log (as in etcd)
            if q.deadline(id).is_none_or(|d| d <= now) {
                return Err(StorageError::LeaseNotFound.into());
            }
            q.upsert(id, now + Self::ttl_ms(lease.ttl));
        }
        if lease.remaining_ttl > 0 {
            // a checkpointed remaining TTL would shorten the lease after a failover: clear it
            // (one entry per lease per checkpoint interval at most, as in etcd)
            let cp = LeaseCheckpointRequest { checkpoints: vec![LeaseCheckpoint { id, remaining_ttl: 0 }] };
            self.proposer.propose(Request::LeaseCheckpoint(cp)).await?;
        }
        self.metrics.leases_renewed.inc();
        Ok(lease.ttl)
    }

    /// LeaseTimeToLive: remaining and granted TTL, and the keys if asked.
    pub fn time_to_live(&self, id: i64, keys: bool) -> Option<TimeToLive> {
        let lease = self.store.lease(id)?;
        let now = self.clock.now_ms();
        let remaining = match self.queue.lock().deadline(id) {
            Some(d) => (d.saturating_sub(now) / 1000) as i64,
            None => lease.ttl,
        };
        Some(TimeToLive {
            remaining,
            granted: lease.ttl,
            keys: if keys { lease.keys.into_iter().collect() } else { Vec::new() },
        })
    }

    /// One pass of expiry: revokes every lease due now, in batches. Returns how many
    /// leases it revoked. Leases whose revocation failed are queued again.
    pub async fn expire_due(&self) -> Result<usize, RequestError> {
        let now = self.clock.now_ms();
        let mut revoked = 0;
        loop {
            let batches: Vec<Vec<i64>> = {
                let mut q = self.queue.lock();
                (0..self.cfg.expire_inflight)
                    .map(|_| q.pop_expired(now, self.cfg.expire_batch))
                    .take_while(|b| !b.is_empty())
                    .collect()
            };
            if batches.is_empty() {
                return Ok(revoked);
            }
            let results = futures::future::join_all(batches.iter().map(|ids| {
                self.proposer.propose(Request::LeaseExpire(LeaseExpireRequest { ids: ids.clone() }))
            }))
            .await;
            let mut first_err = None;
            for (ids, r) in batches.into_iter().zip(results) {
                match r {
                    Ok(_) => revoked += ids.len(),
                    Err(e) => {
                        let mut q = self.queue.lock();
                        for id in ids {
                            q.upsert(id, now);
                        }
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
    }

    /// Records every lease's remaining TTL in the store, in batches.
    pub async fn checkpoint(&self) -> Result<usize, RequestError> {
        let now = self.clock.now_ms();
        let ids = self.store.lease_ids();
        let mut cps = Vec::new();
        {
            let q = self.queue.lock();
            for id in ids {
                if let Some(d) = q.deadline(id) {
                    let remaining = (d.saturating_sub(now) / 1000).max(1) as i64;
                    cps.push(LeaseCheckpoint { id, remaining_ttl: remaining });
                }
            }
        }
        let n = cps.len();
        for chunk in cps.chunks(self.cfg.expire_batch.max(1)) {
            let req = LeaseCheckpointRequest { checkpoints: chunk.to_vec() };
            self.proposer.propose(Request::LeaseCheckpoint(req)).await?;
        }
        Ok(n)
    }

    /// Runs expiry every tick and checkpoints every interval until `stop` resolves.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cp_every = self.cfg.checkpoint_interval;
        let mut last_cp = self.clock.now_ms();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.expire_due().await {
                tracing::warn!(error = %e, "lease expiry failed; will retry");
            }
            let now = self.clock.now_ms();
            if !cp_every.is_zero() && now.saturating_sub(last_cp) >= cp_every.as_millis() as u64 {
                last_cp = now;
                if let Err(e) = self.checkpoint().await {
                    tracing::warn!(error = %e, "lease checkpoint failed; will retry");
                }
            }
        }
    }
}

/// Spreads sorted `(deadline, id)` pairs so that no one-second window starting at a
/// deadline holds more than `per_sec` of them; deadlines only move later.
fn spread_deadlines(sorted: &[(u64, i64)], per_sec: usize) -> Vec<(u64, i64)> {
    let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(sorted.len());
    let mut floor_window = 0u64;
    for &(deadline, id) in sorted {
        let mut window = (deadline / 1000).max(floor_window);
        loop {
            let n = per_window.entry(window).or_insert(0);
            if *n < per_sec {
                *n += 1;
                break;
            }
            window += 1;
        }
        floor_window = window;
        let d = if window == deadline / 1000 { deadline } else { window * 1000 };
        out.push((d.max(deadline), id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::spread_deadlines;

    #[test]
    fn spreading_caps_each_second_and_never_shortens() {
        let due: Vec<(u64, i64)> = (0..10).map(|i| (5_000 + i, i as i64)).collect();
        let out = spread_deadlines(&due, 4);
        let mut per_sec = std::collections::HashMap::new();
        for (&(orig, _), &(new, _)) in due.iter().zip(&out) {
            assert!(new >= orig);
            *per_sec.entry(new / 1000).or_insert(0) += 1;
        }
        assert!(per_sec.values().all(|&n| n <= 4), "{per_sec:?}");
        assert_eq!(per_sec.len(), 3);
    }
}

// The lessor against a real store and write pipeline (`mod tests` above is taken).
#[cfg(test)]
#[path = "lessor_tests.rs"]
mod runtime_tests;
