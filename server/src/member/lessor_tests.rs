//! Tests of the lessor runtime against a real single-member engine (store, Raft log,
//! proposer, in a temp dir), with time moved by hand on a [`ManualClock`]: no test sleeps.
//!
//! The lessor under test is the fixture's own (promoted by hand, its expiry loop not
//! running): the member's own lessor runs on a clock that never moves and checkpoints
//! never, so it expires nothing behind the test's back.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};
use cairn_storage::{ApplyResponse, Error as StorageError, Store};
use futures::future::join_all;
use tempfile::TempDir;

use super::{Lessor, LessorConfig};
use crate::clock::ManualClock;
use crate::engine::Engine;
use crate::error::RequestError;
use crate::member::proposer::Proposer;
use crate::member::raft_proposer::RaftProposer;
use crate::member::MemberOptions;

/// A single-member engine, its proposer, and a leader's lessor on a manual clock at 0.
struct Fixture {
    store: Arc<Store>,
    proposer: Arc<RaftProposer>,
    clock: Arc<ManualClock>,
    lessor: Lessor<RaftProposer>,
    engine: Engine,
    _dir: TempDir,
}

impl Fixture {
    async fn new(cfg: LessorConfig) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let frozen = LessorConfig { checkpoint_interval: std::time::Duration::ZERO, ..LessorConfig::default() };
        let options = MemberOptions { clock: Arc::new(ManualClock::default()), lessor: frozen, ..MemberOptions::default() };
        let engine = Engine::open(dir.path(), options).await.expect("open engine");
        let store = engine.store().clone();
        let proposer = engine.member.proposer.clone();
        let clock = Arc::new(ManualClock::default());
        let lessor = Lessor::new(store.clone(), proposer.clone(), clock.clone(), cfg, 1 << 40);
        // the single member is the leader (an empty store: nothing to queue yet)
        lessor.promote();
        Fixture { store, proposer, clock, lessor, engine, _dir: dir }
    }

    /// Another member becoming leader over the same replicated state: a fresh lessor with
    /// its own clock (its own origin), not yet promoted.
    fn new_leader(&self, cfg: LessorConfig, clock_origin_ms: u64) -> (Lessor<RaftProposer>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        clock.advance(clock_origin_ms);
        let lessor = Lessor::new(self.store.clone(), self.proposer.clone(), clock.clone(), cfg, 2 << 40);
        (lessor, clock)
    }

    async fn grant(&self, id: i64, ttl: i64) -> i64 {
        let resp = self.lessor.grant(LeaseGrantRequest { id, ttl }).await.expect("grant");
        assert!(resp.id != 0);
        resp.id
    }

    async fn put(&self, key: &str, lease: i64) -> i64 {
        let req = PutRequest { key: key.as_bytes().to_vec(), value: b"v".to_vec(), lease, ..Default::default() };
        match self.proposer.propose(Request::Put(req)).await.expect("put") {
            ApplyResponse::Put(r) => r.header.expect("header").revision,
            other => panic!("put answered {other:?}"),
        }
    }

    async fn put_owned(&self, key: String, lease: i64) -> i64 {
        self.put(&key, lease).await
    }

    /// Keys under `prefix` at `revision` (0: current).
    fn keys(&self, prefix: &str, revision: i64) -> Vec<String> {
        let req = RangeRequest { key: prefix.into(), range_end: prefix_end(prefix), revision, ..Default::default() };
        let resp = self.store.range(&req).expect("range");
        resp.kvs.iter().map(|kv| String::from_utf8(kv.key.to_vec()).unwrap()).collect()
    }

    /// How many keys are under `prefix` at `revision` (a count-only range).
    fn count(&self, prefix: &str, revision: i64) -> i64 {
        let req = RangeRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix),
            revision,
            count_only: true,
            ..Default::default()
        };
        self.store.range(&req).expect("count range").count
    }

    async fn shutdown(self) {
        self.engine.shutdown().await;
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    end
}

fn cfg() -> LessorConfig {
    LessorConfig::default()
}

