//! What `watch` and `watch-progress` measured, as text or one JSON line.

use std::fmt::Write as _;

use cairn_proto::json::{json_string, JsonStyle};

use super::writers::Puts;
use crate::report::{num, percentile};

/// The watch setup shared by both benchmarks.
#[derive(Debug, Default)]
pub struct Setup {
    pub tenants: u32,
    pub resources: u32,
    pub watches: usize,
    pub conns: usize,
    pub created: usize,
    pub create_failures: u64,
    /// From just before the first stream opened to the last `created` response.
    pub create_secs: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
}

impl Setup {
    /// Server RSS growth per watch, bytes (growth of the whole process, streams included).
    pub fn bytes_per_watch(&self) -> Option<f64> {
        let (b, a) = (self.rss_before_kib?, self.rss_after_kib?);
        (self.watches > 0).then(|| (a as f64 - b as f64) * 1024.0 / self.watches as f64)
    }

    fn text(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "  Watches:\t{} ({} tenants x {} resources) over {} conns, {} created, {} refused",
            self.watches, self.tenants, self.resources, self.conns, self.created, self.create_failures
        );
        let rate = if self.create_secs > 0.0 { self.created as f64 / self.create_secs } else { 0.0 };
        let _ = writeln!(o, "  Create all:\t{:.4} secs ({rate:.0}/sec).", self.create_secs);
        match (self.rss_before_kib, self.rss_after_kib, self.bytes_per_watch()) {
            (Some(b), Some(a), Some(per)) => {
                let _ = writeln!(o, "  Server RSS:\t{b} KiB -> {a} KiB ({per:.0} bytes/watch).");
            }
            _ => {
                let _ = writeln!(o, "  Server RSS:\tnot measured (give --server-pid).");
            }
        }
    }

    fn json(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("null".into(), |x| x.to_string());
        format!(
            "\"tenants\":{},\"resources\":{},\"watches\":{},\"conns\":{},\"created\":{},\
             \"create_failures\":{},\"create_s\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\
             \"bytes_per_watch\":{}",
            self.tenants,
            self.resources,
            self.watches,
            self.conns,
            self.created,
            self.create_failures,
            num(self.create_secs),
            opt(self.rss_before_kib),
            opt(self.rss_after_kib),
            self.bytes_per_watch().map_or("null".into(), |b| format!("{b:.0}")),
        )
    }
}

/// What `watch` measured.
#[derive(Debug, Default)]
pub struct Delivery {
    pub setup: Setup,
    pub puts: Puts,
    /// One event per successful put.
    pub expected: u64,
    /// Distinct events received.
    pub received: u64,
    pub duplicates: u64,
    pub misrouted: u64,
    pub malformed: u64,
    pub canceled: u64,
    /// Delivery latency of each event, microseconds.
    pub latencies_us: Vec<u32>,
    /// Why the wait for the events ended early, if it did.
    pub wait_error: Option<String>,
    pub stream_failure: Option<String>,
}

impl Delivery {
    /// Everything that makes the run a failure; empty when it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.received != self.expected {
            p.push(format!("received {} events, expected {}", self.received, self.expected));
        }
        for (n, what) in [
            (self.duplicates, "duplicate events"),
            (self.misrouted, "events outside their watch's prefix"),
            (self.malformed, "malformed events"),
            (self.canceled, "watches cancelled by the server"),
            (self.puts.errors, "failed puts"),
        ] {
            if n > 0 {
                p.push(format!("{n} {what}"));
            }
        }
        if let Some(e) = &self.puts.first_error {
            p.push(format!("first put error: {e}"));
        }
        p.extend(self.wait_error.iter().map(|e| format!("waiting for events: {e}")));
        p.extend(self.stream_failure.iter().cloned());
        p
    }

    /// Human-readable report (sorts the latencies).
    pub fn text(&mut self) -> String {
        self.latencies_us.sort_unstable();
        self.puts.latencies_us.sort_unstable();
        let mut o = String::from("\nwatch:\n\nSummary:\n");
        self.setup.text(&mut o);
        let (p, l) = (&self.puts, &self.latencies_us);
        let _ = writeln!(
            o,
            "  Puts:\t{} ok, {} failed in {:.4} secs (p50 {:.4} ms, p99 {:.4} ms).",
            p.ok,
            p.errors,
            p.elapsed.as_secs_f64(),
            percentile(&p.latencies_us, 50.0),
            percentile(&p.latencies_us, 99.0)
        );
        let _ = writeln!(o, "  Events:\t{} received, {} expected.", self.received, self.expected);
        let _ = writeln!(o, "\nDelivery latency (put sent -> event received):");
        for (name, q) in [("50", 50.0), ("90", 90.0), ("99", 99.0), ("99.9", 99.9), ("100", 100.0)] {
            let _ = writeln!(o, "  {name}% in {:.4} ms.", percentile(l, q));
        }
        for problem in self.problems() {
            let _ = writeln!(o, "FAILED: {problem}");
        }
        o
    }

    /// One JSON object on one line (sorts the latencies).
    pub fn json(&mut self) -> String {
        self.latencies_us.sort_unstable();
        self.puts.latencies_us.sort_unstable();
        let (p, l) = (&self.puts, &self.latencies_us);
        let problems = self.problems();
        format!(
            "{{\"op\":\"watch\",{},\"puts\":{},\"put_errors\":{},\"put_s\":{},\"put_p50_ms\":{},\
             \"put_p99_ms\":{},\"expected\":{},\"received\":{},\"duplicates\":{},\"misrouted\":{},\
             \"malformed\":{},\"delivery_p50_ms\":{},\"delivery_p90_ms\":{},\"delivery_p99_ms\":{},\
             \"delivery_max_ms\":{},\"ok\":{},\"error\":{}}}",
            self.setup.json(),
            p.ok,
            p.errors,
            num(p.elapsed.as_secs_f64()),
            num(percentile(&p.latencies_us, 50.0)),
            num(percentile(&p.latencies_us, 99.0)),
            self.expected,
            self.received,
            self.duplicates,
            self.misrouted,
            self.malformed,
            num(percentile(l, 50.0)),
            num(percentile(l, 90.0)),
            num(percentile(l, 99.0)),
            num(percentile(l, 100.0)),
            problems.is_empty(),
            json_string(&problems.join("; "), JsonStyle::Plain),
        )
    }
}

