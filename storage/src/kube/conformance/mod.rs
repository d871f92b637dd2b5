//! The conformance suite of the storage interface: generic async checks that every
//! implementation must pass (bbolt-style: one suite, run against each implementation and
//! against real etcd, which is the reference).
//!
//! Test support code: the checks panic with a message naming the case on any deviation.
//! Run everything with [`run_all`], from a test that owns a fresh server:
//!
//! ```ignore
//! let storage = EtcdStorage::connect(&endpoint).await?;
//! conformance::run_all(&storage, b"/conformance/").await;
//! ```
//!
//! Cases write under `base` + the case name + `/` and compact the whole store, so give the
//! suite a store no one else writes to at the same time.

mod kv;
mod tenants;
mod watch;

use std::future::Future;
use std::time::Duration;

use super::error::Result;
use super::interface::KubeStorage;
use super::raw::RawKv;
use super::store::KubeStore;
use super::tenant::Tenant;
use super::types::{WatchEvent, Watcher};

pub use tenants::{tenant_scenario, Report, Scenario};
pub use kv::{create_get, delete, get_resource_versions, guaranteed_update, lease_ttl, list_paging};
pub use watch::{
    tenant_isolation, watch_cancel_and_pipelined_creates, watch_compacted, watch_events, watch_from_history,
    watch_initial_state, watch_progress,
};

/// How long any single expected event or answer may take.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the suite needs besides the interface: compaction (kube-apiserver compacts through
/// its own etcd client, not through the storage interface).
pub trait Compactor {
    /// Compacts the history below `revision`.
    fn compact(&self, revision: i64) -> impl Future<Output = Result<()>> + Send;
}

impl<B: RawKv> Compactor for KubeStore<B> {
    fn compact(&self, revision: i64) -> impl Future<Output = Result<()>> + Send {
        KubeStore::compact(self, revision)
    }
}

impl<S: KubeStorage + Compactor> Compactor for Tenant<S> {
    fn compact(&self, revision: i64) -> impl Future<Output = Result<()>> + Send {
        self.inner().compact(revision)
    }
}

/// Which optional features the store under test has.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// Leases (TTL on create) work.
    pub leases: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features { leases: true }
    }
}

/// Runs every case, each under `base` + its name.
pub async fn run_all<S: KubeStorage + Compactor + Clone>(s: &S, base: &[u8], features: Features) {
    let p = |name: &str| [base, name.as_bytes(), b"/"].concat();
    run_case("create_get", create_get(s, &p("create_get"))).await;
    run_case("get_resource_versions", get_resource_versions(s, &p("get_rv"))).await;
    run_case("list_paging", list_paging(s, &p("list_paging"))).await;
    run_case("guaranteed_update", guaranteed_update(s, &p("update"))).await;
    run_case("delete", delete(s, &p("delete"))).await;
    if features.leases {
        run_case("lease_ttl", lease_ttl(s, &p("lease_ttl"))).await;
    }
    run_case("watch_events", watch_events(s, &p("watch_events"))).await;
    run_case("watch_initial_state", watch_initial_state(s, &p("watch_initial"))).await;
    run_case("watch_from_history", watch_from_history(s, &p("watch_history"))).await;
    run_case("watch_compacted", watch_compacted(s, &p("watch_compacted"))).await;
    run_case("watch_progress", watch_progress(s, &p("watch_progress"))).await;
    run_case("watch_cancel", watch_cancel_and_pipelined_creates(s, &p("watch_cancel"))).await;
    run_case("tenant_isolation", tenant_isolation(s, &p("tenants"))).await;
}

async fn run_case(name: &str, case: impl Future<Output = ()>) {
    eprintln!("conformance: {name} ...");
    let started = std::time::Instant::now();
    case.await;
    eprintln!("conformance: {name} ok ({:?})", started.elapsed());
}

/// `base` + `suffix`.
pub(crate) fn key(base: &[u8], suffix: &str) -> Vec<u8> {
    [base, suffix.as_bytes()].concat()
}

/// Asserts that `$r` is an `Err` matching `$pat`.
macro_rules! assert_err {
    ($r:expr, $pat:pat) => {
        match $r {
            Err($pat) => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pat), other),
        }
    };
}
pub(crate) use assert_err;

/// The next event that is not a bookmark, within [`EVENT_TIMEOUT`].
pub(crate) async fn next_change(w: &mut Watcher) -> WatchEvent {
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(Some(WatchEvent::Bookmark(_))) => continue,
            Ok(Some(ev)) => return ev,
            Ok(None) => panic!("watch ended while an event was expected"),
            Err(_) => panic!("no event within {EVENT_TIMEOUT:?}"),
        }
    }
}
