//! `lease-expiry`: how long a server takes to revoke many leases that expire together.
//!
//! 1. Grant `--leases` leases with `--ttl`, pipelined over `--clients` tasks on `--conns`
//!    connections (all grants first, so the leases fall due within the grant phase).
//! 2. Attach `--keys-per-lease` keys under `--prefix` to each lease.
//! 3. The last lease is due at (its grant's response time + TTL); from then on, poll a
//!    count-only range of the prefix every 50 ms until it reaches 0.
//!
//! Reported: the time from the last lease due until no key is left, and revocations per
//! second from the first lease due until then. A lease's due time is taken at its grant
//! *response*, which is at or after the server started its clock: the reported expiry time
//! is, if anything, a little short, by at most one grant's latency, for every server alike.
//! If the setup outlasts the TTL, leases expire while keys are still being attached
//! (their puts fail with "requested lease not found"): raise `--ttl` then; the run says so.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, PutRequest, RangeRequest,
};
use cairn_proto::json::{json_string, JsonStyle};
use tonic::transport::Channel;

use crate::keys::{random_value, Rng};

/// How often the remaining keys are counted.
const POLL: Duration = Duration::from_millis(50);
/// Distinct error messages kept for the report.
const MAX_ERROR_KINDS: usize = 5;

/// Settings of one run.
pub struct Config {
    pub leases: u64,
    pub ttl: i64,
    pub keys_per_lease: u32,
    pub prefix: String,
    pub clients: usize,
    pub val_size: usize,
    /// Per-request timeout.
    pub timeout: Option<Duration>,
    /// Longest wait for the keys to go, from the last lease due.
    pub max_wait: Duration,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub leases: u64,
    pub keys_per_lease: u32,
    pub ttl: i64,
    pub clients: usize,
    pub conns: usize,
    /// Leases granted / keys attached.
    pub granted: u64,
    pub attached: u64,
    pub grant_secs: f64,
    pub attach_secs: f64,
    /// From the first lease due to the last.
    pub due_window_secs: f64,
    /// Keys left when the last lease was due (-1 if not counted).
    pub left_at_last_due: i64,
    /// From the last lease due until no key was left; `None` if they never all went.
    pub expiry_secs: Option<f64>,
    /// Leases revoked per second, from the first lease due until no key was left.
    pub revocations_per_sec: f64,
    /// The setup ran past the first lease's deadline (measurement not of leases expiring
    /// together).
    pub setup_overran_ttl: bool,
    pub errors: u64,
    pub error_samples: Vec<(String, u64)>,
}

#[derive(Default)]
struct Tally {
    errors: u64,
    samples: Vec<(String, u64)>,
}

impl Tally {
    fn note(&mut self, msg: String) {
        self.errors += 1;
        if let Some(e) = self.samples.iter_mut().find(|(m, _)| *m == msg) {
            e.1 += 1;
        } else if self.samples.len() < MAX_ERROR_KINDS {
            self.samples.push((msg, 1));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.errors += other.errors;
        for (msg, n) in other.samples {
            if let Some(e) = self.samples.iter_mut().find(|(m, _)| *m == msg) {
                e.1 += n;
            } else if self.samples.len() < MAX_ERROR_KINDS {
                self.samples.push((msg, n));
            }
        }
    }
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

async fn with_timeout<T>(
    timeout: Option<Duration>,
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    let status = |s: tonic::Status| format!("rpc error: code = {:?} desc = {}", s.code(), s.message());
    match timeout {
        Some(d) => match tokio::time::timeout(d, f).await {
            Ok(r) => r.map_err(status),
            Err(_) => Err(format!("timed out after {d:?}")),
        },
        None => f.await.map_err(status),
    }
}

async fn count(kv: &mut KvClient<Channel>, prefix: &[u8], timeout: Option<Duration>) -> Result<i64, String> {
    let req =
        RangeRequest { key: prefix.to_vec(), range_end: prefix_end(prefix), count_only: true, ..Default::default() };
    with_timeout(timeout, kv.range(req)).await.map(|r| r.into_inner().count)
}

/// Runs `clients` tasks over `channels`, each taking the next index below `n` and calling
/// `op` on it; returns what each call answered (by index) and the errors.
async fn pipelined<T, F, Fut>(n: u64, clients: usize, channels: &[Channel], op: F) -> (Vec<Option<T>>, Tally)
where
    T: Send + 'static,
    F: Fn(Channel, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (next, op, channel) = (next.clone(), op.clone(), channels[c % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match op(channel.clone(), i).await {
                    Ok(v) => done.push((i, v)),
                    Err(msg) => tally.note(msg),
                }
            }
            (done, tally)
        }));
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut tally = Tally::default();
    for t in tasks {
        match t.await {
            Ok((done, t)) => {
                for (i, v) in done {
                    out[i as usize] = Some(v);
                }
                tally.merge(t);
            }
            Err(e) => tally.note(format!("client task failed: {e}")),
        }
    }
    (out, tally)
}

