//! The Kubernetes-style storage interface over the embedded engine (store, watch hub,
//! WAL-backed pipeline, lessor): the same conformance suite that runs against real etcd
//! and the cairn binary, leases (TTL expiry) included, plus a restart.

use cairn_server::engine::Engine;
use cairn_server::MemberOptions;
use cairn_storage::kube::conformance::{self, Features};
use cairn_storage::kube::{GetOptions, KubeStorage, LocalConfig, Tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_the_embedded_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path(), MemberOptions::default()).await.expect("open engine");
    let storage = engine.local_storage(LocalConfig::default());
    conformance::run_all(&storage, b"/conformance/engine/", Features { leases: true }).await;
    let tenant = Tenant::new(storage.clone(), b"/conformance/tenant/".to_vec()).expect("tenant");
    conformance::run_all(&tenant, b"", Features { leases: true }).await;

    // what was written survives a restart of the engine (WAL replay / backend)
    let rv = storage.create(b"/restart/k", b"v".to_vec(), None).await.expect("create");
    drop(tenant);
    drop(storage);
    engine.shutdown().await;
    // the engine's background tasks (watch streams of the storage's mux, the compactor)
    // let go of the store asynchronously after shutdown: retry while sled's lock is held
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let engine = loop {
        match Engine::open(dir.path(), MemberOptions::default()).await {
            Ok(e) => break e,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("reopen engine: {e}"),
        }
    };
    let storage = engine.local_storage(LocalConfig::default());
    let got = storage.get(b"/restart/k", GetOptions::default()).await.expect("get").expect("present");
    assert_eq!((got.value.as_slice(), got.resource_version), (&b"v"[..], rv));
    drop(storage);
    engine.shutdown().await;
}
