//! kill -9 under write load: every acknowledged write must be there after the restart,
//! with the revision it was acknowledged with (the WAL is replayed over the backend).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::{Kind, Server};
use tokio::sync::Mutex;

const WRITERS: usize = 16;
/// Acknowledged writes to collect before the kill.
const ACKED_BEFORE_KILL: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::start(Kind::Cairn);
    let endpoint = format!("http://{}", server.client_addr());
    let acked: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (enough_tx, mut enough_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (acked, stop, enough_tx, endpoint) = (acked.clone(), stop.clone(), enough_tx.clone(), endpoint.clone());
        tasks.push(tokio::spawn(async move {
            let mut kv = KvClient::connect(endpoint).await.expect("connect");
            for i in 0.. {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let (key, value) = (format!("w{w:02}-{i:06}"), format!("v{i}-{}", "x".repeat(i % 200)));
                let req = PutRequest { key: key.clone().into(), value: value.clone().into(), ..Default::default() };
                match kv.put(req).await {
                    Ok(resp) => {
                        let rev = resp.into_inner().header.expect("header").revision;
                        let mut a = acked.lock().await;
                        a.push((key, value, rev));
                        if a.len() == ACKED_BEFORE_KILL {
                            let _ = enough_tx.try_send(());
                        }
                    }
                    // the server died: this write's outcome is unknown, which is allowed
                    Err(_) => return,
                }
            }
        }));
    }
    enough_rx.recv().await.expect("writers reached the target");
    server.kill9_and_restart();
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.expect("writer task");
    }

    let acked = acked.lock().await.clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    let mut kv = KvClient::connect(format!("http://{}", server.client_addr())).await.expect("reconnect");
    let max_rev = acked.iter().map(|a| a.2).max().unwrap();
    let mut revs: Vec<i64> = acked.iter().map(|a| a.2).collect();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), acked.len(), "every acknowledged put got its own revision");
    for (key, value, rev) in &acked {
        let resp = kv
            .range(RangeRequest { key: key.clone().into(), ..Default::default() })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(resp.kvs.len(), 1, "acknowledged key {key} (rev {rev}) lost after kill -9");
        assert_eq!(resp.kvs[0].value, value.as_bytes(), "value of {key}");
        assert_eq!(resp.kvs[0].mod_revision, *rev, "revision of {key}");
        assert!(resp.header.unwrap().revision >= max_rev);
    }
}
