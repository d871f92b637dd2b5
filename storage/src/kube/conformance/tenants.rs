//! The tenant scenario of issue 3, generic over the storage: many Kubernetes control planes
//! share one storage (for [`crate::kube::EtcdStorage`]: one connection, one shared Watch
//! stream). `tenants` × `resources` prefix watches (progress_notify, from one start revision)
//! run while `writers` tasks spread writes over all the prefixes and every tenant's "watch
//! cache" does consistent reads the way kube-apiserver's does: read the current revision,
//! request watch progress, and wait until its watch has reported (by event or bookmark) a
//! revision at least that, asking again every 100 ms.
//!
//! [`tenant_scenario`] panics unless every watch received exactly its tenant's events for its
//! resource, in order, with revisions never going backwards; it reports how long each
//! consistent read took and which exceeded the bound, for the caller to judge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::kube::interface::KubeStorage;
use crate::kube::tenant::Tenant;
use crate::kube::types::{Preconditions, UpdateOptions, WatchEvent, WatchOptions, Watcher};

/// How often a waiting reader asks for progress again (kube-apiserver: 100 ms).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The sizes of a run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Tenants, each a key prefix `/tenants/<t>/`.
    pub tenants: usize,
    /// Resources per tenant, each watched by prefix.
    pub resources: usize,
    /// Objects per (tenant, resource) the writers create, update and delete.
    pub objects: usize,
    /// Writer tasks (each owns the tenants `t % writers == id`).
    pub writers: usize,
    /// Writes per writer.
    pub writes_per_writer: usize,
    /// Consistent reads per tenant, spread over the write phase.
    pub reads_per_tenant: usize,
    /// A consistent read that takes longer is reported as starved.
    pub read_bound: Duration,
    /// Time for every watch to report the final revision once the writes are done.
    pub settle_bound: Duration,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Time to create every watch (all at once).
    pub created_in: Duration,
    /// Time of the write phase.
    pub wrote_in: Duration,
    /// Latency of every consistent read that completed within the bound, sorted.
    pub reads: Vec<Duration>,
    /// The reads that did not complete within the bound.
    pub starved: Vec<String>,
}

impl Report {
    /// The `p`-quantile (0..=1) of the completed reads.
    pub fn read_quantile(&self, p: f64) -> Duration {
        match self.reads.len() {
            0 => Duration::ZERO,
            n => self.reads[((n - 1) as f64 * p).round() as usize],
        }
    }
}

/// What a watch delivers for one write: kind, key (tenant-relative), revision, value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Added(Vec<u8>, i64, Vec<u8>),
    Modified(Vec<u8>, i64, Vec<u8>),
    Deleted(Vec<u8>, i64, Vec<u8>),
}

fn resource_prefix(r: usize) -> Vec<u8> {
    format!("r{r}/").into_bytes()
}

/// A small deterministic generator (xorshift64*), so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below
    }
}

