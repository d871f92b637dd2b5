//! The `process_*` metrics client_golang's process collector reports (Linux), read from
//! `/proc/self` when scraped: CPU time, resident and virtual memory, open and maximum file
//! descriptors, start time. A value that cannot be read is left out (never a made-up 0).

use std::fmt::Write as _;

use super::registry::{go_float, Collect};

/// Clock ticks per second of `/proc`'s times (Linux's USER_HZ, 100 on every architecture
/// Linux exports to user space; client_golang's procfs assumes the same).
const USER_HZ: f64 = 100.0;

/// The process collector (see the module docs).
pub struct ProcessCollector;

struct Stat {
    cpu_seconds: f64,
    start_ticks: f64,
    vsize: f64,
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // "pid (comm) state ...": comm may hold spaces and parentheses
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5)
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    Some(Stat { cpu_seconds: (field(14)? + field(15)?) / USER_HZ, start_ticks: field(22)?, vsize: field(23)? })
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// The process's resident set (`VmRSS`) in bytes.
pub(crate) fn resident_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024.0)
}

fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

/// The soft limit of `/proc/self/limits`' line `name`; "unlimited" is u64::MAX as Go
/// reports it.
fn limit(name: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX as f64),
        v => v.parse().ok(),
    }
}

impl Collect for ProcessCollector {
    fn name(&self) -> &str {
        "process_cpu_seconds_total"
    }

    fn render(&self, out: &mut String) {
        let stat = read_stat();
        let families: [(&str, &str, &str, Option<f64>); 7] = [
            ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", stat.as_ref().map(|s| s.cpu_seconds)),
            ("process_max_fds", "gauge", "Maximum number of open file descriptors.", limit("Max open files")),
            ("process_open_fds", "gauge", "Number of open file descriptors.", open_fds()),
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", resident_bytes()),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                stat.as_ref().and_then(|s| Some(boot_time()? + s.start_ticks / USER_HZ)),
            ),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", stat.as_ref().map(|s| s.vsize)),
            (
                "process_virtual_memory_max_bytes",
                "gauge",
                "Maximum amount of virtual memory available in bytes.",
                limit("Max address space"),
            ),
        ];
        for (name, kind, help, value) in families {
            if let Some(v) = value {
                let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n", go_float(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let mut out = String::new();
        ProcessCollector.render(&mut out);
        for name in ["process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_resident_memory_bytes", "process_start_time_seconds", "process_virtual_memory_bytes"] {
            let line = out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
            let v: f64 = line[name.len() + 1..].parse().unwrap();
            assert!(v >= 0.0, "{line}");
        }
        let rss: f64 = out.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")).unwrap().parse().unwrap();
        assert!(rss > 1e6, "{rss}");
        let start: f64 = out.lines().find_map(|l| l.strip_prefix("process_start_time_seconds ")).unwrap().parse().unwrap();
        assert!(start > 1.5e9, "{start}");
    }
}
