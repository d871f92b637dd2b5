//! One data layout for the binary and the embedded engine: the `cairn` binary opens a data
//! folder the embedded engine (`cairn_server::engine::Engine`) wrote, and the engine opens
//! one the binary wrote, with every write of the other side there.

mod common;

use cairn_server::engine::Engine;
use cairn_server::MemberOptions;
use cairn_storage::kube::{GetOptions, KubeStorage, LocalConfig};
use common::{Kind, Options, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_and_the_engine_open_each_others_folders() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");

    // 1. the engine writes
    let engine = Engine::open(&dir, MemberOptions::default()).await.expect("open engine");
    let storage = engine.local_storage(LocalConfig::default());
    let rv_engine = storage.create(b"/layout/by-engine", b"e".to_vec(), None).await.expect("create");
    drop(storage);
    engine.shutdown().await;

    // 2. the binary reads it and writes
    let dir_for_server = dir.clone();
    let server = tokio::task::spawn_blocking(move || {
        let mut server = Server::start_with(Kind::Cairn, Options { data_dir: Some(dir_for_server), ..Options::default() });
        let got = server.ctl_ok(&["get", "/layout/by-engine", "--print-value-only"]);
        assert_eq!(got.trim(), "e", "the binary sees the engine's write");
        let rev = server.ctl_json(&["get", "/layout/by-engine", "-w", "json"]);
        assert_eq!(rev["kvs"][0]["mod_revision"].as_i64(), Some(rv_engine), "same revision");
        server.ctl_ok(&["put", "/layout/by-binary", "b"]);
        let stopped = server.stop();
        assert!(matches!(stopped, Some((_, true))), "the binary stops on SIGTERM");
    });
    server.await.expect("binary steps");

    // 3. the engine reads the binary's write
    let engine = Engine::open(&dir, MemberOptions::default()).await.expect("reopen engine");
    let storage = engine.local_storage(LocalConfig::default());
    let got = storage.get(b"/layout/by-binary", GetOptions::default()).await.expect("get").expect("present");
    assert_eq!(got.value, b"b");
    assert!(got.resource_version > rv_engine);
    let old = storage.get(b"/layout/by-engine", GetOptions::default()).await.expect("get").expect("present");
    assert_eq!(old.resource_version, rv_engine);
    drop(storage);
    engine.shutdown().await;
}
