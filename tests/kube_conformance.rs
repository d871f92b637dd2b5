//! The storage interface's conformance suite (`cairn_storage::kube::conformance`) over one
//! `EtcdStorage` connection to the server: cairn by default, real etcd with
//! `CAIRN_TEST_TARGET=etcd` (the reference the suite was written against). Runs the suite
//! directly and through a tenant view.

mod common;

use cairn_storage::kube::conformance::{self, Features};
use cairn_storage::kube::{EtcdStorage, Tenant};
use common::{target_kind, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_storage_conformance() {
    let server = Server::start(target_kind());
    let storage = EtcdStorage::connect(&server.endpoint()).await.expect("connect");
    let features = Features::default();
    conformance::run_all(&storage, b"/conformance/direct/", features).await;
    let tenant = Tenant::new(storage.clone(), b"/conformance/tenant/".to_vec()).expect("tenant");
    conformance::run_all(&tenant, b"", features).await;
}
