//! `watch-progress`: kube-apiserver's consistent-read wait, on W watches sharing streams.
//!
//! With the watches open (and, with `--rate`, a background writer spreading puts over
//! their prefixes), each round:
//! 1. reads the current revision R with a linearizable Range (the revision only);
//! 2. sends RequestProgress on every stream (the clock starts just before);
//! 3. waits until every watch on every stream has observed a revision >= R, from one of its
//!    events or from a progress response (`watch_id` -1, for every watch of its stream)
//!    answering a request of this round; a stream not done after `--resend-ms` is asked
//!    again, as kube-apiserver asks every 100 ms.
//!
//! With `--round-gap-ms`, rounds start at most that often, so that writes fall between
//! them. The round's time runs to the instant the last stream got there. A round not done
//! within `--round-timeout-ms` counts as timed out (kube-apiserver gives up after 3 s);
//! after three timed-out rounds in a row the run stops, reporting what it has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use tokio::sync::{oneshot, watch as signal};
use tonic::transport::Channel;

use super::reader::Stream;
use super::report::ProgressRounds;
use super::writers::{put_all, Plan};
use super::{finish_all, open_all, Config};

/// Rounds timed out in a row after which the run stops.
const GIVE_UP_AFTER: u32 = 3;
/// A key no writer uses, read for the current revision.
const REVISION_KEY: &[u8] = b"cairn-bench/current-revision";

/// Round timing settings.
pub struct Rounds {
    pub rounds: u64,
    pub round_timeout: Duration,
    pub resend: Duration,
    /// Shortest time from one round's start to the next one's (zero: back to back).
    pub gap: Duration,
    /// Instead of waits: each round sends this many progress requests back to back on
    /// every stream and records each one's answer latency (many tenants asking at once).
    pub burst: u64,
}

/// A burst round: every stream's latencies, or why one failed or timed out.
async fn burst_round(streams: &[Stream], n: u64, timeout: Duration, out: &mut Vec<u32>) -> Result<bool, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending = Vec::with_capacity(streams.len());
    for s in streams {
        pending.push(s.burst(n)?);
    }
    for (i, rx) in pending.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(lat))) => out.extend(lat),
            Ok(Ok(Err(e))) => return Err(format!("stream {i}: {e}")),
            Ok(Err(_)) => return Err(format!("stream {i}: reader gone")),
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

async fn current_revision(kv: &mut KvClient<Channel>, timeout: Option<Duration>) -> Result<i64, String> {
    let req = RangeRequest { key: REVISION_KEY.to_vec(), limit: 1, ..Default::default() };
    let res = match timeout {
        Some(d) => tokio::time::timeout(d, kv.range(req))
            .await
            .map_err(|_| format!("range timed out after {d:?}"))?,
        None => kv.range(req).await,
    };
    let resp = res.map_err(|s| format!("range: {}", s.message()))?.into_inner();
    resp.header.map(|h| h.revision).ok_or_else(|| "range response without a header".to_string())
}

enum RoundEnd {
    Done(Duration),
    TimedOut,
}

/// One round: progress requests out, then the answers in, resending to streams not done.
async fn round(streams: &[Stream], target: i64, r: &Rounds, resends: &mut u64) -> Result<RoundEnd, String> {
    let started = Instant::now();
    let deadline = started + r.round_timeout;
    let mut pending: Vec<(usize, oneshot::Receiver<Result<Instant, String>>)> =
        Vec::with_capacity(streams.len());
    for (i, s) in streams.iter().enumerate() {
        pending.push((i, s.progress(target)?));
    }
    let mut last = started;
    loop {
        let until = (Instant::now() + r.resend).min(deadline);
        let mut still = Vec::new();
        for (i, mut rx) in pending {
            match tokio::time::timeout_at(until.into(), &mut rx).await {
                Ok(Ok(Ok(at))) => last = last.max(at),
                Ok(Ok(Err(e))) => return Err(format!("stream {i}: {e}")),
                Ok(Err(_)) => return Err(format!("stream {i}: reader gone")),
                Err(_) => still.push((i, rx)),
            }
        }
        if still.is_empty() {
            return Ok(RoundEnd::Done(last.saturating_duration_since(started)));
        }
        if Instant::now() >= deadline {
            return Ok(RoundEnd::TimedOut);
        }
        for (i, _) in &still {
            streams[*i].resend()?;
            *resends += 1;
        }
        pending = still;
    }
}