/// Runs the benchmark (see the module docs).
pub async fn run(cfg: &Config, channels: &[Channel]) -> Result<Outcome, String> {
    let prefix = cfg.prefix.as_bytes().to_vec();
    let mut kv = KvClient::new(channels[0].clone());
    let before = count(&mut kv, &prefix, cfg.timeout).await?;
    if before != 0 {
        return Err(format!(
            "{before} keys already under --prefix {:?}; use a fresh server or another prefix",
            cfg.prefix
        ));
    }
    let mut out = Outcome {
        leases: cfg.leases,
        keys_per_lease: cfg.keys_per_lease,
        ttl: cfg.ttl,
        clients: cfg.clients,
        conns: channels.len(),
        left_at_last_due: -1,
        ..Default::default()
    };
    let ttl = Duration::from_secs(cfg.ttl as u64);

    // 1. grants: (lease ID, response time)
    let started = Instant::now();
    let (timeout, grant_ttl) = (cfg.timeout, cfg.ttl);
    let (granted, mut tally) = pipelined(cfg.leases, cfg.clients, channels, move |ch, _| async move {
        let mut lease = LeaseClient::new(ch);
        let resp = with_timeout(timeout, lease.lease_grant(LeaseGrantRequest { ttl: grant_ttl, id: 0 })).await?;
        Ok((resp.into_inner().id, Instant::now()))
    })
    .await;
    out.grant_secs = started.elapsed().as_secs_f64();
    let granted: Vec<(i64, Instant)> = granted.into_iter().flatten().collect();
    out.granted = granted.len() as u64;
    let (Some(first_granted), Some(last_granted)) =
        (granted.iter().map(|g| g.1).min(), granted.iter().map(|g| g.1).max())
    else {
        out.errors = tally.errors;
        out.error_samples = tally.samples;
        return Err(format!("no lease granted ({} errors)", out.errors));
    };
    let (first_due, last_due) = (first_granted + ttl, last_granted + ttl);
    out.due_window_secs = (last_due - first_due).as_secs_f64();

    // 2. keys: lease i gets <prefix><i>/<j>
    let ids: Arc<Vec<i64>> = Arc::new(granted.iter().map(|g| g.0).collect());
    let per = cfg.keys_per_lease as u64;
    let value = Arc::new(random_value(cfg.val_size, &mut Rng::from_entropy()));
    let attach_started = Instant::now();
    let p = cfg.prefix.clone();
    let (attached, put_errors) = pipelined(ids.len() as u64 * per, cfg.clients, channels, move |ch, n| {
        let (ids, value, p) = (ids.clone(), value.clone(), p.clone());
        async move {
            let (i, j) = (n / per, n % per);
            let key = format!("{p}{i:08}/{j}").into_bytes();
            let req = PutRequest { key, value: value.to_vec(), lease: ids[i as usize], ..Default::default() };
            with_timeout(timeout, KvClient::new(ch).put(req)).await.map(drop)
        }
    })
    .await;
    out.attach_secs = attach_started.elapsed().as_secs_f64();
    out.attached = attached.iter().flatten().count() as u64;
    tally.merge(put_errors);
    out.errors = tally.errors;
    out.error_samples = tally.samples;
    out.setup_overran_ttl = Instant::now() >= first_due;
    if out.setup_overran_ttl {
        eprintln!(
            "warning: the setup took {:.1}s, past the first lease's deadline: leases expired while keys \
             were being attached; raise --ttl for leases expiring together",
            started.elapsed().as_secs_f64()
        );
    }

    // 3. wait for the last deadline, then poll until the keys are gone
    tokio::time::sleep_until(last_due.into()).await;
    out.left_at_last_due = count(&mut kv, &prefix, cfg.timeout).await?;
    let mut left = out.left_at_last_due;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while left > 0 {
        if last_due.elapsed() > cfg.max_wait {
            eprintln!("gave up: {left} keys still there {:?} after the last lease was due", cfg.max_wait);
            return Ok(out);
        }
        tick.tick().await;
        left = count(&mut kv, &prefix, cfg.timeout).await?;
    }
    let gone = Instant::now();
    out.expiry_secs = Some(gone.saturating_duration_since(last_due).as_secs_f64());
    let since_first_due = gone.saturating_duration_since(first_due).as_secs_f64();
    if since_first_due > 0.0 {
        out.revocations_per_sec = out.granted as f64 / since_first_due;
    }
    Ok(out)
}

