//! Defragment releases the Raft WAL too (cairn only: etcd's WAL keeps everything since its
//! last Raft snapshot). One member: fill more than a 64 MiB WAL segment, delete, compact,
//! defrag; the WAL folder shrinks to one small segment and, after a kill -9, every live key
//! is there. Three members: defragment the leader and the running follower while the other
//! follower is stopped and more than the kept catch-up entries (5,000) were written; the
//! stopped one comes back, is sent a snapshot, and ends with the same data.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::ProcCluster;
use common::{wait_for, Kind, Server};
use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions};

/// The segment files in a member's WAL folder, with their sizes in bytes.
fn wal_segments(data_dir: &Path) -> Vec<u64> {
    let dir = data_dir.join("member/raft/wal");
    let mut sizes = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let e = e.expect("dir entry");
        if e.file_name().to_string_lossy().ends_with(".wal") {
            sizes.push(e.metadata().expect("metadata").len());
        }
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defrag_releases_the_wal_of_a_single_member() {
    let mut s = Server::start(Kind::Cairn);
    let mut c = Client::connect([s.endpoint()], None).await.expect("connect");
    // 80 values of 1 MiB: more than one 64 MiB segment of records
    for i in 0..80u32 {
        let value = vec![b'a' + (i % 26) as u8; 1 << 20];
        c.put(format!("/big/{i:03}"), value, None).await.expect("put");
    }
    for i in 0..100u32 {
        c.put(format!("/keep/{i:03}"), format!("kept {i}"), None).await.expect("put");
    }
    let before = wal_segments(s.data_dir());
    assert!(before.len() >= 2 && before.iter().sum::<u64>() > 64 << 20, "segments {before:?}");

    c.delete("/big/", Some(DeleteOptions::new().with_prefix())).await.expect("delete");
    let rev = c.get("/keep/000", None).await.expect("get").header().expect("header").revision();
    c.compact(rev, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    let out = s.ctl_ok(&["defrag"]);
    assert!(out.contains("Finished defragmenting etcd member"), "{out}");

    let after = wal_segments(s.data_dir());
    assert_eq!(after.len(), 1, "one fresh segment is left: {after:?} (before {before:?})");
    assert!(after[0] <= 8 << 20, "the fresh segment holds little: {after:?}");

    // nothing committed depends on the deleted segments: a kill -9 and a restart keep all
    s.kill9_and_restart();
    let mut c = Client::connect([s.endpoint()], None).await.expect("connect");
    let kept = c.get("/keep/", Some(GetOptions::new().with_prefix())).await.expect("get");
    assert_eq!(kept.kvs().len(), 100);
    for (i, kv) in kept.kvs().iter().enumerate() {
        assert_eq!(kv.value(), format!("kept {i}").as_bytes());
    }
    let big = c.get("/big/", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count");
    assert_eq!(big.count(), 0);
    // and the log goes on from there
    c.put("/after", "restart", None).await.expect("put after the restart");
    s.kill9_and_restart();
    let mut c = Client::connect([s.endpoint()], None).await.expect("connect");
    let after = c.get("/after", None).await.expect("get");
    assert_eq!(after.kvs()[0].value(), b"restart");
}

/// Puts `n` keys `/k/<prefix>/<i>` through `endpoint`, 16 at a time.
async fn put_many(endpoint: String, prefix: &str, n: usize) {
    let c = Client::connect([endpoint], None).await.expect("connect");
    let mut tasks = Vec::new();
    for t in 0..16 {
        let mut c = c.clone();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(16) {
                c.put(format!("/k/{prefix}/{i:05}"), format!("v{i}"), None).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("put task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stopped_across_a_defrag_catches_up() {
    let mut cl = ProcCluster::start(Kind::Cairn, 3);
    let leader = cl.wait_leader_agreed(Duration::from_secs(20));
    let (stopped, running) = match leader {
        0 => (1, 2),
        1 => (2, 0),
        _ => (0, 1),
    };
    put_many(cl.endpoint(leader), "before", 200).await;
    assert!(cl.stop(stopped, Duration::from_secs(15)), "member {stopped} stops");
    // more than the 5,000 entries a compaction keeps for followers
    put_many(cl.endpoint(leader), "while", 6000).await;
    for i in [leader, running] {
        let out = cl.ctl_ok(i, &["defrag"]);
        assert!(out.contains("Finished defragmenting etcd member"), "{out}");
        assert_eq!(wal_segments(cl.data_dir(i)).len(), 1, "member {i}");
    }
    cl.restart(stopped);
    put_many(cl.endpoint(leader), "after", 50).await;
    let want = cl.status(leader, Duration::from_secs(5)).expect("leader status").revision;
    wait_for("the restarted follower to catch up", Duration::from_secs(30), || {
        cl.status(stopped, Duration::from_secs(1)).filter(|s| s.revision >= want).map(|_| ())
    });
    assert!(cl.log(stopped).contains("installing a snapshot"), "caught up by snapshot\n{}", cl.log(stopped));
    // the same data on every member, read locally (serializable) from each
    let dump = |i: usize| cl.ctl_ok(i, &["get", "/k/", "--prefix", "--consistency=s", "--rev", &want.to_string()]);
    let expected = dump(leader);
    assert_eq!(expected.lines().count(), 2 * 6250);
    assert_eq!(dump(stopped), expected);
    assert_eq!(dump(running), expected);
    let hashes: Vec<String> = [leader, running, stopped]
        .iter()
        .map(|&i| cl.ctl_json(i, &["endpoint", "hashkv", &format!("--rev={want}")])[0]["HashKV"]["hash"].to_string())
        .collect();
    assert!(hashes[0].parse::<u64>().is_ok() && hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}
