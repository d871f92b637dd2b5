//! Latency statistics and output (text like etcd's benchmark, or one JSON line).

use std::fmt::Write as _;
use std::time::Duration;

use cairn_proto::json::{json_string, JsonStyle};

/// Everything a run produced.
#[derive(Debug, Default)]
pub struct RunResult {
    pub op: String,
    pub clients: usize,
    pub conns: usize,
    pub total: u64,
    /// Latencies of successful operations, microseconds.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    /// Operations that completed but whose Txn took the failure branch.
    pub conflicts: u64,
    pub elapsed: Duration,
    /// The first few distinct error messages with their counts.
    pub error_samples: Vec<(String, u64)>,
}

/// Summary numbers derived from a [`RunResult`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub ok: u64,
    pub seconds: f64,
    pub qps: f64,
    pub avg_ms: f64,
    pub stddev_ms: f64,
    pub min_ms: f64,
    pub p10_ms: f64,
    pub p25_ms: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile over sorted data (`p` in 0..=100).
pub(crate) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // The epsilon keeps e.g. 99.9% of 1000 at rank 999 despite float error.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

impl RunResult {
    /// Sorts the latencies (in place) and computes the summary.
    pub fn stats(&mut self) -> Stats {
        self.latencies_us.sort_unstable();
        let l = &self.latencies_us;
        let n = l.len() as f64;
        let seconds = self.elapsed.as_secs_f64();
        let (avg_ms, stddev_ms) = if l.is_empty() {
            (0.0, 0.0)
        } else {
            let sum: f64 = l.iter().map(|&x| x as f64).sum();
            let mean = sum / n;
            let var = l.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            (mean / 1000.0, var.sqrt() / 1000.0)
        };
        Stats {
            ok: l.len() as u64,
            seconds,
            qps: if seconds > 0.0 { n / seconds } else { 0.0 },
            avg_ms,
            stddev_ms,
            min_ms: l.first().map_or(0.0, |&x| x as f64 / 1000.0),
            p10_ms: percentile(l, 10.0),
            p25_ms: percentile(l, 25.0),
            p50_ms: percentile(l, 50.0),
            p75_ms: percentile(l, 75.0),
            p90_ms: percentile(l, 90.0),
            p95_ms: percentile(l, 95.0),
            p99_ms: percentile(l, 99.0),
            p999_ms: percentile(l, 99.9),
            max_ms: l.last().map_or(0.0, |&x| x as f64 / 1000.0),
        }
    }

    /// etcd-benchmark-style human-readable report.
    pub fn text(&mut self) -> String {
        let s = self.stats();
        let mut o = String::new();
        let secs = |ms: f64| ms / 1000.0;
        let _ = writeln!(
            o,
            "\n{}: {} clients, {} conns, {} requests",
            self.op, self.clients, self.conns, self.total
        );
        let _ = writeln!(o, "\nSummary:");
        let _ = writeln!(o, "  Total:\t{:.4} secs.", s.seconds);
        let _ = writeln!(o, "  Slowest:\t{:.4} secs.", secs(s.max_ms));
        let _ = writeln!(o, "  Fastest:\t{:.4} secs.", secs(s.min_ms));
        let _ = writeln!(o, "  Average:\t{:.4} secs.", secs(s.avg_ms));
        let _ = writeln!(o, "  Stddev:\t{:.4} secs.", secs(s.stddev_ms));
        let _ = writeln!(o, "  Requests/sec:\t{:.4}", s.qps);
        let _ = writeln!(o, "  Succeeded:\t{}", s.ok);
        let _ = writeln!(o, "  Errors:\t{}", self.errors);
        if self.op == "update" {
            let _ = writeln!(o, "  Conflicts:\t{}", self.conflicts);
        }
        if !self.latencies_us.is_empty() {
            let _ = writeln!(o, "\nResponse time histogram:");
            o.push_str(&histogram(&self.latencies_us, 10));
            let _ = writeln!(o, "\nLatency distribution:");
            for (p, v) in [
                ("10", s.p10_ms),
                ("25", s.p25_ms),
                ("50", s.p50_ms),
                ("75", s.p75_ms),
                ("90", s.p90_ms),
                ("95", s.p95_ms),
                ("99", s.p99_ms),
                ("99.9", s.p999_ms),
            ] {
                let _ = writeln!(o, "  {p}% in {:.4} secs.", secs(v));
            }
        }
        if !self.error_samples.is_empty() {
            let _ = writeln!(o, "\nError distribution:");
            for (msg, n) in &self.error_samples {
                let _ = writeln!(o, "  [{n}]\t{msg}");
            }
        }
        o
    }

    /// One JSON object on one line (no trailing newline).
    pub fn json(&mut self) -> String {
        let s = self.stats();
        format!(
            "{{\"op\":{},\"clients\":{},\"conns\":{},\"total\":{},\"ok\":{},\"errors\":{},\
             \"conflicts\":{},\"seconds\":{},\"qps\":{},\"avg_ms\":{},\"p50_ms\":{},\"p90_ms\":{},\
             \"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{}}}",
            json_string(&self.op, JsonStyle::Plain),
            self.clients,
            self.conns,
            self.total,
            s.ok,
            self.errors,
            self.conflicts,
            num(s.seconds),
            num(s.qps),
            num(s.avg_ms),
            num(s.p50_ms),
            num(s.p90_ms),
            num(s.p99_ms),
            num(s.p999_ms),
            num(s.max_ms),
        )
    }
}

/// A finite JSON number with at most 4 decimals.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Linear histogram with `buckets` buckets over sorted data, like etcd's report.
fn histogram(sorted: &[u32], buckets: usize) -> String {
    let min = *sorted.first().unwrap_or(&0) as f64;
    let max = *sorted.last().unwrap_or(&0) as f64;
    let step = (max - min) / buckets as f64;
    let mut marks: Vec<f64> = (0..buckets).map(|i| min + step * i as f64).collect();
    marks.push(max);
    let mut counts = vec![0u64; marks.len()];
    let mut bi = 0;
    for &v in sorted {
        while bi < marks.len() - 1 && (v as f64) > marks[bi] {
            bi += 1;
        }
        counts[bi] += 1;
    }
    let peak = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut o = String::new();
    for (m, c) in marks.iter().zip(&counts) {
        let bar = "∎".repeat(((*c * 40) / peak) as usize);
        let _ = writeln!(o, "  {:.4} [{}]\t|{}", m / 1e6, c, bar);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=1000).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.0), 990.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert_eq!(percentile(&v, 100.0), 1000.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn json_has_required_keys() {
        let mut r = RunResult {
            op: "put".into(),
            clients: 2,
            conns: 1,
            total: 3,
            latencies_us: vec![3000, 1000, 2000],
            elapsed: Duration::from_secs(1),
            ..Default::default()
        };
        let j = r.json();
        for k in [
            "op", "clients", "conns", "total", "errors", "seconds", "qps", "p50_ms", "p90_ms",
            "p99_ms", "p999_ms", "max_ms",
        ] {
            assert!(j.contains(&format!("\"{k}\":")), "missing {k} in {j}");
        }
        assert!(j.contains("\"qps\":3,"), "{j}");
        assert!(j.contains("\"p50_ms\":2,"), "{j}");
        assert!(!j.contains('\n'));
        let t = r.text();
        assert!(t.contains("Requests/sec:\t3.0000"), "{t}");
    }

    #[test]
    fn num_formats() {
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(f64::NAN), "0");
    }
}
