//! Heap bytes per key of the key index, counted allocation by allocation: keys written
//! once (live, one revision) and keys written twice (two revisions, as after an update
//! before compaction).
//!
//! Run: `cargo bench -p cairn-bench --bench index_memory` (`CAIRN_BENCH_KEYS=1000000` for
//! 1M keys; default 100k). Only the index's own structures are counted, not the backend.


use cairn_storage::index::TreeIndex;
use cairn_storage::Revision;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

fn key(i: u64) -> Vec<u8> {
    format!("/registry/pods/ns{:02}/pod{:08}", i % 10, i).into_bytes()
}

fn main() {
    let n: u64 = std::env::var("CAIRN_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    for writes in [1u64, 2] {
        let before = counting_alloc::live();
        let ix = TreeIndex::new();
        let mut rev = 1;
        for _ in 0..writes {
            for i in 0..n {
                rev += 1;
                ix.put(&key(i), Revision::new(rev, 0)).expect("put");
            }
        }
        let bytes = counting_alloc::live() - before;
        println!("index_memory/{n}: keys written {writes}× ({}-byte keys): {} bytes/key", key(0).len(), bytes as u64 / n);
        drop(ix);
    }
}
