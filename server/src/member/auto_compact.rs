//! Auto-compaction, as etcd's `v3compactor` does it (`--auto-compaction-mode`,
//! `--auto-compaction-retention`). Every member runs the loop; only the leader compacts
//! (etcd pauses a follower's compactor), by proposing a Compaction through Raft, so every
//! member compacts at the same revision.
//!
//! - **periodic** (the default mode): keep `period` of history. The retention is hours when
//!   it is a bare number (`"1"` = 1 h), else a Go duration (`"30m"`). The loop wakes every
//!   `min(period, 1h) / 10` and samples the store revision each time, keeping the samples of
//!   the last `period`; the oldest is the revision `period` ago. The first compaction is
//!   due `period` after start, later ones `min(period, 1h)` after the last success; a
//!   failed one is retried at the next wake-up.
//! - **revision**: keep `retention` revisions. Every 5 minutes, compact at the current
//!   revision minus `retention`, unless that is ≤ 0 or the revision last compacted.
//!
//! A compaction refused because the revision is already compacted counts as done, as in
//! etcd. The loop sleeps on tokio's clock, so tests can pause and advance it; the two
//! schedules are plain state machines ([`Periodic`], [`ByRevision`]) fed with times.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::CompactionRequest;
use cairn_storage::Error as StorageError;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::RequestError;
use crate::member::proposer::Proposer;
use crate::error::ConfigError;
use crate::startup::config::parse_go_duration;

/// How much history auto-compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Keep this much time of history (`periodic`).
    Periodic(Duration),
    /// Keep this many revisions (`revision`).
    Revisions(i64),
}

impl Retention {
    /// etcd's `parseCompactionRetention` and mode check: `None` when the retention is zero
    /// (auto-compaction off, etcd's default).
    pub fn parse(mode: &str, retention: &str) -> Result<Option<Retention>, ConfigError> {
        // etcd's flag check (`embed.Config.Validate`)
        let unsupported = || ConfigError::AutoCompaction(format!("unknown auto-compaction-mode {mode:?}"));
        let parsed = match retention.trim().parse::<i64>() {
            Ok(n) if n >= 0 => match mode {
                "revision" => Retention::Revisions(n),
                "periodic" => Retention::Periodic(Duration::from_secs(n as u64).saturating_mul(3600)),
                _ => return Err(unsupported()),
            },
            _ => {
                if mode != "periodic" && mode != "revision" {
                    return Err(unsupported());
                }
                let d = parse_go_duration(retention)
                    .map_err(|e| ConfigError::AutoCompaction(format!("error parsing CompactionRetention: {e}")))?;
                // etcd reads a duration even in revision mode, as nanoseconds
                match mode {
                    "revision" => Retention::Revisions(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
                    _ => Retention::Periodic(d),
                }
            }
        };
        Ok(match parsed {
            Retention::Periodic(d) if d.is_zero() => None,
            Retention::Revisions(0) => None,
            r => Some(r),
        })
    }
}

/// etcd's revision-mode interval.
pub const REVISION_INTERVAL: Duration = Duration::from_secs(300);

/// The periodic schedule (module docs); times are offsets from the loop's start.
#[derive(Debug)]
pub struct Periodic {
    /// `min(period, 1h)`: the interval between compactions after the first.
    interval: Duration,
    /// Revision samples, oldest first; at most `keep`.
    revs: VecDeque<i64>,
    keep: usize,
    last_success: Duration,
    /// `period` until the first compaction, then `interval`.
    wait: Duration,
}

impl Periodic {
    /// A schedule keeping `period` (non-zero) of history, started at time zero.
    pub fn new(period: Duration) -> Periodic {
        let interval = period.min(Duration::from_secs(3600));
        let retry = (interval / 10).max(Duration::from_millis(1));
        let keep = usize::try_from(period.as_nanos() / retry.as_nanos()).unwrap_or(usize::MAX).saturating_add(1);
        Periodic { interval, revs: VecDeque::new(), keep, last_success: Duration::ZERO, wait: period }
    }

