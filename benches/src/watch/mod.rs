//! `watch` and `watch-progress`: many prefix watches shared over few connections, the
//! kube-apiserver-per-tenant shape of issue 3.
//!
//! Setup (both): W = tenants x resources watches on prefixes `/t{i}/r{j}/`; watch `w` is
//! created on watch connection `w % conns`, each connection carrying ONE Watch stream on
//! which all its creations are sent back to back without waiting (see [`reader`]). The
//! creation time runs from just before the first stream opens to the last `created`
//! response. The server's VmRSS (with `--server-pid`) is read before the streams open and
//! after the last creation.
//!
//! `watch` then puts `--total` keys (put `i` under prefix `i % W`) with `--clients` writers
//! on `--put-conns` separate connections and waits, with a deadline, until every stream has
//! received one event per successful put on its prefixes; the delivery latency of an event
//! is its arrival minus its put's send instant (carried in the value, see [`writers`]).
//! Received must equal expected, with no duplicate, misrouted or malformed event.
//!
//! With `--stalled N`, one more connection holds N watches on a stream it stops reading
//! before the puts begin (see [`stalled`]); the delivery latencies are then those of the
//! other streams' watchers while it stalls.
//!
//! `watch-progress` runs the consistent-read wait of kube-apiserver's watch cache; see
//! [`progress`].

mod progress;
mod reader;
mod report;
mod stalled;
#[cfg(test)]
mod tests;
mod writers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch as signal;
use tonic::transport::Channel;

pub use progress::{run_progress, Rounds};
use reader::{Stream, Tally};
pub use report::{Delivery, Setup};
use writers::{put_all, Plan};

/// Settings shared by both benchmarks.
pub struct Config {
    pub tenants: u32,
    pub resources: u32,
    pub server_pid: Option<u32>,
    /// Writers (`--clients`) and puts (`--total`, for `watch`).
    pub clients: usize,
    pub total: u64,
    pub val_size: usize,
    pub rate: f64,
    /// Per-request timeout (puts, ranges).
    pub timeout: Option<Duration>,
    /// Longest wait for all creations, and for all events after the last put.
    pub wait: Duration,
    /// Watches on a stream whose client stops reading (`watch` only; see [`stalled`]).
    pub stalled: usize,
}

impl Config {
    fn watches(&self) -> usize {
        self.tenants as usize * self.resources as usize
    }
}

/// The first key after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

/// The server's resident set size in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open watch streams after setup.
struct Opened {
    streams: Vec<Stream>,
    prefixes: Arc<Vec<Vec<u8>>>,
    base: Instant,
    setup: Setup,
}

/// Opens every stream and creates every watch (see the module docs).
async fn open_all(cfg: &Config, channels: &[Channel]) -> Result<Opened, String> {
    let w = cfg.watches();
    let conns = channels.len();
    let prefixes: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..w)
            .map(|i| {
                format!("/t{}/r{}/", i / cfg.resources as usize, i % cfg.resources as usize).into_bytes()
            })
            .collect(),
    );
    let mut setup =
        Setup { tenants: cfg.tenants, resources: cfg.resources, watches: w, conns, ..Default::default() };
    setup.rss_before_kib = cfg.server_pid.and_then(rss_kib);

    let base = Instant::now();
    let streams: Vec<Stream> = (0..conns)
        .map(|c| {
            let mine: Vec<Vec<u8>> = prefixes.iter().skip(c).step_by(conns).cloned().collect();
            Stream::open(channels[c].clone(), mine, base)
        })
        .collect();
    let deadline = Instant::now() + cfg.wait;
    let mut last = base;
    let mut failure = None;
    for s in &streams {
        match s.created(deadline).await {
            Ok(at) => last = last.max(at),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    setup.create_secs = last.saturating_duration_since(base).as_secs_f64();
    setup.rss_after_kib = cfg.server_pid.and_then(rss_kib);
    if let Some(e) = failure {
        // Count what did get created before reporting the failure.
        let tallies = finish_all(streams).await;
        setup.created = tallies.iter().map(|t| t.created).sum();
        setup.create_failures = tallies.iter().map(|t| t.create_failures).sum();
        return Err(format!(
            "creating {w} watches: {e} ({} created, {} refused, {:.3}s)",
            setup.created, setup.create_failures, setup.create_secs
        ));
    }
    setup.created = w;
    Ok(Opened { streams, prefixes, base, setup })
}

async fn finish_all(streams: Vec<Stream>) -> Vec<Tally> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::with_capacity(streams.len());
    for s in streams {
        out.push(s.finish(deadline).await);
    }
    out
}

/// Runs `watch` (see the module docs). `watch_channels` carry the streams, `put_channels`
/// the writers, `stalled_channel` the stalled stream.
pub async fn run_delivery(
    cfg: &Config,
    watch_channels: &[Channel],
    put_channels: &[Channel],
    stalled_channel: Option<Channel>,
) -> Result<Delivery, String> {
    let opened = open_all(cfg, watch_channels).await?;
    let _stalled = match stalled_channel {
        Some(channel) if cfg.stalled > 0 => {
            let started = Instant::now();
            let s = stalled::open(channel, &opened.prefixes, cfg.stalled, started + cfg.wait).await?;
            eprintln!("stalled stream: {} watches created in {:.3}s, now unread", cfg.stalled, started.elapsed().as_secs_f64());
            Some(s)
        }
        _ => None,
    };
    let plan = Arc::new(Plan {
        prefixes: opened.prefixes.clone(),
        watch_conns: watch_channels.len(),
        val_size: cfg.val_size,
        base: opened.base,
        timeout: cfg.timeout,
        rate: cfg.rate,
    });
    let (_stop_tx, stop) = signal::channel(false);
    let puts = put_all(plan, put_channels, cfg.clients, cfg.total, stop).await;

    // Wait for every stream's events, all under one deadline.
    let deadline = Instant::now() + cfg.wait;
    let mut wait_error = None;
    for (s, &n) in opened.streams.iter().zip(&puts.per_conn) {
        if let Err(e) = s.events(n, deadline).await {
            wait_error.get_or_insert(e);
        }
    }
    let tallies = finish_all(opened.streams).await;
    let mut out = Delivery { setup: opened.setup, expected: puts.ok, wait_error, ..Default::default() };
    for t in tallies {
        out.received += t.events;
        out.duplicates += t.duplicates;
        out.misrouted += t.misrouted;
        out.malformed += t.malformed;
        out.canceled += t.canceled;
        out.latencies_us.extend_from_slice(&t.latencies_us);
        if out.stream_failure.is_none() {
            out.stream_failure = t.failure;
        }
    }
    out.puts = puts;
    Ok(out)
}