/// What `watch-progress` measured.
#[derive(Debug, Default)]
pub struct ProgressRounds {
    pub setup: Setup,
    pub rounds: u64,
    /// With `--burst`: requests per round over all streams, each timed (0: one wait per
    /// round).
    pub burst_requests: u64,
    /// Wait of each completed round (with `--burst`: each request's time to its answer),
    /// microseconds.
    pub waits_us: Vec<u32>,
    pub timed_out: u64,
    /// Progress requests sent again to streams not done after `--resend-ms`.
    pub resends: u64,
    pub progress_responses: u64,
    /// Events that arrived after a progress response claiming their revision.
    pub progress_ahead: u64,
    pub events: u64,
    pub background_puts: u64,
    pub background_put_errors: u64,
    pub failure: Option<String>,
}

impl ProgressRounds {
    /// Whether every round completed.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
            && self.timed_out == 0
            && self.progress_ahead == 0
            && self.waits_us.len() as u64 == self.rounds * self.burst_requests.max(1)
    }

    /// Human-readable report (sorts the waits).
    pub fn text(&mut self) -> String {
        self.waits_us.sort_unstable();
        let mut o = String::from("\nwatch-progress:\n\nSummary:\n");
        self.setup.text(&mut o);
        let _ = writeln!(
            o,
            "  Rounds:\t{} asked, {} done, {} timed out, {} resends, {} progress responses.",
            self.rounds,
            self.waits_us.len(),
            self.timed_out,
            self.resends,
            self.progress_responses
        );
        let _ = writeln!(
            o,
            "  Background:\t{} puts ({} failed), {} events, {} behind a progress response.",
            self.background_puts, self.background_put_errors, self.events, self.progress_ahead
        );
        let _ = match self.burst_requests {
            0 => writeln!(o, "\nProgress wait (RequestProgress -> every watch at >= R):"),
            n => writeln!(o, "\nProgress answers ({n} RequestProgress per round back to back; each one's time to its answer):"),
        };
        for (name, q) in [("50", 50.0), ("90", 90.0), ("99", 99.0), ("100", 100.0)] {
            let _ = writeln!(o, "  {name}% in {:.4} ms.", percentile(&self.waits_us, q));
        }
        if let Some(f) = &self.failure {
            let _ = writeln!(o, "FAILED: {f}");
        }
        if self.progress_ahead > 0 {
            let _ = writeln!(o, "FAILED: {} events arrived behind a progress response", self.progress_ahead);
        }
        o
    }

    /// One JSON object on one line (sorts the waits).
    pub fn json(&mut self) -> String {
        self.waits_us.sort_unstable();
        let w = &self.waits_us;
        format!(
            "{{\"op\":\"watch-progress\",{},\"rounds\":{},\"completed\":{},\"timed_out\":{},\
             \"resends\":{},\"progress_responses\":{},\"progress_ahead\":{},\"events\":{},\
             \"background_puts\":{},\"background_put_errors\":{},\
             \"progress_p50_ms\":{},\"progress_p90_ms\":{},\"progress_p99_ms\":{},\
             \"progress_max_ms\":{},\"ok\":{},\"error\":{}}}",
            self.setup.json(),
            self.rounds,
            w.len(),
            self.timed_out,
            self.resends,
            self.progress_responses,
            self.progress_ahead,
            self.events,
            self.background_puts,
            self.background_put_errors,
            num(percentile(w, 50.0)),
            num(percentile(w, 90.0)),
            num(percentile(w, 99.0)),
            num(percentile(w, 100.0)),
            self.ok(),
            json_string(self.failure.as_deref().unwrap_or(""), JsonStyle::Plain),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_report_flags_missing_events() {
        let mut d = Delivery {
            setup: Setup {
                watches: 4,
                rss_before_kib: Some(1000),
                rss_after_kib: Some(1001),
                ..Default::default()
            },
            expected: 3,
            received: 2,
            latencies_us: vec![2000, 1000],
            ..Default::default()
        };
        assert_eq!(d.setup.bytes_per_watch(), Some(256.0));
        let j = d.json();
        assert!(j.contains("\"ok\":false") && j.contains("received 2 events, expected 3"), "{j}");
        assert!(j.contains("\"delivery_p50_ms\":1,") && j.contains("\"bytes_per_watch\":256,"), "{j}");
        assert!(d.text().contains("FAILED: received 2 events"));
        d.received = 3;
        assert!(d.problems().is_empty());
    }

    #[test]
    fn progress_report() {
        let mut p = ProgressRounds { rounds: 2, waits_us: vec![3000, 1000], ..Default::default() };
        assert!(p.ok());
        let j = p.json();
        assert!(j.contains("\"progress_p99_ms\":3,") && j.contains("\"rss_before_kib\":null"), "{j}");
        p.timed_out = 1;
        assert!(!p.ok());
    }
}
