//! Maintenance.Hash: the members of a three-member cluster that applied the same writes
//! answer the same hash, and a write changes it. Runs against cairn;
//! `CAIRN_TEST_TARGET=etcd` runs the same assertions against etcd.

mod common;

use std::time::Duration;

use common::cluster::ProcCluster;
use common::target_kind;
use etcd_client::{Client, DeleteOptions, PutOptions};

/// Each member's (hash, header revision).
async fn hashes(clients: &mut [Client]) -> Vec<(u32, i64)> {
    let mut out = Vec::new();
    for c in clients.iter_mut() {
        let h = c.hash().await.expect("Maintenance.Hash");
        out.push((h.hash(), h.header().expect("header").revision()));
    }
    out
}

/// Waits until every member answers the same hash at `rev`; returns it.
async fn agreed(clients: &mut [Client], rev: i64) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hs = hashes(clients).await;
        if hs.iter().all(|&(h, r)| r == rev && h == hs[0].0) {
            return hs[0].0;
        }
        assert!(tokio::time::Instant::now() < deadline, "members never agreed on the hash at revision {rev}: {hs:?}");
        // the members' backends catch up with the log within a batch interval (100 ms)
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_agree_on_the_hash_and_writes_change_it() {
    let c = ProcCluster::start(target_kind(), 3);
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(Client::connect([c.endpoint(i)], None).await.expect("connect"));
    }
    let lease = clients[0].lease_grant(600, None).await.expect("grant").id();
    for i in 0..100 {
        clients[i % 3].put(format!("k{i:03}"), format!("v{i}"), if i % 10 == 0 { Some(PutOptions::new().with_lease(lease)) } else { None }).await.expect("put");
    }
    let rev = clients[1].delete("k05", Some(DeleteOptions::new().with_prefix())).await.expect("delete").header().expect("header").revision();
    let first = agreed(&mut clients, rev).await;
    let rev = clients[2].put("k000", "changed", None).await.expect("put").header().expect("header").revision();
    let second = agreed(&mut clients, rev).await;
    assert_ne!(first, second, "a write changes the hash");
}
