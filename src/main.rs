//! The `cairn` binary: an etcd-compatible key-value store. All the work is in `cairn-server`.

use std::process::ExitCode;

fn main() -> ExitCode {
    larger_thread_caches();
    spread_out_frees();
    cairn_server::main_entry()
}

/// The glibc tunable this process starts with: a per-thread cache (tcache) of 128 freed
/// blocks per size class instead of 7.
const TCACHE_TUNABLE: &str = "glibc.malloc.tcache_count=128";

/// Set (to 1) in the environment of the restarted process: it does not restart again.
const RESTARTED: &str = "CAIRN_MALLOC_TUNED";

/// Starts this program again with [`TCACHE_TUNABLE`] put before the `GLIBC_TUNABLES` it was
/// given, unless those set a tcache count already (an operator's choice) or this is the
/// restarted process ([`RESTARTED`]; glibc rewrites the variable it parsed, so its value
/// cannot tell). glibc reads tunables only when a process starts, and `mallopt` has no
/// tcache setting, so the process replaces itself (`exec` of `/proc/self/exe`: same pid,
/// arguments, open files); if that fails it goes on as it is.
///
/// Why: the write path allocates on one thread and frees on another (the gRPC workers
/// decode requests the Raft thread drops; the Raft thread builds responses and entries the
/// workers drop), in bursts of a Raft batch. With 7 blocks per size class the cache
/// overflows at once, and with fast bins off (below) every other allocation and free
/// takes an arena's lock: glibc malloc was ~17% of cairn's CPU at 64 clients, with futex
/// waits on those locks. With 128, cairn's CPU per put fell ~10% (31.4 vs 34.7–36.2 µs)
/// and puts/s rose ~6% (BENCHMARKS.md "Write coalescing"). Cost: a thread can keep up to
/// 128 freed blocks of each small size (at most a few MiB a thread, handed back when the
/// thread exits); no merge pass, so none of the stalls fast bins caused.
fn larger_thread_caches() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let current = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
        if std::env::var_os(RESTARTED).is_some() || current.to_string_lossy().contains("glibc.malloc.tcache_count") {
            return;
        }
        let mut tunables = std::ffi::OsString::from(TCACHE_TUNABLE);
        if !current.is_empty() {
            tunables.push(":");
            tunables.push(current);
        }
        let mut args = std::env::args_os();
        let Some(arg0) = args.next() else { return };
        // returns only if the exec failed
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .env(RESTARTED, "1")
            .exec();
        let _goes_on_without = err;
    }
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
/// free merges its block at once, a bounded cost; the per-thread cache (tcache, larger
/// than glibc's default here: [`larger_thread_caches`]) still serves the most frequent
/// small sizes. Other C libraries and allocators: nothing to do.
fn spread_out_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists; mallopt takes
    // no pointers. A refusal (0) leaves the default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}
