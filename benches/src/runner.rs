//! Drives a fixed number of client tasks that pull work from a shared counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::ops::{Outcome, Worker, Workload};
use crate::report::RunResult;

/// How many errors are echoed to stderr while a run is going on.
const PRINT_FIRST_ERRORS: u64 = 5;
/// How many distinct error messages are kept for the report.
const MAX_ERROR_KINDS: usize = 10;

/// Settings of one run.
pub struct RunConfig {
    pub op: String,
    pub clients: usize,
    pub total: u64,
    /// Per-operation timeout; `None` waits forever.
    pub timeout: Option<Duration>,
}

#[derive(Default)]
struct ClientTally {
    lats: Vec<u32>,
    errors: u64,
    conflicts: u64,
    samples: Vec<(String, u64)>,
}

impl ClientTally {
    fn note_error(&mut self, msg: String, printed: &AtomicU64) {
        self.errors += 1;
        if printed.fetch_add(1, Ordering::Relaxed) < PRINT_FIRST_ERRORS {
            eprintln!("error: {msg}");
        }
        if let Some(e) = self.samples.iter_mut().find(|(m, _)| *m == msg) {
            e.1 += 1;
        } else if self.samples.len() < MAX_ERROR_KINDS {
            self.samples.push((msg, 1));
        }
    }
}

fn status_message(s: &tonic::Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

/// Runs `cfg.total` operations of `work` over `channels` (client i uses channel
/// i mod len) and returns the merged results. Never panics on RPC errors.
pub async fn run(cfg: &RunConfig, channels: &[Channel], work: Arc<Workload>) -> RunResult {
    let counter = Arc::new(AtomicU64::new(0));
    let printed = Arc::new(AtomicU64::new(0));
    let per_client = (cfg.total as usize / cfg.clients.max(1)) + 1;

    // Build the workers before starting the clock.
    let workers: Vec<Worker> = (0..cfg.clients)
        .map(|i| Worker::new(channels[i % channels.len()].clone(), work.clone()))
        .collect();

    let start = Instant::now();
    let mut handles = Vec::with_capacity(cfg.clients);
    for mut worker in workers {
        let counter = counter.clone();
        let printed = printed.clone();
        let total = cfg.total;
        let timeout = cfg.timeout;
        handles.push(tokio::spawn(async move {
            let mut t = ClientTally { lats: Vec::with_capacity(per_client), ..Default::default() };
            loop {
                let seq = counter.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    break;
                }
                let began = Instant::now();
                let res = match timeout {
                    Some(d) => match tokio::time::timeout(d, worker.run_one(seq)).await {
                        Ok(r) => r.map_err(|s| status_message(&s)),
                        Err(_) => Err(format!("timed out after {d:?}")),
                    },
                    None => worker.run_one(seq).await.map_err(|s| status_message(&s)),
                };
                let us = began.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match res {
                    Ok(outcome) => {
                        t.lats.push(us);
                        if outcome == Outcome::Conflict {
                            t.conflicts += 1;
                        }
                    }
                    Err(msg) => t.note_error(msg, &printed),
                }
            }
            t
        }));
    }

    let mut result = RunResult {
        op: cfg.op.clone(),
        clients: cfg.clients,
        conns: channels.len(),
        total: cfg.total,
        latencies_us: Vec::with_capacity(cfg.total as usize),
        ..Default::default()
    };
    for h in handles {
        match h.await {
            Ok(t) => {
                result.latencies_us.extend_from_slice(&t.lats);
                result.errors += t.errors;
                result.conflicts += t.conflicts;
                for (msg, n) in t.samples {
                    if let Some(e) = result.error_samples.iter_mut().find(|(m, _)| *m == msg) {
                        e.1 += n;
                    } else if result.error_samples.len() < MAX_ERROR_KINDS {
                        result.error_samples.push((msg, n));
                    }
                }
            }
            Err(e) => {
                // A client task died (should not happen); account it as one error.
                result.errors += 1;
                eprintln!("error: client task failed: {e}");
            }
        }
    }
    result.elapsed = start.elapsed();
    result
}