/// Runs `watch-progress` (see the module docs); `put_channels` carry the Range calls and
/// the background writer.
pub async fn run_progress(
    cfg: &Config,
    r: &Rounds,
    watch_channels: &[Channel],
    put_channels: &[Channel],
) -> Result<ProgressRounds, String> {
    let opened = open_all(cfg, watch_channels).await?;
    let (stop_tx, stop) = signal::channel(false);
    let writer = (cfg.rate > 0.0).then(|| {
        let plan = Arc::new(Plan {
            prefixes: opened.prefixes.clone(),
            watch_conns: watch_channels.len(),
            val_size: cfg.val_size,
            base: opened.base,
            timeout: cfg.timeout,
            rate: cfg.rate,
        });
        let (channels, clients) = (put_channels.to_vec(), cfg.clients);
        tokio::spawn(async move { put_all(plan, &channels, clients, u64::MAX, stop).await })
    });

    let mut kv = KvClient::new(put_channels[0].clone());
    let burst_requests = r.burst * opened.streams.len() as u64;
    let mut out = ProgressRounds { setup: opened.setup, rounds: r.rounds, burst_requests, ..Default::default() };
    let mut in_a_row = 0;
    let mut pace = (!r.gap.is_zero()).then(|| {
        let mut t = tokio::time::interval(r.gap);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    for _ in 0..r.rounds {
        if let Some(t) = pace.as_mut() {
            t.tick().await;
        }
        if r.burst > 0 {
            match burst_round(&opened.streams, r.burst, r.round_timeout, &mut out.waits_us).await {
                Ok(true) => {}
                Ok(false) => {
                    out.timed_out += 1;
                    out.failure = Some(format!("a burst not answered within {:?}: stopped", r.round_timeout));
                    break;
                }
                Err(e) => {
                    out.failure = Some(e);
                    break;
                }
            }
            continue;
        }
        let target = match current_revision(&mut kv, cfg.timeout).await {
            Ok(rev) => rev,
            Err(e) => {
                out.failure = Some(e);
                break;
            }
        };
        match round(&opened.streams, target, r, &mut out.resends).await {
            Ok(RoundEnd::Done(d)) => {
                in_a_row = 0;
                out.waits_us.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
            }
            Ok(RoundEnd::TimedOut) => {
                out.timed_out += 1;
                in_a_row += 1;
                if in_a_row >= GIVE_UP_AFTER {
                    out.failure = Some(format!(
                        "{GIVE_UP_AFTER} rounds in a row not done within {:?}: stopped",
                        r.round_timeout
                    ));
                    break;
                }
            }
            Err(e) => {
                out.failure = Some(e);
                break;
            }
        }
    }

    stop_tx.send_replace(true);
    if let Some(w) = writer {
        match w.await {
            Ok(puts) => {
                out.background_puts = puts.ok;
                out.background_put_errors = puts.errors;
            }
            Err(e) => {
                out.failure.get_or_insert(format!("writer task failed: {e}"));
            }
        }
    }
    let tallies = finish_all(opened.streams).await;
    out.events = tallies.iter().map(|t| t.events).sum();
    out.progress_responses = tallies.iter().map(|t| t.progress_responses).sum();
    out.progress_ahead = tallies.iter().map(|t| t.progress_ahead).sum();
    if out.failure.is_none() {
        out.failure = tallies.into_iter().find_map(|t| t.failure);
    }
    Ok(out)
}
