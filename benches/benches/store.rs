//! The MVCC engine without the network: apply (put) with a commit per batch, point reads,
//! and range reads over the key index and the sled backend.
//!
//! Run: `cargo bench -p cairn-bench --bench store`

use std::hint::black_box;

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_storage::{Store, StoreConfig};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const KEYS: u64 = 10_000;

fn key(i: u64) -> Vec<u8> {
    format!("/registry/pods/ns{:02}/pod{:06}", i % 50, i).into_bytes()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    let mut index = 0u64;
    let mut apply_batch = |n: u64, base: u64| {
        for i in 0..n {
            index += 1;
            let req = InternalRequest {
                id: index,
                request: Some(Request::Put(PutRequest { key: key(base + i), value: vec![7u8; 256], ..Default::default() })),
                auth: None,
            };
            store.apply(index, &req).expect("apply");
        }
        store.commit().expect("commit");
    };
    for chunk in 0..(KEYS / 1000) {
        apply_batch(1000, chunk * 1000);
    }

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(64));
    let mut base = 0u64;
    g.bench_function("put_batch64_commit", |b| {
        b.iter_batched(
            || {
                base = (base + 64) % KEYS;
                base
            },
            |base| apply_batch(64, base),
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("get_one", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let r = store.range(&RangeRequest { key: key(i), ..Default::default() }).expect("range");
            black_box(r.kvs.len())
        })
    });
    g.bench_function("range_prefix_200_keys", |b| {
        b.iter(|| {
            let r = store
                .range(&RangeRequest {
                    key: b"/registry/pods/ns07/".to_vec(),
                    range_end: b"/registry/pods/ns070".to_vec(),
                    ..Default::default()
                })
                .expect("range");
            black_box(r.kvs.len())
        })
    });
    g.bench_function("count_all", |b| {
        b.iter(|| {
            let r = store
                .range(&RangeRequest { key: b"/registry/".to_vec(), range_end: b"/registry0".to_vec(), count_only: true, ..Default::default() })
                .expect("range");
            black_box(r.count)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