#[tokio::test]
async fn expiry_revokes_the_lease_and_deletes_its_keys_in_one_revision() {
    let f = Fixture::new(cfg()).await;
    let id = f.grant(0, 10).await;
    for k in ["k/a", "k/b", "k/c"] {
        f.put(k, id).await;
    }
    f.put("k/unleased", 0).await;
    let before = f.store.revision();
    assert_eq!(f.lessor.time_to_live(id, false).unwrap().remaining, 10);

    f.clock.advance(9_999);
    assert_eq!(f.lessor.expire_due().await.unwrap(), 0, "1 ms before the deadline nothing expires");
    assert!(f.store.lease(id).is_some());
    assert_eq!(f.lessor.time_to_live(id, false).unwrap().remaining, 0, "remaining is truncated");

    f.clock.advance(1);
    assert_eq!(f.lessor.expire_due().await.unwrap(), 1, "due exactly at grant + TTL");
    assert!(f.store.lease(id).is_none(), "lease gone from the state machine");
    assert!(f.lessor.time_to_live(id, true).is_none());
    assert_eq!(f.lessor.queued(), 0, "nothing left in the queue");
    assert_eq!(f.keys("k/", 0), ["k/unleased"], "leased keys deleted, the others kept");
    assert_eq!(f.store.revision(), before + 1, "all three deletes in one revision");
    assert_eq!(f.keys("k/", before), ["k/a", "k/b", "k/c", "k/unleased"]);

    assert_eq!(f.lessor.expire_due().await.unwrap(), 0, "nothing expires twice");
    f.shutdown().await;
}

#[tokio::test]
async fn renew_pushes_the_deadline() {
    let f = Fixture::new(cfg()).await;
    let id = f.grant(0, 10).await;
    let other = f.grant(0, 10).await;
    f.clock.advance(6_000);
    assert_eq!(f.lessor.renew(id).await.unwrap(), 10, "keep-alive answers the granted TTL");
    assert_eq!(f.lessor.time_to_live(id, false).unwrap().remaining, 10);

    f.clock.advance(4_000); // the old deadline (t = 10 s)
    match f.lessor.renew(other).await {
        Err(RequestError::Storage(StorageError::LeaseNotFound)) => {}
        res => panic!("renewing a lease at its deadline (its revocation is due) answered {res:?}"),
    }
    assert_eq!(f.lessor.expire_due().await.unwrap(), 1, "only the lease that was not renewed");
    assert!(f.store.lease(other).is_none());
    assert!(f.store.lease(id).is_some(), "renewed lease survives its old deadline");
    assert_eq!(f.lessor.time_to_live(id, false).unwrap().remaining, 6);

    f.clock.advance(5_999); // t = 15.999 s
    assert_eq!(f.lessor.expire_due().await.unwrap(), 0);
    f.clock.advance(1); // t = 16 s = renewal + TTL
    assert_eq!(f.lessor.expire_due().await.unwrap(), 1);
    assert!(f.store.lease(id).is_none());

    match f.lessor.renew(id).await {
        Err(RequestError::Storage(StorageError::LeaseNotFound)) => {}
        other => panic!("renewing an expired lease answered {other:?}"),
    }
    assert_eq!(f.lessor.queued(), 0, "a failed renew queues nothing");
    f.shutdown().await;
}

