//! Conformance cases of the read and write methods.

use super::{assert_err, key, next_change, Compactor, EVENT_TIMEOUT};
use crate::kube::error::{OptionsError, StorageError, UpdateError};
use crate::kube::interface::KubeStorage;
use crate::kube::types::{
    GetOptions, ListOptions, Object, Preconditions, RvMatch, UpdateOptions, WatchEvent, WatchOptions,
};

fn latest() -> GetOptions {
    GetOptions::default()
}

fn at(resource_version: i64, rv_match: RvMatch) -> GetOptions {
    GetOptions { resource_version, rv_match, ignore_not_found: false }
}

/// Sets the value, whatever it was.
async fn set<S: KubeStorage>(s: &S, k: &[u8], value: &str) -> Object {
    let v = value.as_bytes().to_vec();
    let opts = UpdateOptions { ignore_not_found: true, ..Default::default() };
    s.guaranteed_update(k, opts, move |_| Ok(Some(v.clone()))).await.expect("set")
}

/// `create`, `get` latest, `AlreadyExists`, `NotFound`, `ignore_not_found`.
pub async fn create_get<S: KubeStorage>(s: &S, p: &[u8]) {
    let k = key(p, "a");
    let rv = s.create(&k, b"v1".to_vec(), None).await.expect("create");
    assert!(rv > 0);
    let got = s.get(&k, latest()).await.expect("get");
    assert_eq!(got, Some(Object { key: k.clone(), value: b"v1".to_vec(), resource_version: rv }));
    assert_err!(s.create(&k, b"v2".to_vec(), None).await, StorageError::AlreadyExists { .. });
    assert_eq!(s.get(&k, latest()).await.expect("get").map(|o| o.value), Some(b"v1".to_vec()));
    let missing = key(p, "missing");
    match s.get(&missing, latest()).await {
        Err(StorageError::NotFound { key }) => assert_eq!(key, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let opts = GetOptions { ignore_not_found: true, ..Default::default() };
    assert_eq!(s.get(&missing, opts).await.expect("get"), None);
    assert!(s.current_resource_version().await.expect("current rv") >= rv);
    // The empty prefix is every key (etcd needs it spelled `["\0", "\0")`).
    assert!(s.count(b"").await.expect("count everything") >= 1);
    let one = ListOptions { limit: 1, ..Default::default() };
    assert_eq!(s.get_list(b"", one).await.expect("list everything").items.len(), 1);
}

/// `get` with NotOlderThan, Exact, future and compacted resource versions.
pub async fn get_resource_versions<S: KubeStorage + Compactor>(s: &S, p: &[u8]) {
    let k = key(p, "a");
    let rv1 = s.create(&k, b"v1".to_vec(), None).await.expect("create");
    let rv2 = set(s, &k, "v2").await.resource_version;
    assert!(rv2 > rv1);
    let cur = s.current_resource_version().await.expect("current rv");
    assert!(cur >= rv2);
    let value = |o: Option<Object>| o.map(|o| (o.value, o.resource_version));

    for min in [rv1, rv2, cur] {
        let got = s.get(&k, at(min, RvMatch::NotOlderThan)).await.expect("get not older than");
        assert_eq!(value(got), Some((b"v2".to_vec(), rv2)));
    }
    assert_err!(
        s.get(&k, at(cur + 1000, RvMatch::NotOlderThan)).await,
        StorageError::TooLargeResourceVersion { requested: _, current: Some(_) }
    );
    assert_eq!(value(s.get(&k, at(rv1, RvMatch::Exact)).await.expect("exact rv1")), Some((b"v1".to_vec(), rv1)));
    assert_eq!(value(s.get(&k, at(rv2, RvMatch::Exact)).await.expect("exact rv2")), Some((b"v2".to_vec(), rv2)));
    assert_err!(s.get(&k, at(rv1 - 1, RvMatch::Exact)).await, StorageError::NotFound { .. });
    assert_err!(s.get(&k, at(cur + 1000, RvMatch::Exact)).await, StorageError::TooLargeResourceVersion { .. });
    assert_err!(
        s.get(&k, at(0, RvMatch::Exact)).await,
        StorageError::InvalidOptions(OptionsError::ExactWithoutResourceVersion)
    );

    s.compact(rv2).await.expect("compact");
    match s.get(&k, at(rv1, RvMatch::Exact)).await {
        Err(StorageError::Expired { requested, .. }) => assert_eq!(requested, rv1),
        other => panic!("expected Expired, got {other:?}"),
    }
    assert_eq!(value(s.get(&k, at(rv2, RvMatch::Exact)).await.expect("exact rv2")), Some((b"v2".to_vec(), rv2)));
}

/// Paged lists: limits, remaining counts, continue tokens pinned to the first page's
/// revision, Exact lists, option errors, expired tokens.
pub async fn list_paging<S: KubeStorage + Compactor>(s: &S, p: &[u8]) {
    // Neighbours just outside the range: the prefix without its '/', and its range end.
    let outside_before = p[..p.len() - 1].to_vec();
    let mut outside_after = outside_before.clone();
    outside_after.push(b'0');
    s.create(&outside_before, b"x".to_vec(), None).await.expect("create");
    s.create(&outside_after, b"x".to_vec(), None).await.expect("create");
    let names = ["a", "b", "c", "d", "e"];
    for n in names {
        s.create(&key(p, n), n.as_bytes().to_vec(), None).await.expect("create");
    }
    let r1 = s.current_resource_version().await.expect("current rv");
    assert_eq!(s.count(p).await.expect("count"), 5);

    let page = |limit: i64, continue_token: Option<String>| ListOptions { limit, continue_token, ..Default::default() };
    let keys = |items: &[Object]| items.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
    let page1 = s.get_list(p, page(2, None)).await.expect("page 1");
    assert_eq!(keys(&page1.items), vec![key(p, "a"), key(p, "b")]);
    assert_eq!(page1.resource_version, r1);
    assert_eq!(page1.remaining_item_count, Some(3));
    let token1 = page1.continue_token.clone().expect("page 1 has a continue token");

    // Changes after the first page must not show in later pages.
    set(s, &key(p, "c"), "c2").await;
    s.create(&key(p, "f"), b"f".to_vec(), None).await.expect("create f");
    s.delete(&key(p, "a"), Preconditions::default()).await.expect("delete a");

    let page2 = s.get_list(p, page(2, Some(token1.clone()))).await.expect("page 2");
    assert_eq!(keys(&page2.items), vec![key(p, "c"), key(p, "d")]);
    assert_eq!(page2.items[0].value, b"c");
    assert_eq!(page2.resource_version, r1);
    assert_eq!(page2.remaining_item_count, Some(1));
    let page3 = s.get_list(p, page(2, page2.continue_token.clone())).await.expect("page 3");
    assert_eq!(keys(&page3.items), vec![key(p, "e")]);
    assert_eq!((page3.continue_token, page3.remaining_item_count, page3.resource_version), (None, None, r1));

    let full = s.get_list(p, ListOptions::default()).await.expect("full list");
    assert_eq!(keys(&full.items), ["b", "c", "d", "e", "f"].map(|n| key(p, n)));
    assert_eq!(full.items[1].value, b"c2");
    assert_eq!(full.resource_version, s.current_resource_version().await.expect("current rv"));
    assert_eq!(full.continue_token, None);
    let exactly_all = s.get_list(p, page(5, None)).await.expect("limit = size");
    assert_eq!((exactly_all.items.len(), exactly_all.continue_token), (5, None));

    let exact = ListOptions { resource_version: r1, rv_match: RvMatch::Exact, ..Default::default() };
    assert_eq!(keys(&s.get_list(p, exact).await.expect("exact list").items), names.map(|n| key(p, n)));
    let cur = s.current_resource_version().await.expect("current rv");
    let future = ListOptions { resource_version: cur + 1000, ..Default::default() };
    assert_err!(s.get_list(p, future).await, StorageError::TooLargeResourceVersion { .. });
    let both = ListOptions { resource_version: r1, continue_token: Some(token1.clone()), ..Default::default() };
    assert_err!(s.get_list(p, both).await, StorageError::InvalidOptions(OptionsError::ContinueWithResourceVersion));
    assert_err!(s.get_list(p, page(2, Some("not a token!".into()))).await, StorageError::InvalidContinue(_));

    s.compact(cur).await.expect("compact");
    assert_err!(s.get_list(p, page(2, Some(token1))).await, StorageError::Expired { .. });
}

fn counter(o: Option<&Object>) -> u64 {
    o.and_then(|o| std::str::from_utf8(&o.value).ok()?.parse().ok()).unwrap_or(0)
}

fn increment(o: Option<&Object>) -> Result<Option<Vec<u8>>, UpdateError> {
    Ok(Some((counter(o) + 1).to_string().into_bytes()))
}

/// The read-modify-write loop: NotFound, creating with `ignore_not_found`, concurrent
/// increments, stale cached objects, preconditions, aborts and no-op updates.
pub async fn guaranteed_update<S: KubeStorage>(s: &S, p: &[u8]) {
    let k = key(p, "counter");
    let mut calls = 0;
    let r = s
        .guaranteed_update(&k, UpdateOptions::default(), |_| {
            calls += 1;
            Ok(None)
        })
        .await;
    assert_err!(r, StorageError::NotFound { .. });
    assert_eq!(calls, 0, "try_update must not run for a missing key without ignore_not_found");

    let create = UpdateOptions { ignore_not_found: true, ..Default::default() };
    let first = s.guaranteed_update(&k, create.clone(), increment).await.expect("create by update");
    assert_eq!(first.value, b"1");

    // Concurrent writers: every increment lands exactly once.
    const WRITERS: usize = 8;
    const EACH: usize = 5;
    let writers = (0..WRITERS).map(|_| async {
        for _ in 0..EACH {
            s.guaranteed_update(&k, UpdateOptions::default(), increment).await.expect("increment");
        }
    });
    futures::future::join_all(writers).await;
    let fresh = s.get(&k, latest()).await.expect("get").expect("counter exists");
    assert_eq!(counter(Some(&fresh)), 1 + (WRITERS * EACH) as u64);

    // A stale cached object: the first attempt fails its compare, the retry sees the fresh one.
    let mut seen = Vec::new();
    let stale = UpdateOptions { cached: Some(first.clone()), ..Default::default() };
    let updated = s
        .guaranteed_update(&k, stale, |o| {
            seen.push(counter(o));
            increment(o)
        })
        .await
        .expect("update from a stale cache");
    assert_eq!(seen, vec![1, counter(Some(&fresh))]);
    assert_eq!(counter(Some(&updated)), counter(Some(&fresh)) + 1);
    assert!(updated.resource_version > fresh.resource_version);

    let pre = |rv| UpdateOptions { preconditions: Preconditions { resource_version: Some(rv) }, ..Default::default() };
    match s.guaranteed_update(&k, pre(fresh.resource_version), increment).await {
        Err(StorageError::Conflict { expected, actual, .. }) => {
            assert_eq!((expected, actual), (fresh.resource_version, updated.resource_version))
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let with_pre = s.guaranteed_update(&k, pre(updated.resource_version), increment).await.expect("precondition holds");
    assert_eq!(counter(Some(&with_pre)), counter(Some(&updated)) + 1);

    let r = s.guaranteed_update(&k, UpdateOptions::default(), |_| Err("refused".into())).await;
    assert_err!(r, StorageError::UpdateRejected(_));
    let before = s.current_resource_version().await.expect("current rv");
    let same = with_pre.value.clone();
    let unchanged = s.guaranteed_update(&k, UpdateOptions::default(), move |_| Ok(Some(same.clone()))).await;
    assert_eq!(unchanged.expect("same bytes"), with_pre);
    let noop = s.guaranteed_update(&k, UpdateOptions::default(), |_| Ok(None)).await.expect("no change");
    assert_eq!(noop, with_pre);
    assert_eq!(s.current_resource_version().await.expect("current rv"), before, "a no-op update wrote");
}

/// `delete` with and without preconditions.
pub async fn delete<S: KubeStorage>(s: &S, p: &[u8]) {
    let k = key(p, "a");
    assert_err!(s.delete(&k, Preconditions::default()).await, StorageError::NotFound { .. });
    let rv1 = s.create(&k, b"v1".to_vec(), None).await.expect("create");
    let rv2 = set(s, &k, "v2").await.resource_version;
    let stale = Preconditions { resource_version: Some(rv1) };
    assert_err!(s.delete(&k, stale).await, StorageError::Conflict { expected: _, actual: _, .. });
    let deleted = s.delete(&k, Preconditions { resource_version: Some(rv2) }).await.expect("delete");
    assert_eq!((deleted.key.as_slice(), deleted.value.as_slice()), (k.as_slice(), b"v2".as_slice()));
    assert!(deleted.resource_version > rv2);
    assert_eq!(deleted.resource_version, s.current_resource_version().await.expect("current rv"));
    assert_err!(s.get(&k, latest()).await, StorageError::NotFound { .. });
    assert_err!(s.delete(&k, Preconditions::default()).await, StorageError::NotFound { .. });

    let k2 = key(p, "b");
    s.create(&k2, b"x".to_vec(), None).await.expect("create");
    assert_eq!(s.delete(&k2, Preconditions::default()).await.expect("delete").value, b"x");
}

/// `create` with a TTL: the key disappears when its lease expires; updates keep the lease.
pub async fn lease_ttl<S: KubeStorage>(s: &S, p: &[u8]) {
    let k = key(p, "ephemeral");
    let rv = s.create(&k, b"v1".to_vec(), Some(2)).await.expect("create with ttl");
    let mut w = s.watch(&k, WatchOptions { resource_version: rv, ..Default::default() }).await.expect("watch");
    let updated = set(s, &k, "v2").await;
    // Also through a cached object: the lease is then unknown and must be kept as is.
    let cached = UpdateOptions { cached: Some(updated), ..Default::default() };
    s.guaranteed_update(&k, cached, |_| Ok(Some(b"v3".to_vec()))).await.expect("update from cache");
    assert!(matches!(next_change(&mut w).await, WatchEvent::Modified(_)));
    assert!(matches!(next_change(&mut w).await, WatchEvent::Modified(_)));
    let started = std::time::Instant::now();
    match next_change(&mut w).await {
        WatchEvent::Deleted(o) => assert_eq!(o.value, b"v3"),
        other => panic!("expected the lease to delete the key, got {other:?}"),
    }
    assert!(started.elapsed() < EVENT_TIMEOUT);
    assert_err!(s.get(&k, latest()).await, StorageError::NotFound { .. });
}
