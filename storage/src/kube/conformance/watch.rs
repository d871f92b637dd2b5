//! Conformance cases of watches, progress, and tenant isolation.

use std::time::Duration;

use tokio::time::Instant;

use super::{assert_err, key, next_change, Compactor, EVENT_TIMEOUT};
use crate::kube::error::StorageError;
use crate::kube::interface::KubeStorage;
use crate::kube::tenant::Tenant;
use crate::kube::types::{
    GetOptions, ListOptions, Object, Preconditions, UpdateOptions, WatchEvent, WatchOptions, Watcher,
};

fn from(resource_version: i64) -> WatchOptions {
    WatchOptions { resource_version, recursive: true, progress_notify: false }
}

fn obj(k: &[u8], v: &str, rv: i64) -> Object {
    Object { key: k.to_vec(), value: v.as_bytes().to_vec(), resource_version: rv }
}

async fn put<S: KubeStorage>(s: &S, k: &[u8], v: &str) -> i64 {
    let v = v.as_bytes().to_vec();
    let opts = UpdateOptions { ignore_not_found: true, ..Default::default() };
    s.guaranteed_update(k, opts, move |_| Ok(Some(v.clone()))).await.expect("put").resource_version
}

#[track_caller]
fn expect_added(ev: WatchEvent, want: Object) {
    match ev {
        WatchEvent::Added(o) => assert_eq!(o, want),
        other => panic!("expected Added({want:?}), got {other:?}"),
    }
}

#[track_caller]
fn expect_modified(ev: WatchEvent, want: Object) {
    match ev {
        WatchEvent::Modified(o) => assert_eq!(o, want),
        other => panic!("expected Modified({want:?}), got {other:?}"),
    }
}

#[track_caller]
fn expect_deleted(ev: WatchEvent, want: Object) {
    match ev {
        WatchEvent::Deleted(o) => assert_eq!(o, want),
        other => panic!("expected Deleted({want:?}), got {other:?}"),
    }
}

/// Added / Modified / Deleted, prefix and single-key watches, keys outside the prefix.
pub async fn watch_events<S: KubeStorage>(s: &S, p: &[u8]) {
    let (a, b, z) = (key(p, "a"), key(p, "b"), key(p, "z"));
    let r0 = s.current_resource_version().await.expect("current rv");
    let mut all = s.watch(p, from(r0)).await.expect("watch prefix");
    let single = WatchOptions { recursive: false, ..from(r0) };
    let mut one = s.watch(&a, single).await.expect("watch key");

    let ra1 = s.create(&a, b"v1".to_vec(), None).await.expect("create a");
    let rb = s.create(&b, b"b".to_vec(), None).await.expect("create b");
    let ra2 = put(s, &a, "v2").await;
    let rdel = s.delete(&a, Preconditions::default()).await.expect("delete a").resource_version;
    let mut outside = p[..p.len() - 1].to_vec();
    outside.push(b'0');
    put(s, &outside, "x").await;
    let rz = s.create(&z, b"z".to_vec(), None).await.expect("create z");

    expect_added(next_change(&mut all).await, obj(&a, "v1", ra1));
    expect_added(next_change(&mut all).await, obj(&b, "b", rb));
    expect_modified(next_change(&mut all).await, obj(&a, "v2", ra2));
    expect_deleted(next_change(&mut all).await, obj(&a, "v2", rdel));
    expect_added(next_change(&mut all).await, obj(&z, "z", rz));

    expect_added(next_change(&mut one).await, obj(&a, "v1", ra1));
    expect_modified(next_change(&mut one).await, obj(&a, "v2", ra2));
    expect_deleted(next_change(&mut one).await, obj(&a, "v2", rdel));
    let recreated = s.create(&a, b"v3".to_vec(), None).await.expect("create a again");
    expect_added(next_change(&mut one).await, obj(&a, "v3", recreated));
}

/// Resource version 0: the current state as Added events, then the changes.
pub async fn watch_initial_state<S: KubeStorage>(s: &S, p: &[u8]) {
    let (a, b, c) = (key(p, "a"), key(p, "b"), key(p, "c"));
    let rb = s.create(&b, b"b".to_vec(), None).await.expect("create b");
    let ra = s.create(&a, b"a".to_vec(), None).await.expect("create a");
    let mut w = s.watch(p, from(0)).await.expect("watch");
    expect_added(next_change(&mut w).await, obj(&a, "a", ra));
    expect_added(next_change(&mut w).await, obj(&b, "b", rb));
    let rb2 = put(s, &b, "b2").await;
    let rc = s.create(&c, b"c".to_vec(), None).await.expect("create c");
    expect_modified(next_change(&mut w).await, obj(&b, "b2", rb2));
    expect_added(next_change(&mut w).await, obj(&c, "c", rc));
}

