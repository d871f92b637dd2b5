//! The storage interface's conformance suite against real etcd (the reference), directly and
//! through a tenant view, over one `EtcdStorage` connection.
//!
//! Needs etcd at /usr/bin/etcd (or `CAIRN_TEST_ETCD_BIN`); the test is skipped with a
//! message when it is missing.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cairn_storage::kube::conformance::{self, Features};
use cairn_storage::kube::{EtcdStorage, Tenant};

/// A real etcd on loopback with a temporary data dir; killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

/// A port pair at 42000 or above that could be bound a moment ago.
fn free_ports() -> (u16, u16) {
    let base = 42000 + (std::process::id() % 500) as u16 * 20;
    let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
    (base..base + 2000)
        .step_by(2)
        .find(|&p| free(p) && free(p + 1))
        .map(|p| (p, p + 1))
        .expect("no free port pair above 42000")
}

impl Etcd {
    fn start() -> Option<Etcd> {
        let bin = std::env::var_os("CAIRN_TEST_ETCD_BIN").map_or_else(|| PathBuf::from("/usr/bin/etcd"), PathBuf::from);
        if !bin.is_file() {
            eprintln!("skipped: no etcd at {}", bin.display());
            return None;
        }
        let dir = tempfile::Builder::new().prefix("kube-conformance-").tempdir().expect("temp dir");
        let (client, peer) = free_ports();
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut child = Command::new(&bin)
            .args([
                "--name=kube",
                &format!("--data-dir={}", dir.path().join("data").display()),
                &format!("--listen-client-urls={endpoint}"),
                &format!("--advertise-client-urls={endpoint}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=kube={peer_url}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcd");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready to serve client requests") {
                    let _ = tx.send(());
                }
            }
        });
        let mut etcd = Etcd { child, endpoint, _dir: dir };
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = etcd.child.kill();
            panic!("etcd did not become ready");
        }
        Some(etcd)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_real_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    let storage = EtcdStorage::connect(&etcd.endpoint).await.expect("connect");
    conformance::run_all(&storage, b"/conformance/direct/", Features::default()).await;
    let tenant = Tenant::new(storage.clone(), b"/conformance/tenant/".to_vec()).expect("tenant");
    conformance::run_all(&tenant, b"", Features::default()).await;
    eprintln!("watches per stream at the end: {:?}", storage.raw().watches_per_stream());
}
