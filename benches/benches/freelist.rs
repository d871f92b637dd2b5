//! The page store's freelist: the segregated one (free spans by length, O(1) merges)
//! against the linear reference (a sorted vector, bbolt's array freelist), on a fragmented
//! file: `n` free spans of 1–8 pages, each between pages in use. One iteration allocates
//! a span of 1–8 pages (best fit) and frees it again, merging it back: a commit's
//! allocation and the later release of what it freed.
//!
//! Run: `cargo bench -p cairn-bench --bench freelist`

use std::hint::black_box;
use std::time::Duration;

use cairn_storage::pagestore::freelist::{FreeSpans, HashSpans, LinearSpans};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *s >> 33
}

fn fragmented<F: FreeSpans + Default>(n: u64) -> F {
    let mut f = F::default();
    let mut rng = 42;
    for i in 0..n {
        f.free(2 + i * 16, 1 + next(&mut rng) % 8);
    }
    f
}

fn run<F: FreeSpans + Default>(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, n: u64) {
    let mut f: F = fragmented(n);
    let mut rng = 7;
    c.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        b.iter(|| {
            let len = 1 + next(&mut rng) % 8;
            let start = f.allocate(len).expect("a span of up to 8 pages is free");
            f.free(start, len);
            black_box(start)
        })
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("freelist_alloc_free");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in [10_000u64, 100_000, 1_000_000] {
        run::<HashSpans>(&mut g, "segregated", n);
        run::<LinearSpans>(&mut g, "linear", n);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
