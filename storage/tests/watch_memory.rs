//! Measures what an idle watch and an idle stream cost in the hub, with an allocator that
//! counts the bytes the measuring thread holds (other threads' allocations, such as the
//! backend's, are not counted). Goal: ≤ 150 bytes per idle single-key watch, key bytes
//! excluded (etcd: ~350 bytes per watch).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cairn_proto::etcdserverpb::WatchCreateRequest;
use cairn_storage::watch::{HubConfig, WatchHub, WatchStream};
use cairn_storage::{Store, StoreConfig};

struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // try_with: the slot may be gone while the thread is being torn down
    let _ = HELD.try_with(|h| h.set(h.get() + n));
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn held() -> isize {
    HELD.with(Cell::get)
}

fn drain(s: &WatchStream) {
    while let Some(b) = s.try_next() {
        if b.is_empty() {
            break;
        }
    }
}

fn per_watch(hub: &WatchHub, n: usize, key: impl Fn(usize) -> (Vec<u8>, Vec<u8>)) -> (f64, usize) {
    let s = hub.open_stream();
    drain(&s);
    let before = held();
    let mut key_bytes = 0;
    for i in 0..n {
        let (key, range_end) = key(i);
        key_bytes += key.len();
        s.create(&WatchCreateRequest { key, range_end, ..Default::default() });
        if i % 1024 == 0 {
            drain(&s);
        }
    }
    drain(&s);
    let bytes = held() - before;
    assert_eq!(hub.stats().watches, n);
    drop(s);
    ((bytes as f64 - key_bytes as f64) / n as f64, key_bytes / n)
}

#[test]
fn idle_watch_and_stream_footprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("store");
    let hub = WatchHub::new(store, HubConfig::default()).expect("hub");
    const N: usize = 100_000;

    let (single, klen) = per_watch(&hub, N, |i| (format!("/registry/pods/ns/pod-{i:06}").into_bytes(), vec![]));
    let (shared_key, _) = per_watch(&hub, N, |_| (b"/registry/leases/one".to_vec(), vec![]));
    let (prefix, _) = per_watch(&hub, N, |i| {
        let p = format!("/registry/t{i:06}/");
        let mut end = p.clone().into_bytes();
        *end.last_mut().expect("non-empty") += 1;
        (p.into_bytes(), end)
    });

    let before = held();
    let streams: Vec<WatchStream> = (0..1000).map(|_| hub.open_stream()).collect();
    let per_stream = (held() - before) as f64 / 1000.0;
    drop(streams);

    eprintln!(
        "bytes per idle watch, key bytes excluded: single key {single:.1} (keys of {klen} bytes), \
         {N} on one key {shared_key:.1}, prefix {prefix:.1}; per idle stream {per_stream:.1}"
    );
    assert!(single <= 150.0, "single-key watch costs {single:.1} bytes");
    assert!(shared_key <= 150.0, "watch sharing a key costs {shared_key:.1} bytes");
    assert!(prefix <= 150.0, "prefix watch costs {prefix:.1} bytes");
}