#[tokio::test]
async fn renew_clears_a_checkpointed_remaining_ttl() {
    let f = Fixture::new(cfg()).await;
    let id = f.grant(0, 100).await;
    f.clock.advance(40_000);
    assert_eq!(f.lessor.checkpoint().await.unwrap(), 1);
    assert_eq!(f.store.lease(id).unwrap().remaining_ttl, 60);
    f.lessor.renew(id).await.unwrap();
    assert_eq!(
        f.store.lease(id).unwrap().remaining_ttl,
        0,
        "a renewed lease must not come back with its old remaining TTL after a failover"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn revoke_deletes_keys_and_leaves_the_queue() {
    let f = Fixture::new(cfg()).await;
    let a = f.grant(0, 10).await;
    let b = f.grant(0, 10).await;
    f.put("k/a1", a).await;
    f.put("k/a2", a).await;
    f.put("k/b1", b).await;
    assert_eq!(f.lessor.queued(), 2);
    let before = f.store.revision();

    let resp = f.lessor.revoke(a).await.unwrap();
    assert_eq!(resp.header.unwrap().revision, before + 1, "both keys deleted in one revision");
    assert_eq!(f.store.revision(), before + 1);
    assert_eq!(f.lessor.queued(), 1, "revoked lease left the queue");
    assert!(f.lessor.time_to_live(a, false).is_none());
    assert_eq!(f.keys("k/", 0), ["k/b1"]);

    match f.lessor.revoke(a).await {
        Err(RequestError::Storage(StorageError::LeaseNotFound)) => {}
        other => panic!("revoking twice answered {other:?}"),
    }
    f.clock.advance(10_000);
    assert_eq!(f.lessor.expire_due().await.unwrap(), 1, "only the lease still queued expires");
    assert!(f.keys("k/", 0).is_empty());
    f.shutdown().await;
}

#[tokio::test]
async fn grant_applies_the_minimum_ttl_and_etcds_rules() {
    let f = Fixture::new(cfg()).await;
    for asked in [0, 1] {
        let resp = f.lessor.grant(LeaseGrantRequest { id: 0, ttl: asked }).await.unwrap();
        assert_eq!(resp.ttl, 2, "TTL {asked} is raised to the minimum");
        let ttl = f.lessor.time_to_live(resp.id, false).unwrap();
        assert_eq!((ttl.granted, ttl.remaining), (2, 2));
    }
    f.clock.advance(1_999);
    assert_eq!(f.lessor.expire_due().await.unwrap(), 0, "a 1 s request lives the 2 s minimum");
    f.clock.advance(1);
    assert_eq!(f.lessor.expire_due().await.unwrap(), 2);

    // client-chosen IDs, duplicates and the largest TTL
    assert_eq!(f.grant(77, 30).await, 77);
    match f.lessor.grant(LeaseGrantRequest { id: 77, ttl: 30 }).await {
        Err(RequestError::Storage(StorageError::LeaseExists)) => {}
        other => panic!("duplicate grant answered {other:?}"),
    }
    match f.lessor.grant(LeaseGrantRequest { id: 0, ttl: cairn_storage::MAX_LEASE_TTL + 1 }).await {
        Err(RequestError::Storage(StorageError::LeaseTtlTooLarge)) => {}
        other => panic!("too large TTL answered {other:?}"),
    }
    assert_eq!(f.lessor.queued(), 1, "refused grants queue nothing");
    f.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_due_leases_go_in_one_pass_in_bounded_batches() {
    const N: usize = 10_000;
    const BATCH: usize = 256;
    let f = Fixture::new(LessorConfig { expire_batch: BATCH, expire_inflight: 4, ..cfg() }).await;
    let ids: Vec<i64> = join_all((0..N).map(|_| f.grant(0, 5))).await;
    join_all(ids.iter().enumerate().map(|(i, &id)| f.put_owned(format!("k/{i:05}"), id))).await;
    f.put("k/unleased", 0).await;
    assert_eq!(f.count("k/", 0), N as i64 + 1);
    assert_eq!(f.lessor.queued(), N);
    let before = f.store.revision();

    f.clock.advance(4_999);
    assert_eq!(f.lessor.expire_due().await.unwrap(), 0);
    f.clock.advance(1);
    assert_eq!(f.lessor.expire_due().await.unwrap(), N, "one call revokes everything due");
    assert_eq!(f.lessor.queued(), 0);
    assert!(f.store.lease_ids().is_empty());
    assert_eq!(f.count("k/", 0), 1, "only the unleased key is left");

    // Each LeaseExpire entry is one revision: walk them and check none revoked more than
    // a batch (one key per lease, so keys deleted per revision = leases per entry).
    let after = f.store.revision();
    let entries = (after - before) as usize;
    assert_eq!(entries, N.div_ceil(BATCH), "as few entries as the batch size allows");
    let mut deleted = 0;
    let mut prev = f.count("k/", before);
    for rev in before + 1..=after {
        let now = f.count("k/", rev);
        let gone = (prev - now) as usize;
        assert!((1..=BATCH).contains(&gone), "revision {rev} deleted {gone} keys (batch {BATCH})");
        deleted += gone;
        prev = now;
    }
    assert_eq!(deleted, N);
    f.shutdown().await;
}

#[tokio::test]
async fn a_new_leader_resumes_from_the_checkpointed_remaining_ttl() {
    let f = Fixture::new(cfg()).await;
    let checkpointed = f.grant(0, 100).await;
    f.put("k/cp", checkpointed).await;
    f.clock.advance(30_000);
    assert_eq!(f.lessor.checkpoint().await.unwrap(), 1);
    assert_eq!(f.store.lease(checkpointed).unwrap().remaining_ttl, 70);
    let fresh = f.grant(0, 100).await; // granted after the checkpoint: none recorded
    f.clock.advance(10_000);

    // the old leader steps down; another member (another clock) takes over
    f.lessor.demote();
    let extend = 1_000;
    let new_cfg = LessorConfig { promote_extend: std::time::Duration::from_millis(extend), ..cfg() };
    let (leader, clock) = f.new_leader(new_cfg, 5_000_000);
    leader.promote();
    assert_eq!(leader.queued(), 2);
    let ttl = leader.time_to_live(checkpointed, true).unwrap();
    assert_eq!(ttl.granted, 100);
    assert_eq!(ttl.remaining, 71, "checkpointed 70 s + the promotion extension, not the full 100 s");
    assert_eq!(ttl.keys, vec![b"k/cp".to_vec()]);
    assert_eq!(leader.time_to_live(fresh, false).unwrap().remaining, 101, "no checkpoint: full TTL");

    clock.advance(70_999);
    assert_eq!(leader.expire_due().await.unwrap(), 0);
    clock.advance(1);
    assert_eq!(leader.expire_due().await.unwrap(), 1);
    assert!(f.store.lease(checkpointed).is_none());
    assert!(f.keys("k/", 0).is_empty());
    assert!(f.store.lease(fresh).is_some());
    assert_eq!(f.lessor.expire_due().await.unwrap(), 0, "the demoted lessor expires nothing");
    f.shutdown().await;
}

#[tokio::test]
async fn promote_spreads_deadlines_over_seconds() {
    const N: usize = 1_000;
    const PER_SEC: usize = 100;
    let f = Fixture::new(cfg()).await;
    join_all((0..N).map(|_| f.grant(0, 10))).await;
    let new_cfg = LessorConfig { max_expiries_per_sec: PER_SEC, ..cfg() }; // promote_extend 1 s
    let (leader, clock) = f.new_leader(new_cfg, 0);
    leader.promote();
    assert_eq!(leader.queued(), N);

    // every lease was due at 11 s: now at most PER_SEC per second, none earlier
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for id in f.store.lease_ids() {
        *per_second.entry(leader.time_to_live(id, false).unwrap().remaining).or_default() += 1;
    }
    assert_eq!(per_second.keys().next(), Some(&11), "no deadline moves earlier");
    assert!(per_second.values().all(|&n| n <= PER_SEC), "{per_second:?}");
    assert_eq!(per_second.len(), N / PER_SEC, "spread over as few seconds as the cap allows");

    // and expiry follows: stepping one second at a time never revokes more than the cap
    clock.advance(10_000);
    let mut revoked = 0;
    for _ in 0..N / PER_SEC {
        clock.advance(1_000);
        let n = leader.expire_due().await.unwrap();
        assert!(n <= PER_SEC, "{n} leases revoked within one second");
        revoked += n;
    }
    assert_eq!(revoked, N);
    assert!(f.store.lease_ids().is_empty());
    f.shutdown().await;
}

#[tokio::test]
async fn demote_keeps_no_expiry_state() {
    let f = Fixture::new(cfg()).await;
    let ids: Vec<i64> = join_all((0..100).map(|_| f.grant(0, 5))).await;
    assert_eq!(f.lessor.queued(), 100);
    f.lessor.demote();
    assert_eq!(f.lessor.queued(), 0, "a follower holds no deadlines");
    f.clock.advance(60_000);
    assert_eq!(f.lessor.expire_due().await.unwrap(), 0, "a follower expires nothing");
    assert_eq!(f.store.lease_ids().len(), 100, "the replicated leases are untouched");
    // without a deadline a lease reports its granted TTL
    assert_eq!(f.lessor.time_to_live(ids[0], false).unwrap().remaining, 5);
    // leader again: the leases come back from the store, timed from now
    f.lessor.promote();
    assert_eq!(f.lessor.queued(), 100);
    assert_eq!(f.lessor.time_to_live(ids[0], false).unwrap().remaining, 6, "5 s + the promotion extension");
    f.shutdown().await;
}

#[tokio::test]
async fn a_failed_revocation_is_queued_again() {
    let f = Fixture::new(cfg()).await;
    join_all((0..3).map(|_| f.grant(0, 5))).await;
    f.clock.advance(5_000);
    // the member stops (its node thread joined): every later proposal fails
    let Fixture { store, lessor, engine, _dir, .. } = f;
    engine.shutdown().await;
    match lessor.expire_due().await {
        Err(RequestError::Stopped) => {}
        other => panic!("expiry over a stopped member answered {other:?}"),
    }
    assert_eq!(lessor.queued(), 3, "the leases stay due for the next pass");
    assert_eq!(store.lease_ids().len(), 3);
}
