//! The key index alone (no backend): single-key get, a limit-500 page of a prefix with its
//! total count, and the count of a prefix, on an idle index and while a writer and a
//! compaction run beside the readers. The same file measured the old `RwLock<BTreeMap>`
//! index and the copy-on-write tree that replaced it (numbers in BENCHMARKS.md).
//!
//! Criterion gives throughput (mean time per read); the tail is printed after it: p50, p99
//! and max of each read kind over `LAT_SAMPLES` calls, idle and under load.
//!
//! Run: `cargo bench -p cairn-bench --bench index` (`CAIRN_BENCH_KEYS=1000000` for 1M
//! keys; default 100k; `CAIRN_BENCH_QUICK=1`: only the build and the compaction, timed).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cairn_storage::index::{KeySpan, TreeIndex};
use cairn_storage::Revision;
use criterion::{BenchmarkId, Criterion};

/// Samples per read kind for the latency percentiles.
const LAT_SAMPLES: usize = 2000;
/// The keys are spread over this many namespace prefixes (`/registry/pods/nsNN/`).
const NAMESPACES: u64 = 10;

fn key(i: u64) -> Vec<u8> {
    format!("/registry/pods/ns{:02}/pod{:08}", i % NAMESPACES, i).into_bytes()
}

fn keys_from_env() -> u64 {
    std::env::var("CAIRN_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// An index of `n` keys, each written twice (so a compaction has a revision per key to
/// drop); returns it with the newest revision.
fn build(n: u64) -> (Arc<TreeIndex>, i64) {
    let ix = Arc::new(TreeIndex::new());
    let mut rev = 1;
    for _round in 0..2 {
        for i in 0..n {
            rev += 1;
            ix.put(&key(i), Revision::new(rev, 0)).expect("put");
        }
    }
    ix.publish();
    (ix, rev)
}

/// A writer (rate-limited puts over the whole key space) and a compactor (compacting at
/// the committed revision again and again) running until `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<u64>>,
}

impl Load {
    fn start(ix: Arc<TreeIndex>, n: u64, committed: Arc<AtomicI64>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (ix, stop, committed) = (ix.clone(), stop.clone(), committed.clone());
            threads.push(thread::spawn(move || {
                let mut i = 0u64;
                let mut puts = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // 100 puts a millisecond at most (a busy apply thread, not a spin loop),
                    // committed in groups of 10
                    let mut rev = committed.load(Ordering::Relaxed);
                    for p in 0..100 {
                        rev += 1;
                        ix.put(&key(i % n), Revision::new(rev, 0)).expect("put");
                        if p % 10 == 9 {
                            ix.publish();
                            committed.store(rev, Ordering::Release);
                        }
                        i = i.wrapping_add(7919);
                        puts += 1;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                puts
            }));
        }
        {
            let (ix, stop, committed) = (ix.clone(), stop.clone(), committed.clone());
            threads.push(thread::spawn(move || {
                let mut passes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    black_box(ix.compact(committed.load(Ordering::Acquire)).len());
                    passes += 1;
                }
                passes
            }));
        }
        Load { stop, threads }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut r = self.threads.into_iter().map(|t| t.join().expect("load thread"));
        (r.next().unwrap_or(0), r.next().unwrap_or(0))
    }
}

fn ns_span(ns: u64) -> (Vec<u8>, Vec<u8>) {
    let p = format!("/registry/pods/ns{ns:02}/").into_bytes();
    let mut end = p.clone();
    *end.last_mut().expect("non-empty") += 1;
    (p, end)
}

/// The three reads, each returning something so nothing is optimized away.
fn read(ix: &TreeIndex, kind: &str, i: u64, n: u64, at: i64) -> i64 {
    match kind {
        "get" => ix.get(&key(i % n), at).map_or(0, |k| k.version),
        "page500" => {
            let (s, e) = ns_span(i % NAMESPACES);
            let (hits, total) = ix.range(&KeySpan::new(&s, &e), at, 500);
            hits.len() as i64 + total
        }
        "count" => {
            let (s, e) = ns_span(i % NAMESPACES);
            ix.count(&KeySpan::new(&s, &e), at)
        }
        _ => unreachable!("unknown read kind {kind}"),
    }
}

const KINDS: [&str; 3] = ["get", "page500", "count"];

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (p(0.5), p(0.99), *v.last().expect("samples"))
}

fn latencies(ix: &TreeIndex, n: u64, committed: &AtomicI64, label: &str) {
    for kind in KINDS {
        let samples = if kind == "get" { LAT_SAMPLES * 10 } else { LAT_SAMPLES };
        let mut v = Vec::with_capacity(samples);
        for s in 0..samples as u64 {
            let at = committed.load(Ordering::Acquire);
            let t = Instant::now();
            black_box(read(ix, kind, s.wrapping_mul(7919), n, at));
            v.push(t.elapsed());
        }
        let (p50, p99, max) = percentiles(v);
        println!("index/{n}/{label}/{kind}: p50 {p50:?} p99 {p99:?} max {max:?}");
    }
}

/// The apply thread's cost per put: scattered keys, the index published every 16 puts (a
/// Ready batch under 64 clients), so most puts copy the path to their leaf. Best of 5.
fn put_cost(ix: &TreeIndex, n: u64, mut rev: i64) -> Duration {
    const PUTS: u64 = 200_000;
    let mut best = Duration::MAX;
    let mut i = 0u64;
    for _ in 0..5 {
        let t = Instant::now();
        for p in 0..PUTS {
            rev += 1;
            i = i.wrapping_add(7919);
            black_box(ix.put(&key(i % n), Revision::new(rev, 0)).expect("put"));
            if p % 16 == 15 {
                ix.publish();
            }
        }
        best = best.min(t.elapsed() / PUTS as u32);
    }
    best
}

fn main() {
    let n = keys_from_env();
    let t = Instant::now();
    let (ix, rev) = build(n);
    println!("index/{n}: built {} keys ({} revisions) in {:?}", ix.len(), 2 * n, t.elapsed());
    {
        let (ix, rev) = build(n);
        println!("index/{n}: put, published every 16 puts: {:?} per put", put_cost(&ix, n, rev));
    }
    let committed = Arc::new(AtomicI64::new(rev));
    if std::env::var_os("CAIRN_BENCH_QUICK").is_some() {
        // build and compaction times only (for profiling)
        let t = Instant::now();
        let kept = ix.compact(rev).len();
        println!("index/{n}: compaction of {n} keys alone: {:?} ({kept} revisions kept)", t.elapsed());
        return;
    }

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (label, loaded) in [("idle", false), ("writer+compactor", true)] {
        let load = loaded.then(|| Load::start(ix.clone(), n, committed.clone()));
        let mut g = c.benchmark_group(format!("index/{n}/{label}"));
        for kind in KINDS {
            let mut i = 0u64;
            g.bench_function(BenchmarkId::from_parameter(kind), |b| {
                b.iter(|| {
                    i = i.wrapping_add(7919);
                    read(&ix, kind, i, n, committed.load(Ordering::Acquire))
                })
            });
        }
        g.finish();
        latencies(&ix, n, &committed, label);
        if let Some(load) = load {
            let (puts, passes) = load.finish();
            println!("index/{n}/{label}: writer {puts} puts, compactor {passes} full passes");
        }
    }
    // one full compaction of every key's older revision, alone
    let (ix, rev) = build(n);
    let t = Instant::now();
    let kept = ix.compact(rev).len();
    println!("index/{n}: compaction of {n} keys alone: {:?} ({kept} revisions kept)", t.elapsed());
    c.final_summary();
}
