//! Defragmentation as an operator runs it: fill the store, delete and compact, then
//! `etcdctl defrag`; `endpoint status` shows the file shrink and a real size in use.
//! Runs against cairn; `CAIRN_TEST_TARGET=etcd` runs the same assertions against etcd.

mod common;

use std::time::Duration;

use common::{target_kind, wait_for, Server};
use etcd_client::{Client, CompactionOptions, DeleteOptions};

fn sizes(s: &Server) -> (u64, u64) {
    let j = s.ctl_json(&["endpoint", "status"]);
    let st = &j[0]["Status"];
    let size = st["dbSize"].as_u64().unwrap_or_else(|| panic!("dbSize in {st}"));
    let in_use = st["dbSizeInUse"].as_u64().unwrap_or_else(|| panic!("dbSizeInUse in {st}"));
    (size, in_use)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defrag_gives_space_back_after_delete_and_compact() {
    let s = Server::start(target_kind());
    let mut c = Client::connect([s.endpoint()], None).await.expect("connect");
    let value = vec![b'v'; 4096];
    for i in 0..2000 {
        c.put(format!("/big/{i:05}"), value.clone(), None).await.expect("put");
    }
    c.put("/keep", "small", None).await.expect("put");
    // the backend catches up with the log within a batch interval (etcd: 100 ms)
    wait_for("2000 values of 4 KiB in the file", Duration::from_secs(10), || (sizes(&s).0 >= 8 << 20).then_some(()));

    c.delete("/big/", Some(DeleteOptions::new().with_prefix())).await.expect("delete");
    let rev = c.get("/keep", None).await.expect("get").header().expect("header").revision();
    c.compact(rev, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    let (before, in_use_before) = wait_for("the deleted space to be free", Duration::from_secs(10), || {
        let (size, in_use) = sizes(&s);
        (in_use < size / 2).then_some((size, in_use))
    });
    assert!(before >= 8 << 20 && in_use_before < before / 2, "{in_use_before} in use of {before}");

    let out = s.ctl_ok(&["defrag"]);
    assert!(out.contains("Finished defragmenting etcd member"), "{out}");
    let (after, in_use_after) = sizes(&s);
    assert!(after < before / 4, "the file shrinks: {before} -> {after}");
    assert!(in_use_after <= after, "{in_use_after} in use of {after}");
    // nothing live was lost
    let kept = c.get("/keep", None).await.expect("get");
    assert_eq!(kept.kvs()[0].value(), b"small");
    let gone = c.get("/big/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.expect("count");
    assert_eq!(gone.count(), 0);
}
