//! A Kubernetes-style storage interface (k8s.io/apiserver's `storage.Interface`, over raw
//! bytes), so that many Kubernetes control planes can share one store.
//!
//! * [`KubeStorage`] (`interface.rs`): the interface and each method's contract;
//! * [`KubeStore`] (`store.rs`): its semantics — resource versions, continue tokens, the
//!   update and delete loops, watch event types — built once over the primitives of a
//!   [`RawKv`] (`raw.rs`);
//! * [`EtcdKv`] (`etcd.rs`): the primitives over any etcd v3 endpoint, many tenants on one
//!   connection and shared watch streams (`mux.rs`); [`EtcdStorage`] is `KubeStore<EtcdKv>`;
//! * [`LocalKv`] (`local.rs`): the primitives over cairn's engine in-process, writing
//!   through the server's [`WritePath`] and watching through the `WatchHub`;
//!   [`LocalStorage`] is `KubeStore<LocalKv<_>>`;
//! * [`Tenant`] (`tenant.rs`): a view confined to one key prefix;
//! * `conformance` (with the dev-only feature `conformance`): the test suite every
//!   implementation must pass, and the many-tenant scenario (`tenant_scenario`); test code,
//!   kept out of the library's API unless a test crate asks for it.

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod etcd;
mod events;
mod interface;
mod local;
mod mux;
mod raw;
mod store;
mod tenant;
mod token;
mod types;

pub use error::{OptionsError, Result, StorageError, TokenError, UpdateError};
pub use etcd::{EtcdConfig, EtcdKv, EtcdStorage};
pub use interface::KubeStorage;
pub use local::{LocalConfig, LocalKv, LocalStorage, ProposeError, WritePath};
pub use raw::RawKv;
pub use store::{prefix_end, KubeStore};
pub use tenant::Tenant;
pub use types::{
    GetOptions, List, ListOptions, Object, Preconditions, RvMatch, UpdateOptions, WatchEvent, WatchOptions, Watcher,
};
