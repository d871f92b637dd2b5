//! Lease expiry cost at n = 10^3 … 10^6 leases: grant (insert), renew (move to a later
//! deadline) and the expiry scan (pop the earliest expired lease). All three must grow as
//! O(log n). Also reports the memory one queued lease costs.
//!
//! Run: `cargo bench -p cairn-bench --bench lease_queue`

use std::hint::black_box;

use cairn_storage::lease_queue::LeaseQueue;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

const SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// A queue of n leases with deadlines spread over [n, 2n) (pseudo-random, deterministic).
fn filled(n: u64) -> LeaseQueue {
    let mut q = LeaseQueue::new();
    for i in 0..n {
        q.upsert(i as i64 + 1, n + (i.wrapping_mul(2_654_435_761) % n));
    }
    q
}

fn bench(c: &mut Criterion) {
    for &n in &SIZES {
        let before = counting_alloc::live();
        let q = filled(n);
        let bytes = counting_alloc::live() - before;
        println!("lease_queue: n={n} live bytes={bytes} bytes/lease={:.1}", bytes as f64 / n as f64);
        drop(q);
    }
    let mut g = c.benchmark_group("lease_queue");
    for &n in &SIZES {
        let mut q = filled(n);
        let mut next_id = n as i64 + 1;
        // grant: one insert into a queue of n (then removed so n stays constant)
        g.bench_with_input(BenchmarkId::new("grant", n), &n, |b, &n| {
            b.iter(|| {
                q.upsert(next_id, n + 7);
                q.remove(black_box(next_id));
                next_id += 1;
            })
        });
        // renew: move an existing lease to a later deadline
        let mut i = 0u64;
        let mut t = 2 * n;
        g.bench_with_input(BenchmarkId::new("renew", n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % n;
                t += 1;
                q.upsert(black_box(i as i64 + 1), t);
            })
        });
        // expiry scan: pop the earliest expired lease, re-queue it far in the future
        let mut now = 0u64;
        g.bench_with_input(BenchmarkId::new("expire", n), &n, |b, _| {
            b.iter(|| {
                let (d, _) = q.peek().expect("non-empty");
                now = now.max(d);
                let ids = q.pop_expired(now, 1);
                for id in ids {
                    q.upsert(id, now + 10 * n);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
