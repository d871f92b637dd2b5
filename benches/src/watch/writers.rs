//! The writers: puts spread over the watched prefixes, each value carrying the instant
//! its put was sent, so the reader of the event can compute the delivery latency.
//!
//! Value layout (little endian): bytes 0..8 the send instant in nanoseconds since the run's
//! base instant, bytes 8..16 the put's sequence number (unique per run, so duplicates are
//! caught), then zero padding up to `--val-size`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use tokio::sync::watch as signal;
use tonic::transport::Channel;

/// Bytes every value needs for the send instant and the sequence number.
pub const VALUE_HEADER: usize = 16;

/// Makes a value for put `seq` sent at `sent_ns`, at least [`VALUE_HEADER`] bytes long.
pub fn encode_value(sent_ns: u64, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(VALUE_HEADER));
    v.extend_from_slice(&sent_ns.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.resize(size.max(VALUE_HEADER), 0);
    v
}

/// (send instant, sequence number) of a value made by [`encode_value`].
pub fn decode_value(v: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_le_bytes(v.get(0..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
    Some((sent, seq))
}

/// What to write.
pub struct Plan {
    /// The watched prefixes; put `i` goes under prefix `i % len`.
    pub prefixes: Arc<Vec<Vec<u8>>>,
    /// Watch connections: the watch on prefix `w` is on connection `w % watch_conns`.
    pub watch_conns: usize,
    pub val_size: usize,
    pub base: Instant,
    /// Per-put timeout.
    pub timeout: Option<Duration>,
    /// Puts per second over all writers; 0 for as fast as they go.
    pub rate: f64,
}

/// What the writers did.
#[derive(Debug, Default)]
pub struct Puts {
    /// Successful puts per watch connection (the events each stream should see).
    pub per_conn: Vec<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Put latencies, microseconds.
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
}

impl Puts {
    fn merge(&mut self, other: Puts) {
        for (a, b) in self.per_conn.iter_mut().zip(&other.per_conn) {
            *a += b;
        }
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend_from_slice(&other.latencies_us);
    }
}

/// Runs `clients` writers over `channels` until `total` puts were made or `stop` turns
/// true (a writer then ends after its current put).
pub async fn put_all(
    plan: Arc<Plan>,
    channels: &[Channel],
    clients: usize,
    total: u64,
    stop: signal::Receiver<bool>,
) -> Puts {
    let next = Arc::new(AtomicU64::new(0));
    // Each writer paces itself to its share of the rate.
    let period = (plan.rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 / plan.rate));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (plan, next, mut stop) = (plan.clone(), next.clone(), stop.clone());
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Puts { per_conn: vec![0; plan.watch_conns], ..Default::default() };
            let mut tick = period.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                if *stop.borrow() {
                    break;
                }
                if let Some(t) = tick.as_mut() {
                    tokio::select! {
                        _ = t.tick() => {}
                        _ = stop.changed() => break,
                    }
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    break;
                }
                let w = (seq % plan.prefixes.len() as u64) as usize;
                let mut key = plan.prefixes[w].clone();
                key.extend_from_slice(format!("k{seq}").as_bytes());
                let sent = Instant::now();
                let sent_ns =
                    u64::try_from(sent.saturating_duration_since(plan.base).as_nanos()).unwrap_or(u64::MAX);
                let req = PutRequest {
                    key,
                    value: encode_value(sent_ns, seq, plan.val_size),
                    ..Default::default()
                };
                let res = match plan.timeout {
                    Some(d) => match tokio::time::timeout(d, kv.put(req)).await {
                        Ok(r) => r.map_err(|s| s.message().to_string()),
                        Err(_) => Err(format!("put timed out after {d:?}")),
                    },
                    None => kv.put(req).await.map_err(|s| s.message().to_string()),
                };
                match res {
                    Ok(_) => {
                        out.ok += 1;
                        out.per_conn[w % plan.watch_conns] += 1;
                        let us = sent.elapsed().as_micros();
                        out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Err(msg) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(msg);
                    }
                }
            }
            out
        }));
    }
    let mut all = Puts { per_conn: vec![0; plan.watch_conns], ..Default::default() };
    for t in tasks {
        match t.await {
            Ok(p) => all.merge(p),
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("writer task failed: {e}"));
            }
        }
    }
    all.elapsed = started.elapsed();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v = encode_value(123_456_789, 42, 64);
        assert_eq!(v.len(), 64);
        assert_eq!(decode_value(&v), Some((123_456_789, 42)));
        assert_eq!(encode_value(1, 2, 0).len(), VALUE_HEADER);
        assert_eq!(decode_value(b"short"), None);
    }
}
