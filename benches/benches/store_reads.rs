//! The store's read path at scale (index + sled backend, no network): the reads
//! kube-apiserver sends most — a single-key get, a limit-500 page of a resource prefix
//! (with etcd's total `count`), a keys-only page, and a count-only range of a prefix.
//!
//! Run: `cargo bench -p cairn-bench --bench store_reads` (`CAIRN_BENCH_KEYS=1000000` for
//! 1M keys; default 100k; `CAIRN_BENCH_DIR=path` keeps the store there across runs;
//! `CAIRN_BENCH_QUICK=1` cuts the read benches short). Loading the store is not measured; reopening it (start-up:
//! backend open and the rebuild of the index) is, at the end.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_storage::{Store, StoreConfig};
use criterion::{BenchmarkId, Criterion};

/// Keys are spread over this many namespace prefixes (`/registry/pods/nsNN/`).
const NAMESPACES: u64 = 10;

fn key(i: u64) -> Vec<u8> {
    format!("/registry/pods/ns{:02}/pod{:08}", i % NAMESPACES, i).into_bytes()
}

fn prefix(ns: u64) -> RangeRequest {
    let key = format!("/registry/pods/ns{ns:02}/").into_bytes();
    let mut range_end = key.clone();
    *range_end.last_mut().expect("non-empty") += 1;
    RangeRequest { key, range_end, ..Default::default() }
}

fn main() {
    let n: u64 = std::env::var("CAIRN_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // CAIRN_BENCH_DIR: keep the store there and load it only once (for start-up runs)
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::env::var_os("CAIRN_BENCH_DIR").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let store = Store::open(StoreConfig::new(&dir)).expect("open");
    let t = Instant::now();
    let mut index = 0u64;
    let loaded = store.revision() > 1;
    for chunk in 0..if loaded { 0 } else { n.div_ceil(1000) } {
        for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
            index += 1;
            let put = PutRequest { key: key(i), value: vec![7u8; 256], ..Default::default() };
            store.apply(index, &InternalRequest { id: index, request: Some(Request::Put(put)), auth: None }).expect("apply");
        }
        store.commit().expect("commit");
    }
    println!("store_reads/{n}: loaded in {:?}", t.elapsed());
    let quick = std::env::var_os("CAIRN_BENCH_QUICK").is_some();

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut g = c.benchmark_group(format!("store_reads/{n}"));
    if quick {
        // start-up only (below)
        g.sample_size(10).measurement_time(Duration::from_millis(100));
    }
    let mut i = 0u64;
    g.bench_function(BenchmarkId::from_parameter("get"), |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let r = store.range(&RangeRequest { key: key(i), ..Default::default() }).expect("range");
            black_box(r.kvs.len())
        })
    });
    let per_ns = n / NAMESPACES;
    let mut ns = 0u64;
    g.bench_function(BenchmarkId::from_parameter("page500"), |b| {
        b.iter(|| {
            ns = (ns + 1) % NAMESPACES;
            let r = store.range(&RangeRequest { limit: 500, ..prefix(ns) }).expect("range");
            assert_eq!(r.count as u64, per_ns);
            black_box(r.kvs.len())
        })
    });
    g.bench_function(BenchmarkId::from_parameter("page500_keys_only"), |b| {
        b.iter(|| {
            ns = (ns + 1) % NAMESPACES;
            let r = store.range(&RangeRequest { limit: 500, keys_only: true, ..prefix(ns) }).expect("range");
            black_box(r.kvs.len())
        })
    });
    g.bench_function(BenchmarkId::from_parameter("count_prefix"), |b| {
        b.iter(|| {
            ns = (ns + 1) % NAMESPACES;
            let r = store.range(&RangeRequest { count_only: true, ..prefix(ns) }).expect("range");
            assert_eq!(r.count as u64, per_ns);
            black_box(r.count)
        })
    });
    g.finish();
    c.final_summary();

    // start-up: reopen the store (backend open, index and lease rebuild), three times
    drop(store);
    for _ in 0..3 {
        let t = Instant::now();
        let store = loop {
            // the compactor thread releases the backend shortly after the store is dropped
            match Store::open(StoreConfig::new(&dir)) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        println!("store_reads/{n}: reopen (index rebuild of {} keys) in {:?}", store.index_len(), t.elapsed());
    }
}