impl Outcome {
    /// Human-readable report.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\nlease-expiry: {} leases (TTL {}s, {} keys each), {} clients, {} conns",
            self.leases, self.ttl, self.keys_per_lease, self.clients, self.conns
        );
        let _ = writeln!(o, "\nSummary:");
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let _ = writeln!(
            o,
            "  Grant:\t{:.4} secs ({} leases, {:.0}/sec).",
            self.grant_secs,
            self.granted,
            rate(self.granted, self.grant_secs)
        );
        let _ = writeln!(
            o,
            "  Attach:\t{:.4} secs ({} keys, {:.0}/sec).",
            self.attach_secs,
            self.attached,
            rate(self.attached, self.attach_secs)
        );
        let _ = writeln!(o, "  Due window:\t{:.4} secs (first to last lease due).", self.due_window_secs);
        let _ = writeln!(o, "  Keys left at last due:\t{}", self.left_at_last_due);
        match self.expiry_secs {
            Some(s) => {
                let _ = writeln!(o, "  Expiry:\t{s:.4} secs (last lease due -> all keys gone).");
            }
            None => {
                let _ = writeln!(o, "  Expiry:\tnot finished (keys left).");
            }
        }
        let _ = writeln!(o, "  Revocations/sec:\t{:.1}", self.revocations_per_sec);
        let _ = writeln!(o, "  Errors:\t{}", self.errors);
        if self.setup_overran_ttl {
            let _ = writeln!(o, "  Warning:\tthe setup outlasted the TTL; raise --ttl.");
        }
        if !self.error_samples.is_empty() {
            let _ = writeln!(o, "\nError distribution:");
            for (msg, n) in &self.error_samples {
                let _ = writeln!(o, "  [{n}]\t{msg}");
            }
        }
        o
    }

    /// One JSON object on one line.
    pub fn json(&self) -> String {
        let num = |x: f64| if x.is_finite() { format!("{x:.4}") } else { "0".into() };
        format!(
            "{{\"op\":\"lease-expiry\",\"leases\":{},\"ttl_s\":{},\"keys_per_lease\":{},\"clients\":{},\
             \"conns\":{},\"granted\":{},\"attached\":{},\"grant_s\":{},\"attach_s\":{},\"due_window_s\":{},\
             \"left_at_last_due\":{},\"expiry_s\":{},\"revocations_per_sec\":{},\"setup_overran_ttl\":{},\
             \"errors\":{},\"first_error\":{}}}",
            self.leases,
            self.ttl,
            self.keys_per_lease,
            self.clients,
            self.conns,
            self.granted,
            self.attached,
            num(self.grant_secs),
            num(self.attach_secs),
            num(self.due_window_secs),
            self.left_at_last_due,
            self.expiry_secs.map_or("null".into(), num),
            num(self.revocations_per_sec),
            self.setup_overran_ttl,
            self.errors,
            json_string(self.error_samples.first().map_or("", |e| e.0.as_str()), JsonStyle::Plain),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn reports() {
        let o = Outcome {
            leases: 10,
            ttl: 5,
            keys_per_lease: 1,
            granted: 10,
            attached: 10,
            expiry_secs: Some(0.25),
            revocations_per_sec: 40.0,
            left_at_last_due: 10,
            ..Default::default()
        };
        let j = o.json();
        assert!(j.contains("\"expiry_s\":0.2500,") && j.contains("\"revocations_per_sec\":40.0000,"), "{j}");
        assert!(!j.contains('\n'));
        let unfinished = Outcome { expiry_secs: None, ..Default::default() }.json();
        assert!(unfinished.contains("\"expiry_s\":null"), "{unfinished}");
        assert!(o.text().contains("Expiry:\t0.2500 secs"));
    }
}