/// A watch from an older resource version replays the history after it.
pub async fn watch_from_history<S: KubeStorage>(s: &S, p: &[u8]) {
    let a = key(p, "a");
    let r0 = s.current_resource_version().await.expect("current rv");
    let r1 = s.create(&a, b"1".to_vec(), None).await.expect("create");
    let r2 = put(s, &a, "2").await;
    let r3 = s.delete(&a, Preconditions::default()).await.expect("delete").resource_version;
    let mut w = s.watch(p, from(r0)).await.expect("watch from r0");
    expect_added(next_change(&mut w).await, obj(&a, "1", r1));
    expect_modified(next_change(&mut w).await, obj(&a, "2", r2));
    expect_deleted(next_change(&mut w).await, obj(&a, "2", r3));
    let mut mid = s.watch(p, from(r2)).await.expect("watch from r2");
    expect_deleted(next_change(&mut mid).await, obj(&a, "2", r3));
}

/// A watch from a compacted resource version ends with `Expired`.
pub async fn watch_compacted<S: KubeStorage + Compactor>(s: &S, p: &[u8]) {
    let r0 = s.current_resource_version().await.expect("current rv");
    s.create(&key(p, "a"), b"a".to_vec(), None).await.expect("create");
    let r2 = s.create(&key(p, "b"), b"b".to_vec(), None).await.expect("create");
    s.compact(r2).await.expect("compact");
    let mut w = s.watch(p, from(r0)).await.expect("watch");
    match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
        Ok(Some(WatchEvent::Error(StorageError::Expired { requested, .. }))) => assert_eq!(requested, r0),
        other => panic!("expected Error(Expired), got {other:?}"),
    }
    assert!(tokio::time::timeout(EVENT_TIMEOUT, w.next()).await.expect("end").is_none());
    // At the compaction revision itself the history is still there.
    let mut ok = s.watch(p, from(r2)).await.expect("watch at the compaction revision");
    let r3 = s.create(&key(p, "c"), b"c".to_vec(), None).await.expect("create");
    expect_added(next_change(&mut ok).await, obj(&key(p, "c"), "c", r3));
}

/// Asks for progress (again every 100 ms, as kube-apiserver) until `w` reports a bookmark at
/// `target` or later. Panics on a change event or after [`EVENT_TIMEOUT`]. Returns the
/// bookmark's revision.
pub async fn wait_for_progress<S: KubeStorage>(s: &S, w: &mut Watcher, target: i64) -> i64 {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        s.request_watch_progress().await.expect("request progress");
        let tick = Instant::now() + Duration::from_millis(100);
        while let Ok(ev) = tokio::time::timeout_at(tick.min(deadline), w.next()).await {
            match ev {
                Some(WatchEvent::Bookmark(rv)) if rv >= target => return rv,
                Some(WatchEvent::Bookmark(_)) => {}
                other => panic!("expected a bookmark, got {other:?}"),
            }
        }
        assert!(Instant::now() < deadline, "no bookmark at {target} or later within {EVENT_TIMEOUT:?}");
    }
}

/// `request_watch_progress`: every watch gets a bookmark at least at the store's revision,
/// after the events it covers.
pub async fn watch_progress<S: KubeStorage>(s: &S, p: &[u8]) {
    let r0 = s.current_resource_version().await.expect("current rv");
    let opts = WatchOptions { progress_notify: true, ..from(r0) };
    let mut w = s.watch(&key(p, "own/"), opts).await.expect("watch");
    let ra = s.create(&key(p, "own/a"), b"a".to_vec(), None).await.expect("create");
    expect_added(next_change(&mut w).await, obj(&key(p, "own/a"), "a", ra));
    // A write outside the watched prefix moves the store's revision only.
    let elsewhere = put(s, &key(p, "elsewhere"), "x").await;
    let rv = wait_for_progress(s, &mut w, elsewhere).await;
    assert!(rv >= elsewhere);

    // Many watches on the shared stream(s): one request reaches all of them.
    const WATCHES: usize = 50;
    let r1 = s.current_resource_version().await.expect("current rv");
    let prefixes: Vec<Vec<u8>> = (0..WATCHES).map(|i| key(p, &format!("many/{i}/"))).collect();
    let creates = prefixes.iter().map(|k| s.watch(k, from(r1)));
    let mut ws: Vec<Watcher> =
        futures::future::join_all(creates).await.into_iter().map(|w| w.expect("watch")).collect();
    let target = put(s, &key(p, "elsewhere"), "y").await;
    for w in &mut ws {
        wait_for_progress(s, w, target).await;
    }
}

