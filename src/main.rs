//! The `cairn` binary: an etcd-compatible key-value store. All the work is in `cairn-server`.

use std::process::ExitCode;

/// cairn runs on jemalloc, not glibc's malloc.
///
/// cairn's write path allocates on one thread what another frees, in bursts of a Raft batch:
/// the Raft thread decodes and applies each entry (keys, values, index nodes, responses), the
/// tokio workers free them (answering requests, syncing the page store behind the log).
/// glibc's per-thread cache holds 7 blocks a size class, so the bursts overflowed into the
/// arenas' bins under their locks (glibc's malloc and free were over a third of the Raft
/// thread's samples). jemalloc's thread caches take frees from any thread and flush to their
/// arena in batches. Measured (BENCHMARKS.md, "jemalloc"): the Raft thread's CPU per put
/// 13 → 9.7 µs, put at 64 clients +12%, bulk loads of Txns of 100 puts 3.5× faster, a
/// compaction of 1M revisions 4.9 → 3.0 s. glibc also needed its fast bins turned off, because merging millions of
/// them at once stalled reads during a compaction; jemalloc has no such deferred merge.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cairn_server::main_entry()
}
