//! The after-the-load checks of a fault-injection run, for any number of members: watches
//! recorded and checked against the committed history, every committed write read back at
//! its revision, and operations that must be answered once the cluster is healthy again.
//! Used by `tests/linearizability.rs` (one node) and `tests/cluster_faults.rs` (three).

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::RangeRequest;
use tokio::sync::watch;

use super::linearizability::{Input, Operation, Rev};
use super::rng::Rng;
use super::watch_check::{self as wc, EventKind, Watched};
use super::workload::{
    connect, execute, record_watch_with, Clock, Endpoints, WatchOutcome, WatchSpec, WorkloadConfig,
};

/// One recorded watch and where it must get to.
pub struct WatchRun {
    pub spec: WatchSpec,
    pub watched: Watched,
    /// Set to the revision the watch must cover before it may stop.
    pub until: watch::Sender<Option<Rev>>,
    pub task: tokio::task::JoinHandle<WatchOutcome>,
}

/// Starts recording a watch from `start`, asking for progress every `progress` (see
/// [`record_watch_with`]).
pub fn start_watch(
    spec: WatchSpec,
    watched: Watched,
    start: Rev,
    seed: u64,
    cfg: &WorkloadConfig,
    eps: &watch::Receiver<Endpoints>,
    progress: Option<Duration>,
) -> WatchRun {
    let (until, until_rx) = watch::channel(None);
    let task = tokio::spawn(record_watch_with(
        spec.clone(),
        start,
        seed,
        cfg.clone(),
        eps.clone(),
        until_rx,
        progress,
    ));
    WatchRun {
        spec,
        watched,
        until,
        task,
    }
}

/// Runs one operation that must be answered (the cluster is healthy), recorded as client
/// `client`.
pub async fn must(
    clock: &Clock,
    kv: &mut KvClient<tonic::transport::Channel>,
    client: usize,
    key: &str,
    input: Input,
) -> Result<Operation, String> {
    let call = clock.now();
    let out = tokio::time::timeout(Duration::from_secs(10), execute(kv, key, &input)).await;
    let ret = clock.now();
    match out {
        Ok(Ok(Ok(output))) => Ok(Operation {
            client,
            key: key.into(),
            call,
            ret: Some(ret),
            input,
            output,
        }),
        other => Err(format!(
            "{input:?} of {key:?} on a healthy cluster: {other:?}"
        )),
    }
}

/// Waits (up to `catch_up` each) for every watch to reach its `until` and checks its
/// segments; returns a line for the report (or why the checks were skipped).
pub async fn check_watches(
    watches: Vec<WatchRun>,
    history: &wc::History,
    catch_up: Duration,
    problems: &mut Vec<String>,
) -> String {
    let (mut events, mut segments) = (0, 0);
    let mut skipped = None;
    for w in watches {
        let outcome = match tokio::time::timeout(catch_up, w.task).await {
            Ok(o) => o.expect("watch task"),
            Err(_) => {
                let (name, until) = (&w.spec.name, *w.until.borrow());
                problems.push(format!(
                    "watch {name} did not reach revision {until:?} within {catch_up:?}"
                ));
                continue;
            }
        };
        match outcome {
            WatchOutcome::Unimplemented(msg) => skipped = Some(msg),
            WatchOutcome::Recorded {
                segments: segs,
                anomalies,
            } => {
                problems.extend(anomalies);
                match wc::check_watch(&w.watched, history, &segs, *w.until.borrow()) {
                    Ok(s) => {
                        events += s.events;
                        segments += s.segments;
                    }
                    Err(v) => {
                        problems.push(format!("watch {}:\n  {}", w.spec.name, v.join("\n  ")))
                    }
                }
            }
        }
    }
    match skipped {
        Some(msg) => {
            format!("watch checks SKIPPED: the server answered UNIMPLEMENTED to Watch ({msg:?})")
        }
        None => format!("watches: {events} events in {segments} segments checked"),
    }
}

/// Reads every committed write back at its revision (8 connections in parallel, each to
/// a member drawn at random); returns the first 20 writes that are missing or differ.
pub async fn check_durable(eps: &Endpoints, history: &wc::History) -> Vec<String> {
    let writes: Vec<wc::CommittedWrite> = history.committed.clone();
    let chunk = writes.len().div_ceil(8).max(1);
    let mut tasks = Vec::new();
    for (i, part) in writes.chunks(chunk).enumerate() {
        let (part, eps) = (part.to_vec(), eps.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::derive(0, 4000 + i as u64);
            let Some(ch) = connect(&eps, &mut rng, Duration::from_secs(2)).await else {
                return vec!["durability check: cannot connect".to_string()];
            };
            let mut kv = KvClient::new(ch);
            let mut bad = Vec::new();
            for w in part {
                let req = RangeRequest {
                    key: w.key.clone().into_bytes(),
                    revision: w.revision,
                    ..Default::default()
                };
                let r = match kv.range(req).await {
                    Ok(r) => r.into_inner(),
                    Err(e) => {
                        bad.push(format!("reading back {w:?}: {e}"));
                        continue;
                    }
                };
                let ok = match (w.kind, r.kvs.as_slice()) {
                    (EventKind::Delete, []) => true,
                    (EventKind::Put, [kv]) => {
                        kv.value == w.value.as_bytes() && kv.mod_revision == w.revision
                    }
                    _ => false,
                };
                if !ok {
                    let got: Vec<_> = r
                        .kvs
                        .iter()
                        .map(|kv| {
                            let v = String::from_utf8_lossy(&kv.value).into_owned();
                            (v, kv.mod_revision)
                        })
                        .collect();
                    bad.push(format!(
                        "lost after kill -9: {w:?} reads back at its revision as {got:?}"
                    ));
                }
            }
            bad
        }));
    }
    let mut bad = Vec::new();
    for t in tasks {
        bad.extend(t.await.expect("durability task"));
    }
    bad.truncate(20);
    bad
}
