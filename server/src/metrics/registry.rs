//! The metric types and their rendering in Prometheus' text format 0.0.4, byte for byte as
//! Go's client_golang writes it (what etcd serves):
//!
//! ```text
//! # HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
//! # TYPE etcd_disk_wal_fsync_duration_seconds histogram
//! etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 3
//! ...
//! etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 7
//! etcd_disk_wal_fsync_duration_seconds_sum 0.008908025000000002
//! etcd_disk_wal_fsync_duration_seconds_count 7
//! ```
//!
//! Families sorted by name; label pairs sorted by label name (families declare their label
//! names sorted); series sorted by label values; a labelled family with no series yet is left
//! out, as client_golang leaves it out; numbers as Go's `strconv.FormatFloat(v, 'g', -1, 64)`
//! (`2.147483648e+09`, `0.001`, `+Inf`); help text with `\` and newlines escaped, label values
//! with `\`, `"` and newlines escaped.
//!
//! Updating is lock-free: a [`Counter`] is one atomic add, a [`Gauge`] one atomic store (or a
//! compare-and-swap loop to add), a [`Histogram`] two atomic adds and a CAS on the sum.
//! Looking a labelled series up ([`Family::with`]) takes the family's read lock; hot paths
//! look their series up once and keep the `Arc`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (an `f64`, kept as its bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// Adds `d` (negative to subtract).
    pub fn add(&self, d: f64) {
        add_f64(&self.0, d);
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

fn add_f64(cell: &AtomicU64, d: f64) {
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let new = (f64::from_bits(cur) + d).to_bits();
        match cell.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// Counts of observations in buckets (upper bounds, inclusive), with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    /// One count per bound, then the `+Inf` bucket; not cumulative (summed when rendered).
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending).
    pub fn new(bounds: Arc<[f64]>) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, counts, sum: AtomicU64::new(0f64.to_bits()) }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        add_f64(&self.sum, v);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// `count` bounds: `start`, then each the previous times `factor` (client_golang's
/// `ExponentialBuckets`, computed the same way so the `le` labels print the same).
pub fn exponential_buckets(start: f64, factor: f64, count: usize) -> Arc<[f64]> {
    let mut bounds = Vec::with_capacity(count);
    let mut b = start;
    for _ in 0..count {
        bounds.push(b);
        b *= factor;
    }
    bounds.into()
}

/// A metric series of one of the three kinds.
pub trait Series: Send + Sync + 'static {
    /// The `# TYPE` word.
    const TYPE: &'static str;
    /// Writes this series' sample lines; `labels` is the rendered label pairs without braces
    /// (empty for none).
    fn write(&self, name: &str, labels: &str, out: &mut String);
}

impl Series for Counter {
    const TYPE: &'static str = "counter";

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, "", labels, self.get() as f64);
    }
}

impl Series for Gauge {
    const TYPE: &'static str = "gauge";

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, "", labels, self.get());
    }
}

impl Series for Histogram {
    const TYPE: &'static str = "histogram";

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| go_float(*b));
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        // the count is the buckets' total, so a scrape racing an observation stays consistent
        sample(out, name, "_sum", labels, f64::from_bits(self.sum.load(Ordering::Relaxed)));
        sample(out, name, "_count", labels, cumulative as f64);
    }
}

fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, v: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name}{suffix} {}", go_float(v));
    } else {
        let _ = writeln!(out, "{name}{suffix}{{{labels}}} {}", go_float(v));
    }
}

/// Something the registry renders: a family, or a collector that reads its values when
/// scraped (the process metrics).
pub trait Collect: Send + Sync {
    /// The family name (the registry sorts by it).
    fn name(&self) -> &str;
    /// Appends the family's `# HELP`, `# TYPE` and sample lines (nothing for no series).
    fn render(&self, out: &mut String);
}

/// Series of one metric by label values. An unlabelled metric is a family without label
/// names and with its one series made up front.
pub struct Family<S> {
    name: &'static str,
    help: &'static str,
    /// Sorted (the rendering relies on it).
    label_names: &'static [&'static str],
    make: Box<dyn Fn() -> S + Send + Sync>,
    /// Series by label values (in `label_names` order). Read-locked to find a series,
    /// write-locked only to add one; no other lock is taken while it is held.
    series: RwLock<BTreeMap<Vec<String>, Arc<S>>>,
}

impl<S: Series> Family<S> {
    /// A family whose series `make` creates.
    pub fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        make: impl Fn() -> S + Send + Sync + 'static,
    ) -> Family<S> {
        debug_assert!(label_names.windows(2).all(|w| w[0] < w[1]), "{name}: label names must be sorted");
        Family { name, help, label_names, make: Box::new(make), series: RwLock::new(BTreeMap::new()) }
    }

    /// The series for `values` (one per label name), made if new. Not for a hot path: it
    /// builds the key; callers keep the `Arc`.
    pub fn with(&self, values: &[&str]) -> Arc<S> {
        debug_assert_eq!(values.len(), self.label_names.len(), "{}", self.name);
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Some(s) = self.series.read().get(&key) {
            return s.clone();
        }
        self.series.write().entry(key).or_insert_with(|| Arc::new((self.make)())).clone()
    }

    /// Forgets every series (a gauge whose labels changed, e.g. the member ID).
    pub fn clear(&self) {
        self.series.write().clear();
    }
}

