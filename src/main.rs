//! The `cairn` binary: an etcd-compatible key-value store. All the work is in `cairn-server`.

use std::process::ExitCode;

fn main() -> ExitCode {
    spread_out_frees();
    cairn_server::main_entry()
}

/// Turns off glibc malloc's "fast bins" for this process.
///
/// With them, freed small blocks are parked unmerged and merged all at once
/// (`malloc_consolidate`) at the next large allocation in the same arena, holding that
/// arena's lock. A compaction of 1M revisions frees millions of small blocks (replaced key
/// histories, index nodes, decoded pages): the merge then took 0.4–1 s, under the page
/// store's `state` lock when the compactor's next delete batch or commit triggered it, or
/// under the arena lock a reader's thread was waiting for (`perf` with DWARF stacks,
/// BENCHMARKS.md "Range p99 during a compaction of 1M revisions"). Without fast bins each
/// free merges its block at once, a bounded cost; the per-thread cache (tcache) still
/// serves the most frequent small sizes. Other C libraries and allocators: nothing to do.
fn spread_out_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists; mallopt takes
    // no pointers. A refusal (0) leaves the default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}
