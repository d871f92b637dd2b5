//! Backups: `etcdctl snapshot save` against cairn while clients keep writing; the saved
//! file verifies (SHA-256, stream, padding) and holds a consistent point in time: every
//! write acknowledged before the save began, nothing half-applied.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_proto::mvccpb::KeyValue;
use cairn_storage::backend::Bucket;
use cairn_storage::backup::read_backup;
use common::{Kind, Server};
use etcd_client::Client;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_under_write_load() {
    let s = Server::start(Kind::Cairn);
    let mut c = Client::connect([s.endpoint()], None).await.expect("connect");
    let value = vec![b'v'; 1024];
    for i in 0..3000u64 {
        c.put(format!("/pre/{i:05}"), value.clone(), None).await.expect("put");
    }
    // four writers keep going during the save
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (mut c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                c.put(format!("/load/{w}/{i:06}"), "x", None).await.expect("put under a snapshot");
                acked.fetch_add(1, Ordering::AcqRel);
                i += 1;
            }
        }));
    }
    // let the writers get going
    while acked.load(Ordering::Acquire) < 200 {
        tokio::task::yield_now().await;
    }
    let before = acked.load(Ordering::Acquire);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.db");
    let path = file.to_str().expect("utf-8 path").to_owned();
    let out = {
        let endpoint = s.endpoint();
        let path = path.clone();
        tokio::task::spawn_blocking(move || common::etcdctl_command(&endpoint, &["snapshot", "save", &path]).output()).await.expect("etcdctl task").expect("run etcdctl")
    };
    let after_save = acked.load(Ordering::Acquire);
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.expect("writer");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "etcdctl snapshot save: {out:?}");
    assert!(stdout.contains(&format!("Snapshot saved at {path}")), "{stdout}");
    assert!(after_save > before, "the writers went on during the save ({before} -> {after_save})");

    let data = std::fs::read(&file).expect("read the backup");
    let backup = read_backup(&data).expect("the saved file verifies");
    let mut pre = 0;
    let mut load = 0;
    for (bucket, _, v) in &backup.entries {
        if *bucket != Bucket::Key {
            continue;
        }
        let kv = KeyValue::decode(v.as_slice()).expect("a stored key-value");
        if kv.key.starts_with(b"/pre/") {
            pre += 1;
        } else if kv.key.starts_with(b"/load/") {
            load += 1;
        }
    }
    assert_eq!(pre, 3000, "every write before the load is in the backup");
    assert!(load >= before && load <= acked.load(Ordering::Acquire), "{load} load writes in the backup: at least the {before} acknowledged before the save");
}
