//! The storage interface's conformance suite against cairn's engine in-process
//! (`LocalStorage`): the store, the watch hub, and a minimal write path that applies,
//! commits and publishes each command in turn (the server's group-commit proposer does the
//! same with batching).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use std::time::Duration;

use cairn_storage::kube::conformance::{self, tenant_scenario, Features, Scenario};
use cairn_storage::kube::{LocalConfig, LocalStorage, ProposeError, Tenant, WritePath};
use cairn_storage::watch::{HubConfig, WatchHub};
use cairn_storage::{ApplyResponse, Store, StoreConfig};

/// Applies, commits and publishes one command at a time.
struct DirectWrite {
    store: Arc<Store>,
    hub: WatchHub,
    /// The last log index used; held across apply, commit and publish so commands are
    /// applied and published in index order.
    index: Mutex<u64>,
    next_lease: AtomicI64,
}

impl WritePath for DirectWrite {
    async fn propose(&self, mut request: Request) -> Result<ApplyResponse, ProposeError> {
        if let Request::LeaseGrant(g) = &mut request {
            if g.id == 0 {
                g.id = self.next_lease.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut index = self.index.lock().expect("write path lock");
        *index += 1;
        let result = self.store.apply(*index, &InternalRequest { id: *index, request: Some(request), auth: None });
        let committed = self.store.commit()?;
        self.hub.publish(committed);
        Ok(result?)
    }
}

fn local_storage(dir: &std::path::Path) -> LocalStorage<DirectWrite> {
    let store = Store::open(StoreConfig::new(dir.join("db"))).expect("open store");
    let hub = WatchHub::new(store.clone(), HubConfig::default()).expect("hub");
    let write =
        DirectWrite { store: store.clone(), hub: hub.clone(), index: Mutex::new(0), next_lease: AtomicI64::new(1) };
    LocalStorage::local(store, hub, write, LocalConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_the_local_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = local_storage(dir.path());
    // No lessor here expires leases: the TTL case runs against servers only.
    let features = Features { leases: false };
    conformance::run_all(&storage, b"/conformance/direct/", features).await;
    let tenant = Tenant::new(storage.clone(), b"/conformance/tenant/".to_vec()).expect("tenant");
    conformance::run_all(&tenant, b"", features).await;
}

/// The tenant scenario (issue 3) in-process: 500 tenants × 20 resources over one hub stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_share_one_hub_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = local_storage(dir.path());
    let sc = Scenario {
        tenants: 500,
        resources: 20,
        objects: 3,
        writers: 4,
        writes_per_writer: 500,
        reads_per_tenant: 3,
        read_bound: Duration::from_secs(10),
        settle_bound: Duration::from_secs(30),
    };
    let report = tenant_scenario(&storage, &sc).await;
    eprintln!(
        "local: watches created in {:?}; writes in {:?}; {} reads: p50 {:?} p99 {:?} max {:?}",
        report.created_in,
        report.wrote_in,
        report.reads.len(),
        report.read_quantile(0.5),
        report.read_quantile(0.99),
        report.read_quantile(1.0)
    );
    assert!(report.starved.is_empty(), "starved reads: {:?}", &report.starved[..report.starved.len().min(5)]);
}

/// Compile-time check: updates (with plain closures) can run in spawned tasks, directly and
/// through a tenant view.
#[allow(dead_code)]
fn updates_can_be_spawned<W: WritePath>(s: LocalStorage<W>, t: Tenant<LocalStorage<W>>) {
    use cairn_storage::kube::{KubeStorage, UpdateOptions};
    tokio::spawn(async move {
        let v = b"v".to_vec();
        let _ = s.guaranteed_update(b"k", UpdateOptions::default(), move |_| Ok(Some(v.clone()))).await;
    });
    tokio::spawn(async move {
        let v = b"v".to_vec();
        let _ = t.guaranteed_update(b"k", UpdateOptions::default(), move |_| Ok(Some(v.clone()))).await;
    });
}