/// Watches created concurrently are confirmed together; dropped watches are cancelled and the
/// stream keeps working.
pub async fn watch_cancel_and_pipelined_creates<S: KubeStorage>(s: &S, p: &[u8]) {
    const WATCHES: usize = 500;
    let r0 = s.current_resource_version().await.expect("current rv");
    let prefixes: Vec<Vec<u8>> = (0..WATCHES).map(|i| key(p, &format!("{i}/"))).collect();
    let creates = prefixes.iter().map(|k| s.watch(k, from(r0)));
    let started = Instant::now();
    let ws = tokio::time::timeout(EVENT_TIMEOUT, futures::future::join_all(creates)).await.expect("creates");
    let took = started.elapsed();
    let mut ws: Vec<Watcher> = ws.into_iter().map(|w| w.expect("watch")).collect();
    eprintln!("  {WATCHES} concurrent watch creates took {took:?}");
    let keep = ws.pop().expect("one watch");
    drop(ws);
    for i in 0..WATCHES {
        s.create(&key(p, &format!("{i}/k")), b"v".to_vec(), None).await.expect("create");
    }
    let mut keep = keep;
    let last = key(p, &format!("{}/k", WATCHES - 1));
    match next_change(&mut keep).await {
        WatchEvent::Added(o) => assert_eq!(o.key, last),
        other => panic!("expected Added, got {other:?}"),
    }
    let mut fresh = s.watch(&key(p, "0/"), from(0)).await.expect("watch after cancels");
    match next_change(&mut fresh).await {
        WatchEvent::Added(o) => assert_eq!(o.key, key(p, "0/k")),
        other => panic!("expected Added, got {other:?}"),
    }
}

/// Tenants sharing one storage see only their own keys, through every method.
pub async fn tenant_isolation<S: KubeStorage + Clone>(s: &S, p: &[u8]) {
    assert!(matches!(Tenant::new(s.clone(), key(p, "1")), Err(StorageError::InvalidTenantPrefix(_))));
    let t1 = Tenant::new(s.clone(), key(p, "1/")).expect("tenant 1");
    let t10 = Tenant::new(s.clone(), key(p, "10/")).expect("tenant 10");
    let r0 = s.current_resource_version().await.expect("current rv");
    let mut w1 = t1.watch(b"", from(r0)).await.expect("watch t1");
    let mut w10 = t10.watch(b"pods/", from(r0)).await.expect("watch t10");

    let a1 = t1.create(b"pods/a", b"1a".to_vec(), None).await.expect("create");
    let a10 = t10.create(b"pods/a", b"10a".to_vec(), None).await.expect("create");
    let b1 = t1.create(b"pods/b", b"1b".to_vec(), None).await.expect("create");
    let b10 = t10.create(b"pods/b", b"10b".to_vec(), None).await.expect("create");
    let c1 = t1.create(b"pods/c", b"1c".to_vec(), None).await.expect("create");
    let s1 = t1.create(b"secrets/s", b"1s".to_vec(), None).await.expect("create");

    let got = t10.get(b"pods/a", GetOptions::default()).await.expect("get");
    assert_eq!(got, Some(obj(b"pods/a", "10a", a10)));
    match t10.get(b"pods/c", GetOptions::default()).await {
        Err(StorageError::NotFound { key }) => assert_eq!(key, b"pods/c"),
        other => panic!("expected NotFound(pods/c), got {other:?}"),
    }
    assert_err!(t10.delete(b"pods/c", Preconditions::default()).await, StorageError::NotFound { .. });
    let r = t10.guaranteed_update(b"pods/c", UpdateOptions::default(), |_| Ok(Some(b"stolen".to_vec()))).await;
    assert_err!(r, StorageError::NotFound { .. });

    let list1 = t1.get_list(b"", ListOptions::default()).await.expect("list t1");
    let want1 =
        vec![obj(b"pods/a", "1a", a1), obj(b"pods/b", "1b", b1), obj(b"pods/c", "1c", c1), obj(b"secrets/s", "1s", s1)];
    assert_eq!(list1.items, want1);
    let list10 = t10.get_list(b"pods/", ListOptions::default()).await.expect("list t10");
    assert_eq!(list10.items, vec![obj(b"pods/a", "10a", a10), obj(b"pods/b", "10b", b10)]);
    assert_eq!((t1.count(b"pods/").await.expect("count"), t10.count(b"").await.expect("count")), (3, 2));

    // Tenant 1's continue token used by tenant 10 lists tenant 10's keys.
    let page = ListOptions { limit: 1, ..Default::default() };
    let token = t1.get_list(b"pods/", page).await.expect("page").continue_token;
    let next = ListOptions { limit: 10, continue_token: token, ..Default::default() };
    let other = t10.get_list(b"pods/", next).await.expect("page with a foreign token");
    assert_eq!(other.items.iter().map(|o| o.key.clone()).collect::<Vec<_>>(), vec![b"pods/b".to_vec()]);

    for want in want1 {
        expect_added(next_change(&mut w1).await, want);
    }
    expect_added(next_change(&mut w10).await, obj(b"pods/a", "10a", a10));
    expect_added(next_change(&mut w10).await, obj(b"pods/b", "10b", b10));
    // A marker write per tenant proves nothing else was queued before it.
    let m1 = t1.create(b"zz", b"m".to_vec(), None).await.expect("marker");
    let m10 = t10.create(b"pods/zz", b"m".to_vec(), None).await.expect("marker");
    expect_added(next_change(&mut w1).await, obj(b"zz", "m", m1));
    expect_added(next_change(&mut w10).await, obj(b"pods/zz", "m", m10));
}
