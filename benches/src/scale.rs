//! Scale benchmarks (issue 13): how long a restarted server takes to answer, and how
//! single-key reads fare while a large compaction runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{kv_client::KvClient, CompactionRequest, RangeRequest};
use tonic::transport::Channel;

use crate::conn;
use crate::ops::{OpKind, Worker, Workload};
use crate::report::{num, percentile};

/// Waits until a linearizable Range is answered, connecting again every 10 ms; one JSON
/// line with the seconds waited and, with `pid`, that process's resident set.
pub async fn wait_ready(endpoints: &[String], max_wait: Duration, pid: Option<u32>) -> Result<String, String> {
    let start = Instant::now();
    let mut last_error = String::new();
    while start.elapsed() < max_wait {
        if let Some(pid) = pid {
            // gone, or a zombie its parent has not reaped yet
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if !status.lines().any(|l| l.starts_with("State:") && !l.contains("zombie")) {
                return Err(format!("process {pid} exited; last error: {last_error}"));
            }
        }
        match try_range(endpoints).await {
            Ok(()) => {
                let ready_s = start.elapsed().as_secs_f64();
                let rss = match pid {
                    Some(pid) => crate::watch::rss_kib(pid).ok_or(format!("no VmRSS for process {pid}"))? * 1024,
                    None => 0,
                };
                return Ok(format!("{{\"ready_s\":{},\"rss_bytes\":{rss}}}", num(ready_s)));
            }
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("no answer within {max_wait:?}; last error: {last_error}"))
}

async fn try_range(endpoints: &[String]) -> Result<(), String> {
    let channel = conn::connect_all(endpoints, 1).await?.pop().ok_or("no channel")?;
    let req = RangeRequest { key: b"cairn-bench-ready".to_vec(), ..Default::default() };
    let mut kv = KvClient::new(channel);
    let call = kv.range(req);
    match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("range: {}", s.message())),
        Err(_) => Err("range timed out".into()),
    }
}

/// Settings of `compact-during`.
pub struct CompactDuring {
    pub clients: usize,
    pub baseline: Duration,
    pub work: Arc<Workload>,
}

/// Latencies (µs) and errors of one phase of reads.
struct Phase {
    lats: Vec<u32>,
    errors: u64,
    elapsed: Duration,
}

impl Phase {
    fn json(&mut self, name: &str) -> String {
        self.lats.sort_unstable();
        let qps = self.lats.len() as f64 / self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "\"{name}_reads\":{},\"{name}_errors\":{},\"{name}_qps\":{},\"{name}_p50_ms\":{},\"{name}_p99_ms\":{},\"{name}_max_ms\":{}",
            self.lats.len(),
            self.errors,
            num(qps),
            num(percentile(&self.lats, 50.0)),
            num(percentile(&self.lats, 99.0)),
            num(self.lats.last().map_or(0.0, |&x| x as f64 / 1000.0)),
        )
    }
}

/// `cfg.clients` readers over `channels` until `stop` is set.
async fn read_until(cfg: &CompactDuring, channels: &[Channel], stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<(Vec<u32>, u64)>> {
    (0..cfg.clients)
        .map(|i| {
            let mut worker = Worker::new(channels[i % channels.len()].clone(), cfg.work.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut lats, mut errors) = (Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    match worker.run_one(0).await {
                        Ok(_) => lats.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(_) => errors += 1,
                    }
                }
                (lats, errors)
            })
        })
        .collect()
}

async fn join(handles: Vec<tokio::task::JoinHandle<(Vec<u32>, u64)>>, started: Instant) -> Phase {
    let mut phase = Phase { lats: Vec::new(), errors: 0, elapsed: started.elapsed() };
    for h in handles {
        match h.await {
            Ok((lats, errors)) => {
                phase.lats.extend(lats);
                phase.errors += errors;
            }
            Err(_) => phase.errors += 1,
        }
    }
    phase
}

/// Reads for `cfg.baseline`, then compacts at the current revision (physical) with the
/// same reads running until the compaction returns, then reads for `cfg.baseline` again;
/// one JSON line.
pub async fn compact_during(cfg: &CompactDuring, channels: &[Channel], admin: Channel) -> Result<String, String> {
    if !matches!(cfg.work.kind, OpKind::Get { .. }) {
        return Err("compact-during reads with `get`".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles = read_until(cfg, channels, stop.clone()).await;
    tokio::time::sleep(cfg.baseline).await;
    stop.store(true, Ordering::Relaxed);
    let mut base = join(handles, started).await;

    let mut kv = KvClient::new(admin);
    let head = kv.range(RangeRequest { key: b"cairn-bench-head".to_vec(), ..Default::default() }).await;
    let revision = head.map_err(|s| format!("range: {}", s.message()))?.into_inner().header.map_or(0, |h| h.revision);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles = read_until(cfg, channels, stop.clone()).await;
    let compacted = kv.compact(CompactionRequest { revision, physical: true }).await;
    let compact_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut during = join(handles, started).await;
    compacted.map_err(|s| format!("compact at {revision}: {}", s.message()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles = read_until(cfg, channels, stop.clone()).await;
    tokio::time::sleep(cfg.baseline).await;
    stop.store(true, Ordering::Relaxed);
    let mut after = join(handles, started).await;
    Ok(format!(
        "{{\"revision\":{revision},\"compact_s\":{},{},{},{}}}",
        num(compact_s),
        base.json("base"),
        during.json("during"),
        after.json("after")
    ))
}
