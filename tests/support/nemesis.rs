//! The nemesis: injects process faults on a seeded schedule while the clients run.
//!
//! It drives anything that implements [`Cluster`]: one node (kill -9 and restart,
//! SIGSTOP/SIGCONT) or several members, where [`run_nemesis_with`] adds partitions (a
//! minority's peer links cut, then healed) and can aim faults at the leader. One fault at a
//! time, each undone before the next, so a majority is always up between faults. It blocks
//! (restarts wait for readiness), so run it on a blocking thread.

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
    /// Cuts every peer link between `minority` and the other members (clients still reach
    /// every member). `blackhole`: new connections on a cut link hang instead of being
    /// closed. Only clusters of several members can; [`ClusterFaults`] asks for it.
    fn partition(&mut self, minority: &[usize], blackhole: bool) {
        let _ = (minority, blackhole);
        panic!("this cluster cannot be partitioned");
    }
    /// Restores every peer link.
    fn heal(&mut self) {}
    /// The member that leads now, if the cluster can tell.
    fn leader(&mut self) -> Option<usize> {
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Kill9AndRestart,
    Pause(Duration),
    /// `Fault::member` and the rest of the minority were cut off for the duration.
    Partition {
        minority: Vec<usize>,
        length: Duration,
        blackhole: bool,
    },
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

/// The faults only a cluster of several members has.
#[derive(Clone, Debug)]
pub struct ClusterFaults {
    /// Percent of the faults that are not kills that are partitions (the rest pauses).
    pub partition_percent: u64,
    /// Partition length, drawn uniformly.
    pub partition: (Duration, Duration),
    /// Percent of faults aimed at the leader (when the cluster knows it) rather than at a
    /// member drawn uniformly.
    pub leader_percent: u64,
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
    run_nemesis_with(cluster, seed, cfg, None, clock, deadline, endpoints)
}

/// [`run_nemesis`] with the faults of a multi-member cluster too. Without them it draws
/// exactly what [`run_nemesis`] always drew, so a seed replays the same schedule. Every
/// partition is healed before it returns.
pub fn run_nemesis_with<C: Cluster>(
    cluster: &mut C,
    seed: u64,
    cfg: &NemesisConfig,
    multi: Option<&ClusterFaults>,
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
        let n = cluster.members();
        let mut member = rng.below(n as u64) as usize;
        if let Some(m) = multi {
            if rng.percent(m.leader_percent) {
                member = cluster.leader().unwrap_or(member);
            }
        }
        let at = clock.now();
        let started = Instant::now();
        let partition = |rng: &mut Rng| multi.filter(|m| rng.percent(m.partition_percent));
        let kind = if rng.percent(cfg.kill_percent) {
            cluster.kill9_and_restart(member);
            let urls = cluster.client_urls();
            // a cluster keeps its addresses: clients of the other members carry on
            if urls != endpoints.borrow().urls {
                endpoints.send_modify(|e| {
                    e.generation += 1;
                    e.urls = urls;
                });
            }
            FaultKind::Kill9AndRestart
        } else if let Some(m) = partition(&mut rng) {
            // a minority: `member` and up to (n-1)/2 - 1 others after it
            let size = 1 + rng.below(((n - 1) / 2).max(1) as u64) as usize;
            let minority: Vec<usize> = (0..size).map(|k| (member + k) % n).collect();
            let blackhole = rng.percent(50);
            let length = between(&mut rng, m.partition)
                .min(deadline.saturating_duration_since(Instant::now()));
            cluster.partition(&minority, blackhole);
            std::thread::sleep(length);
            cluster.heal();
            FaultKind::Partition {
                minority,
                length,
                blackhole,
            }
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