/// Reads one watch until told to stop: records its events, publishes the newest revision it
/// reported (event or bookmark), and checks that revisions never go backwards.
async fn consume(
    mut w: Watcher,
    reported: watch::Sender<i64>,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<Seen>, String> {
    let mut seen = Vec::new();
    let mut last = 0i64;
    loop {
        let ev = tokio::select! {
            biased;
            ev = w.next() => ev,
            _ = stop.changed() => return Ok(seen),
        };
        let (rev, record) = match ev {
            Some(WatchEvent::Added(o)) => (o.resource_version, Some(Seen::Added(o.key, o.resource_version, o.value))),
            Some(WatchEvent::Modified(o)) => {
                (o.resource_version, Some(Seen::Modified(o.key, o.resource_version, o.value)))
            }
            Some(WatchEvent::Deleted(o)) => {
                (o.resource_version, Some(Seen::Deleted(o.key, o.resource_version, o.value)))
            }
            Some(WatchEvent::Bookmark(rv)) => (rv, None),
            Some(WatchEvent::Error(e)) => return Err(format!("watch failed: {e}")),
            None => return Err("watch ended".into()),
        };
        // An event at or below a reported revision means progress overtook events.
        let backwards = if record.is_some() { rev <= last } else { rev < last };
        if backwards {
            return Err(format!("revision went backwards: {rev} after {last}"));
        }
        last = rev;
        seen.extend(record);
        reported.send_replace(rev);
    }
}

/// One writer: owns the tenants `t % writers == id`, so it knows their state and the exact
/// events each watch must see. Returns them per (tenant, resource).
async fn write<S: KubeStorage + Clone>(
    sc: Scenario,
    id: usize,
    tenants: Vec<Tenant<S>>,
    written: watch::Sender<usize>,
) -> HashMap<(usize, usize), Vec<Seen>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mine: Vec<usize> = (0..sc.tenants).filter(|t| t % sc.writers == id).collect();
    let mut exists: HashMap<(usize, usize, usize), ()> = HashMap::new();
    let mut expected: HashMap<(usize, usize), Vec<Seen>> = HashMap::new();
    for i in 0..sc.writes_per_writer {
        let (t, r, o) = (mine[rng.next(mine.len())], rng.next(sc.resources), rng.next(sc.objects));
        let key = [resource_prefix(r), format!("o{o}").into_bytes()].concat();
        let value = format!("w{id}-{i}").into_bytes();
        let tenant = &tenants[t];
        let seen = if let std::collections::hash_map::Entry::Vacant(e) = exists.entry((t, r, o)) {
            let rv = tenant.create(&key, value.clone(), None).await.expect("create");
            e.insert(());
            Seen::Added(key, rv, value)
        } else if rng.next(4) == 0 {
            let gone = tenant.delete(&key, Preconditions::default()).await.expect("delete");
            exists.remove(&(t, r, o));
            Seen::Deleted(key, gone.resource_version, gone.value)
        } else {
            let v = value.clone();
            let obj = tenant.guaranteed_update(&key, UpdateOptions::default(), move |_| Ok(Some(v.clone()))).await;
            Seen::Modified(key, obj.expect("update").resource_version, value)
        };
        expected.entry((t, r)).or_default().push(seen);
        written.send_modify(|n| *n += 1);
    }
    expected
}

