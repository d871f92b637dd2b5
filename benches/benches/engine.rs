//! The storage engines side by side through the `Backend` trait, no MVCC layer: cairn's
//! page store and sled. Keys as the key bucket holds them (revisions: 8-byte main, `_`,
//! 8-byte sub), 256-byte values, 100,000 keys preloaded.
//!
//! Run: `cargo bench -p cairn-bench --bench engine`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use cairn_storage::backend::{Backend, Bucket, WriteBatch};
use cairn_storage::pagestore::PageStore;
use cairn_storage::sled_backend::SledBackend;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const KEYS: u64 = 100_000;

fn rev_key(main: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&0u64.to_be_bytes());
    k
}

type Opener = fn(&Path) -> Arc<dyn Backend>;

fn open_pagestore(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(PageStore::open(dir).expect("open page store"))
}

fn open_sled(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(SledBackend::open(dir).expect("open sled"))
}

fn bench(c: &mut Criterion) {
    let engines: [(&str, Opener); 2] = [("pagestore", open_pagestore), ("sled", open_sled)];
    for (name, open) in engines {
        let dir = tempfile::tempdir().expect("tempdir");
        let be = open(dir.path());
        for chunk in 0..KEYS / 1000 {
            let mut b = WriteBatch::default();
            for i in chunk * 1000..(chunk + 1) * 1000 {
                b.put(Bucket::Key, rev_key(i), vec![7u8; 256]);
            }
            be.write(b).expect("write");
            be.sync().expect("sync");
        }
        let mut g = c.benchmark_group(format!("engine/{name}"));
        g.sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
        g.throughput(Throughput::Elements(64));
        let mut next = KEYS;
        g.bench_function("put_64_sync", |bch| {
            bch.iter(|| {
                let mut b = WriteBatch::default();
                for _ in 0..64 {
                    b.put(Bucket::Key, rev_key(next), vec![9u8; 256]);
                    next += 1;
                }
                be.write(b).expect("write");
                be.sync().expect("sync");
            })
        });
        g.throughput(Throughput::Elements(1));
        let mut i = 0u64;
        g.bench_function("get_random", |bch| {
            bch.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(be.get(Bucket::Key, &rev_key(i)).expect("get"))
            })
        });
        g.throughput(Throughput::Elements(1000));
        g.bench_function("scan_1000", |bch| {
            bch.iter(|| {
                i = (i + 7919) % KEYS;
                let mut n = 0;
                be.scan(Bucket::Key, &rev_key(i), None, &mut |_, v| {
                    n += v.len();
                    Ok(n < 1000 * 256)
                })
                .expect("scan");
                black_box(n)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