impl<S: Series> Collect for Family<S> {
    fn name(&self) -> &str {
        self.name
    }

    fn render(&self, out: &mut String) {
        let series = self.series.read();
        if series.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, S::TYPE);
        let mut labels = String::new();
        for (values, s) in series.iter() {
            labels.clear();
            for (i, (n, v)) in self.label_names.iter().zip(values).enumerate() {
                if i > 0 {
                    labels.push(',');
                }
                let _ = write!(labels, "{n}=\"{}\"", escape_label(v));
            }
            s.write(self.name, &labels, out);
        }
    }
}

/// Renders `collectors` (any order) as one text-format document, families by name.
pub fn render(collectors: &[&dyn Collect]) -> String {
    let mut sorted: Vec<&dyn Collect> = collectors.to_vec();
    sorted.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::with_capacity(64 * 1024);
    for c in sorted {
        c.render(&mut out);
    }
    out
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `v` as Go's `strconv.FormatFloat(v, 'g', -1, 64)`: the shortest digits that round-trip,
/// in exponent form (`2.147483648e+09`, at least two exponent digits) when the decimal
/// exponent is below -4 or at least 6, plain otherwise; `+Inf`, `-Inf`, `NaN`.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // Rust's `{:e}` and `{}` print the same shortest round-trip digits as Go
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if v == 0.0 || (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_does() {
        for (v, s) in [
            (0.0, "0"),
            (1.0, "1"),
            (7.0, "7"),
            (20480.0, "20480"),
            (524288.0, "524288"),
            (1048576.0, "1.048576e+06"),
            (2147483648.0, "2.147483648e+09"),
            (1.79643388754e9, "1.79643388754e+09"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (0.001, "0.001"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (8.192, "8.192"),
            (0.008908025000000002, "0.008908025000000002"),
            (-3.0, "-3"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_float(v), s, "{v}");
        }
        // etcd's buckets, as etcd prints their `le` labels
        let rtt: Vec<String> = exponential_buckets(0.0001, 2.0, 16).iter().map(|b| go_float(*b)).collect();
        assert_eq!(rtt[0], "0.0001");
        assert_eq!(rtt[6], "0.0064");
        assert_eq!(rtt[15], "3.2768");
        let ttl: Vec<String> = exponential_buckets(1.0, 2.0, 24).iter().map(|b| go_float(*b)).collect();
        assert_eq!(&ttl[19..21], ["524288", "1.048576e+06"]);
    }

    #[test]
    fn families_render_as_client_golang() {
        let fsync = Family::new("b_fsync_seconds", "The latency.", &[], || {
            Histogram::new(exponential_buckets(0.001, 2.0, 3))
        });
        let h = fsync.with(&[]);
        h.observe(0.0005);
        h.observe(0.002);
        h.observe(0.003);
        h.observe(9.0);
        let handled = Family::new("a_handled_total", "Total \\ of\nRPCs.", &["grpc_code", "grpc_method"], Counter::default);
        handled.with(&["OK", "Range"]).add(2);
        handled.with(&["Canceled", "Watch"]).inc();
        handled.with(&["OK", "Range"]).inc();
        let empty = Family::new("c_sent_bytes_total", "Bytes.", &["To"], Counter::default);
        let version = Family::new("d_version", "Which \"version\".", &["server_version"], Gauge::default);
        version.with(&["3.5.13\"x"]).set(1.0);
        let text = render(&[&version, &fsync, &empty, &handled]);
        assert_eq!(
            text,
            "# HELP a_handled_total Total \\\\ of\\nRPCs.\n\
             # TYPE a_handled_total counter\n\
             a_handled_total{grpc_code=\"Canceled\",grpc_method=\"Watch\"} 1\n\
             a_handled_total{grpc_code=\"OK\",grpc_method=\"Range\"} 3\n\
             # HELP b_fsync_seconds The latency.\n\
             # TYPE b_fsync_seconds histogram\n\
             b_fsync_seconds_bucket{le=\"0.001\"} 1\n\
             b_fsync_seconds_bucket{le=\"0.002\"} 2\n\
             b_fsync_seconds_bucket{le=\"0.004\"} 3\n\
             b_fsync_seconds_bucket{le=\"+Inf\"} 4\n\
             b_fsync_seconds_sum 9.0055\n\
             b_fsync_seconds_count 4\n\
             # HELP d_version Which \"version\".\n\
             # TYPE d_version gauge\n\
             d_version{server_version=\"3.5.13\\\"x\"} 1\n"
        );
    }

    #[test]
    fn gauges_add_and_set() {
        let g = Gauge::default();
        g.add(3.0);
        g.add(-1.0);
        assert_eq!(g.get(), 2.0);
        g.set(0.5);
        assert_eq!(g.get(), 0.5);
    }
}