/// Consistent reads of one tenant, spread over the write phase: each read's latency, or the
/// read that exceeded the bound.
async fn read<S: KubeStorage + Clone>(
    sc: Scenario,
    t: usize,
    tenant: Tenant<S>,
    reported: Vec<watch::Receiver<i64>>,
    mut written: watch::Receiver<usize>,
) -> Result<Vec<Duration>, String> {
    let total = sc.writers * sc.writes_per_writer;
    let mut rng = Rng(0x5851_f42d_4c95_7f2d ^ (t as u64 + 1));
    let mut latencies = Vec::new();
    for i in 0..sc.reads_per_tenant {
        let milestone = (i * sc.tenants + t) * total / (sc.reads_per_tenant * sc.tenants);
        written.wait_for(|n| *n >= milestone).await.map_err(|_| "writers gone".to_string())?;
        let r = rng.next(sc.resources);
        let mut rx = reported[r].clone();
        let started = Instant::now();
        let target = tenant.current_resource_version().await.map_err(|e| e.to_string())?;
        loop {
            tenant.request_watch_progress().await.map_err(|e| e.to_string())?;
            let waited = tokio::time::timeout(PROGRESS_EVERY, rx.wait_for(|rv| *rv >= target)).await;
            match waited.map(|r| r.is_ok()) {
                Ok(true) => break,
                Ok(false) => return Err(format!("tenant {t} resource {r}: watch consumer gone")),
                Err(_) if started.elapsed() > sc.read_bound => {
                    let at = *rx.borrow();
                    return Err(format!(
                        "tenant {t} resource {r}: no revision {target} within {:?} (at {at})",
                        sc.read_bound
                    ));
                }
                Err(_) => {}
            }
        }
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Runs the scenario on `storage` (see the module docs).
pub async fn tenant_scenario<S: KubeStorage + Clone>(storage: &S, sc: &Scenario) -> Report {
    let tenants: Vec<Tenant<S>> = (0..sc.tenants)
        .map(|t| Tenant::new(storage.clone(), format!("/tenants/{t}/").into_bytes()).expect("tenant"))
        .collect();
    let r0 = storage.current_resource_version().await.expect("current revision");

    // Every watch at once: on a shared stream their creations are pipelined.
    let started = Instant::now();
    let mut creating = JoinSet::new();
    for (t, tenant) in tenants.iter().enumerate() {
        for r in 0..sc.resources {
            let tenant = tenant.clone();
            creating.spawn(async move {
                let opts = WatchOptions { resource_version: r0, recursive: true, progress_notify: true };
                (t, r, tenant.watch(&resource_prefix(r), opts).await)
            });
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut slots: Vec<Vec<Option<watch::Receiver<i64>>>> = vec![vec![None; sc.resources]; sc.tenants];
    let mut consumers = JoinSet::new();
    while let Some(joined) = creating.join_next().await {
        let (t, r, w) = joined.expect("watch task");
        let w = w.unwrap_or_else(|e| panic!("watch tenant {t} resource {r}: {e}"));
        let (tx, rx) = watch::channel(r0);
        slots[t][r] = Some(rx);
        let stop = stop_rx.clone();
        consumers.spawn(async move { ((t, r), consume(w, tx, stop).await) });
    }
    let mut reported: Vec<Vec<watch::Receiver<i64>>> =
        slots.into_iter().map(|row| row.into_iter().map(|rx| rx.expect("every watch created")).collect()).collect();
    let created_in = started.elapsed();

    // Writers and readers together.
    let started = Instant::now();
    let (written_tx, written_rx) = watch::channel(0usize);
    let mut writers = JoinSet::new();
    for id in 0..sc.writers {
        writers.spawn(write(sc.clone(), id, tenants.clone(), written_tx.clone()));
    }
    drop(written_tx);
    let mut readers = JoinSet::new();
    for (t, tenant) in tenants.iter().enumerate() {
        readers.spawn(read(sc.clone(), t, tenant.clone(), reported[t].clone(), written_rx.clone()));
    }
    let mut expected: HashMap<(usize, usize), Vec<Seen>> = HashMap::new();
    while let Some(joined) = writers.join_next().await {
        expected.extend(joined.expect("writer task"));
    }
    let wrote_in = started.elapsed();
    let (mut reads, mut starved) = (Vec::new(), Vec::new());
    while let Some(joined) = readers.join_next().await {
        match joined.expect("reader task") {
            Ok(l) => reads.extend(l),
            Err(e) => starved.push(e),
        }
    }
    reads.sort();

    // Every watch reports the final revision, then holds exactly its events.
    let last = storage.current_resource_version().await.expect("current revision");
    let deadline = Instant::now() + sc.settle_bound;
    for rx in reported.iter_mut().flatten() {
        while *rx.borrow() < last {
            assert!(
                Instant::now() < deadline,
                "watches did not all reach revision {last} within {:?}",
                sc.settle_bound
            );
            storage.request_watch_progress().await.expect("request progress");
            let _ = tokio::time::timeout(PROGRESS_EVERY, rx.wait_for(|rv| *rv >= last)).await;
        }
    }
    stop_tx.send_replace(true);
    let mut checked = 0;
    while let Some(joined) = consumers.join_next().await {
        let ((t, r), got) = joined.expect("consumer task");
        let got = got.unwrap_or_else(|e| panic!("tenant {t} resource {r}: {e}"));
        let want = expected.remove(&(t, r)).unwrap_or_default();
        assert_eq!(got, want, "tenant {t} resource {r}: events differ");
        checked += 1;
    }
    assert_eq!(checked, sc.tenants * sc.resources);
    Report { created_in, wrote_in, reads, starved }
}