    /// How long the loop sleeps between wake-ups.
    pub fn tick(&self) -> Duration {
        (self.interval / 10).max(Duration::from_millis(1))
    }

    /// Records the store's revision (before each sleep).
    pub fn sample(&mut self, revision: i64) {
        self.revs.push_back(revision);
        while self.revs.len() > self.keep {
            self.revs.pop_front();
        }
    }

    /// The revision to compact at `now`, if one is due.
    pub fn due(&mut self, now: Duration) -> Option<i64> {
        if now.saturating_sub(self.last_success) < self.wait {
            return None;
        }
        self.wait = self.interval;
        self.revs.front().copied()
    }

    /// A compaction proposed at `now` succeeded (or was already done).
    pub fn succeeded(&mut self, now: Duration) {
        self.last_success = now;
    }
}

/// The revision-count schedule (module docs).
#[derive(Debug)]
pub struct ByRevision {
    retention: i64,
    last: i64,
}

impl ByRevision {
    /// A schedule keeping `retention` revisions.
    pub fn new(retention: i64) -> ByRevision {
        ByRevision { retention, last: 0 }
    }

    /// The revision to compact when the store is at `current`, if any.
    pub fn due(&self, current: i64) -> Option<i64> {
        let rev = current.saturating_sub(self.retention);
        (rev > 0 && rev != self.last).then_some(rev)
    }

    /// The compaction at `revision` succeeded (or was already done).
    pub fn succeeded(&mut self, revision: i64) {
        self.last = revision;
    }
}

/// The auto-compaction loop of one member (module docs).
pub struct AutoCompactor<P> {
    retention: Retention,
    proposer: Arc<P>,
    /// The store's current revision.
    revision: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Whether this member leads now.
    leading: Box<dyn Fn() -> bool + Send + Sync>,
}

impl<P: Proposer> AutoCompactor<P> {
    /// A loop compacting through `proposer` while `leading()`.
    pub fn new(
        retention: Retention,
        proposer: Arc<P>,
        revision: impl Fn() -> i64 + Send + Sync + 'static,
        leading: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        AutoCompactor { retention, proposer, revision: Box::new(revision), leading: Box::new(leading) }
    }

    /// Runs until `stop` changes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let start = Instant::now();
        let mut periodic = None;
        let mut by_revision = None;
        let tick = match self.retention {
            Retention::Periodic(d) => {
                info!(compact_period = ?d, "enabled auto periodic compaction");
                periodic.insert(Periodic::new(d)).tick()
            }
            Retention::Revisions(n) => {
                info!(revision_compaction_retention = n, "enabled auto revision compaction");
                by_revision = Some(ByRevision::new(n));
                REVISION_INTERVAL
            }
        };
        loop {
            if let Some(p) = periodic.as_mut() {
                p.sample((self.revision)());
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => return,
            }
            if !(self.leading)() {
                continue;
            }
            if let Some(p) = periodic.as_mut() {
                let Some(rev) = p.due(start.elapsed()) else { continue };
                info!(revision = rev, compact_period = ?self.retention, "starting auto periodic compaction");
                if self.compact(rev).await {
                    p.succeeded(start.elapsed());
                    info!(revision = rev, "completed auto periodic compaction");
                }
            } else if let Some(r) = by_revision.as_mut() {
                let Some(rev) = r.due((self.revision)()) else { continue };
                info!(revision = rev, "starting auto revision compaction");
                if self.compact(rev).await {
                    r.succeeded(rev);
                    info!(revision = rev, "completed auto revision compaction");
                }
            }
        }
    }

    /// Proposes a compaction at `revision`; true when it is done (now or before).
    async fn compact(&self, revision: i64) -> bool {
        let request = Request::Compaction(CompactionRequest { revision, physical: false });
        match self.proposer.propose(request).await {
            Ok(_) | Err(RequestError::Storage(StorageError::Compacted)) => true,
            Err(e) => {
                warn!(revision, error = %e, "failed auto compaction; retrying later");
                false
            }
        }
    }
}

#[cfg(test)]
#[path = "auto_compact_tests.rs"]
mod tests;
