//! The nemesis: injects process faults on a seeded schedule while the clients run.
//!
//! It drives anything that implements [`Cluster`]: one node today (kill -9 and restart,
//! SIGSTOP/SIGCONT), three members later (the same faults on a chosen member; partitions
//! and disk faults will be new [`FaultKind`]s). It blocks (restarts wait for readiness), so
//! run it on a blocking thread.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::rng::Rng;
use super::workload::{Clock, Endpoints};

/// What the nemesis needs from the system under test.
pub trait Cluster: Send {
    fn members(&self) -> usize;
    /// SIGKILL the member, then start it again on its data dir and wait until it serves.
    fn kill9_and_restart(&mut self, member: usize);
    /// SIGSTOP.
    fn pause(&mut self, member: usize);
    /// SIGCONT.
    fn resume(&mut self, member: usize);
    /// The client URLs now.
    fn client_urls(&self) -> Vec<String>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Kill9AndRestart,
    Pause(Duration),
}

/// One fault, for the report.
#[derive(Clone, Debug)]
pub struct Fault {
    pub member: usize,
    pub kind: FaultKind,
    /// Clock time the fault began.
    pub at: u64,
    /// How long until the member served again.
    pub took: Duration,
}

/// The schedule's shape.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    /// Quiet time between faults, drawn uniformly.
    pub gap: (Duration, Duration),
    /// Percent of faults that are kill -9 (the rest are pauses).
    pub kill_percent: u64,
    /// Pause length, drawn uniformly.
    pub pause: (Duration, Duration),
}

fn between(rng: &mut Rng, (lo, hi): (Duration, Duration)) -> Duration {
    Duration::from_millis(rng.range(lo.as_millis() as u64, hi.as_millis() as u64))
}

/// Injects faults until `deadline`, publishing new addresses after every restart. Every
/// paused member is resumed before it returns.
pub fn run_nemesis<C: Cluster>(
    cluster: &mut C,
    seed: u64,
    cfg: &NemesisConfig,
    clock: Clock,
    deadline: Instant,
    endpoints: &watch::Sender<Endpoints>,
) -> Vec<Fault> {
    let mut rng = Rng::derive(seed, 1);
    let mut faults = Vec::new();
    loop {
        let gap = between(&mut rng, cfg.gap);
        if Instant::now() + gap >= deadline {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return faults;
        }
        std::thread::sleep(gap);
        let member = rng.below(cluster.members() as u64) as usize;
        let at = clock.now();
        let started = Instant::now();
        let kind = if rng.percent(cfg.kill_percent) {
            cluster.kill9_and_restart(member);
            endpoints.send_modify(|e| {
                e.generation += 1;
                e.urls = cluster.client_urls();
            });
            FaultKind::Kill9AndRestart
        } else {
            let d = between(&mut rng, cfg.pause)
                .min(deadline.saturating_duration_since(Instant::now()));
            cluster.pause(member);
            std::thread::sleep(d);
            cluster.resume(member);
            FaultKind::Pause(d)
        };
        faults.push(Fault {
            member,
            kind,
            at,
            took: started.elapsed(),
        });
    }
}
