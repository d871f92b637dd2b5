//! The MVCC store: opening and rebuilding, the read path, and commit.
//! Applying requests is in `apply.rs`; Raft snapshots (taking and restoring) in
//! `restore.rs`; deriving the in-memory state from backend contents in `rebuild.rs`.
//!
//! # Visibility
//! `apply` changes the key index and writes the backend at once, but readers only see a
//! revision after `commit` made it durable: every read runs at `committed_rev` (or older),
//! so nothing a crash could lose is ever observed.
//!
//! A snapshot restore replaces the backend contents and every derived structure while
//! holding `gate` for writing; every read of index + backend holds it for reading, so a
//! reader sees the whole old state or the whole new one (see `restore.rs`).
//!
//! # Locks (in the order they may be taken)
//! 1. `apply`: the apply state; held by the (single) applying thread for a whole apply,
//!    commit, snapshot or restore.
//! 2. `gate`: nothing of its own; the write side is taken only by a restore (under
//!    `apply`) while it swaps the state, the read side by each read of the index and
//!    backend (`range`, `events_between`) for the length of that read. Readers take
//!    nothing before it.
//! 3. `lessor`: lease state; written only while `apply` is held; read by lease queries.
//! 4. the key index's `working` lock (`index/mod.rs`), a leaf; index readers take none.
//!
//! Leaf locks, never held while taking another: `compactor` (the compactor handle,
//! replaced by a restore), `members` (the applied member list), `alarms` (the applied
//! alarm set), `auth` (the current auth view, replaced whole under `apply`), `restored`
//! (the restore mark and the durable-index updates it orders, see [`Store::sync_backend`]).
//!
//! The auth view is replaced when its entry is applied, before `publish`: the entry is
//! already durable in the log, and permission checks must see it at once (as etcd's auth
//! store does), so that no write is applied under a revoked grant.
//!
//! # Meta bucket
//! Integer values are 8-byte big-endian.
//! * `applied_index`: the last applied log index;
//! * `current_rev`: the store revision;
//! * `compact_scheduled`: the last compaction recorded;
//! * `compact_finished`: the last one whose backend deletions are done;
//! * `members`: the cluster's member list as the server encodes it (an opaque blob,
//!   written by [`Store::apply_members`]; absent until the first one);
//! * `alarms`: the active alarms, an encoded `cairnpb.AlarmList` (see `alarm.rs`).
//! * `auth`: the auth state, a `cairnpb.AuthState` record (`auth/state.rs`), rewritten
//!   whole by every applied auth change; absent until the first one.
//!
//! All but `compact_finished` are written in the same batch as the data they describe, so
//! snapshots (a copy of every bucket) carry them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, TxnRequest, TxnResponse};
use cairn_proto::mvccpb::KeyValue;
use parking_lot::{Mutex, RwLock};

use crate::alarm::Alarms;
use crate::auth::AuthView;
use crate::backend::{Backend, Bucket, WriteBatch};
use crate::compactor::Compactor;
use crate::engine::{open_backend, StorageEngine};
use crate::error::{Error, Result};
use crate::index::TreeIndex;
use crate::lease::{LeaseInfo, LeaseTable};
use crate::range::ReadCtx;
use crate::rebuild::{rebuild, BackendContents};
use crate::revision::Revision;
use crate::validate::DEFAULT_MAX_TXN_OPS;
use crate::write_txn::Change;

pub(crate) const META_APPLIED_INDEX: &[u8] = b"applied_index";
pub(crate) const META_CURRENT_REV: &[u8] = b"current_rev";
pub(crate) const META_COMPACT_SCHEDULED: &[u8] = b"compact_scheduled";
pub(crate) const META_COMPACT_FINISHED: &[u8] = b"compact_finished";
pub(crate) const META_MEMBERS: &[u8] = b"members";
pub(crate) const META_AUTH: &[u8] = b"auth";

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory of the backend's files.
    pub dir: PathBuf,
    /// etcd's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Smallest TTL a lease is granted (etcd: ⌈1.5 × election timeout⌉ seconds).
    pub min_lease_ttl: i64,
    /// The storage engine: [`StorageEngine::PageStore`] (default) or [`StorageEngine::Sled`]. A folder
    /// remembers the engine that wrote it; opening it with the other fails with
    /// [`Error::WrongEngine`] (see `engine.rs`).
    pub engine: StorageEngine,
}

impl StoreConfig {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig { dir: dir.into(), max_txn_ops: DEFAULT_MAX_TXN_OPS, min_lease_ttl: 2, engine: StorageEngine::default() }
    }
}

/// State owned by the applying thread.
pub(crate) struct ApplyState {
    pub current_rev: i64,
    pub applied_index: u64,
    pub compact_rev: i64,
    /// Compactions applied but not yet committed (handed to the compactor at commit).
    pub pending_compactions: Vec<i64>,
    /// Changes applied but not yet committed, per revision (for watchers).
    pub uncommitted: Vec<(i64, Vec<Change>)>,
    /// Backend changes of the applies since the last flush, written as one batch.
    pub staged: WriteBatch,
    /// The values in `staged`, by revision, for reads by later applies of the group.
    pub overlay: HashMap<Revision, KeyValue>,
    /// The applied index the backend holds (durably after the next sync).
    pub flushed_index: u64,
}

impl ApplyState {
    /// The state of a store whose backend holds `applied_index` and `current_rev`, with
    /// nothing staged.
    pub fn new(applied_index: u64, current_rev: i64, compact_rev: i64) -> Self {
        ApplyState {
            current_rev,
            applied_index,
            compact_rev,
            pending_compactions: Vec::new(),
            uncommitted: Vec::new(),
            staged: WriteBatch::default(),
            overlay: HashMap::new(),
            flushed_index: applied_index,
        }
    }
}

/// How many restores a store went through, and the revision the last one left it at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RestoreMark {
    /// Restores since the store was opened.
    pub count: u64,
    /// The store revision right after the last restore.
    pub revision: i64,
}

/// The MVCC key-value store (see the module docs).
pub struct Store {
    pub(crate) cfg: StoreConfig,
    pub(crate) backend: Arc<dyn Backend>,
    /// Never replaced: a restore swaps its contents (`TreeIndex::replace`).
    pub(crate) index: Arc<TreeIndex>,
    pub(crate) apply: Mutex<ApplyState>,
    /// Readers against a restore (module docs, lock 2).
    pub(crate) gate: RwLock<()>,
    pub(crate) lessor: RwLock<LeaseTable>,
    /// The newest durable revision: what readers see.
    pub(crate) committed_rev: AtomicI64,
    /// Reads below this revision are refused (published at commit).
    pub(crate) compact_rev: AtomicI64,
    pub(crate) applied_index: AtomicU64,
    /// Applied index the backend holds durably. Raised by commit (under `apply`) and by
    /// `sync_backend` and set by a restore (both under `restored`).
    pub(crate) durable_index: AtomicU64,
    /// Set by the first fatal error; the store then refuses every write (sticky).
    pub(crate) failed: AtomicBool,
    /// The physical compactor; `None` only after a restore failed fatally. Leaf lock.
    pub(crate) compactor: Mutex<Option<Compactor>>,
    /// The member list of the last applied [`Store::apply_members`] (or restored
    /// snapshot); changed only under `apply`. Leaf lock.
    pub(crate) members: Mutex<Option<Vec<u8>>>,
    /// The active alarms as applied (or restored); changed only under `apply`. Leaf lock.
    pub(crate) alarms: RwLock<Alarms>,
    /// The current auth state and its permission cache; replaced whole under `apply`
    /// (module docs). Leaf lock.
    pub(crate) auth: RwLock<Arc<AuthView>>,
    /// Leaf lock: the restore mark; also orders `sync_backend`'s raise of
    /// `durable_index` against a restore's reset of it.
    pub(crate) restored: Mutex<RestoreMark>,
}

impl Store {
    /// Opens the store in `cfg.dir` on `cfg.engine`, rebuilding the key index and leases.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Store>> {
        let backend = open_backend(&cfg.dir, cfg.engine)?;
        Self::open_with(cfg, backend)
    }

    /// Opens the store in `dir` once the previous one let go of it (its compactor thread
    /// holds the backend until it notices the store is gone), within 5 s (tests).
    #[cfg(test)]
    pub(crate) fn reopen_when_free(dir: &std::path::Path) -> Arc<Store> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(StoreConfig::new(dir)) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _retry = e;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    /// Opens the store over any backend.
    pub fn open_with(cfg: StoreConfig, backend: Arc<dyn Backend>) -> Result<Arc<Store>> {
        let r = rebuild(&BackendContents(backend.as_ref()), cfg.min_lease_ttl)?;
        let index = Arc::new(r.index);
        let compactor = Compactor::start(index.clone(), backend.clone(), r.compact_finished)?;
        if r.compact_scheduled > r.compact_finished {
            compactor.schedule(r.compact_scheduled);
        }
        tracing::info!(
            current_rev = r.current_rev,
            applied_index = r.applied_index,
            compact_rev = r.compact_scheduled,
            keys = index.len(),
            leases = r.lessor.len(),
            "store opened"
        );
        Ok(Arc::new(Store {
            cfg,
            backend,
            index,
            apply: Mutex::new(ApplyState::new(r.applied_index, r.current_rev, r.compact_scheduled)),
            gate: RwLock::new(()),
            lessor: RwLock::new(r.lessor),
            committed_rev: AtomicI64::new(r.current_rev),
            compact_rev: AtomicI64::new(r.compact_scheduled),
            applied_index: AtomicU64::new(r.applied_index),
            durable_index: AtomicU64::new(r.applied_index),
            failed: AtomicBool::new(false),
            compactor: Mutex::new(Some(compactor)),
            members: Mutex::new(r.members),
            alarms: RwLock::new(r.alarms),
            auth: RwLock::new(Arc::new(AuthView::new(r.auth))),
            restored: Mutex::new(RestoreMark::default()),
        }))
    }

    pub(crate) fn read_ctx<'a>(&'a self, pending: Option<&'a HashMap<Revision, KeyValue>>, floor: i64) -> ReadCtx<'a> {
        ReadCtx {
            index: &self.index,
            backend: self.backend.as_ref(),
            pending,
            compact_floor: floor,
            live_compact_rev: &self.compact_rev,
        }
    }

    /// A Range at the committed revision (or the older one it asks for). Sets only the
    /// header's revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let _gate = self.gate.read();
        // load the floor before the revision: a commit in between only raises both
        let floor = self.compact_rev.load(Ordering::Acquire);
        let cur = self.committed_rev.load(Ordering::Acquire);
        self.read_ctx(None, floor).range(req, cur)
    }

    /// A Txn without writes ([`crate::txn::is_read_only`]) at the committed revision, as a
    /// read: nothing goes through the write path (etcd serves read-only Txns this way).
    /// Compares and ranges all read one revision. Sets only the header's revision.
    pub fn read_txn(&self, t: &TxnRequest) -> Result<TxnResponse> {
        let _gate = self.gate.read();
        // load the floor before the revision: a commit in between only raises both
        let floor = self.compact_rev.load(Ordering::Acquire);
        let cur = self.committed_rev.load(Ordering::Acquire);
        let view = crate::txn::CommittedView { ctx: self.read_ctx(None, floor), rev: cur, floor };
        crate::txn::read_only(&view, t)
    }

    /// Makes every applied request durable, then lets readers see it. On failure the store
    /// is failed for good and nothing applied since the last commit is ever visible.
    pub fn commit(&self) -> Result<Vec<(i64, Vec<Change>)>> {
        let mut st = self.apply.lock();
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        self.flush_locked(&mut st)?;
        if let Err(e) = self.backend.sync() {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        self.durable_index.store(st.flushed_index, Ordering::Release);
        Ok(self.publish_locked(&mut st))
    }

    /// Lets readers see everything applied *without* making the backend durable. Only for
    /// callers whose own log (the WAL) already holds every applied entry durably, and who
    /// replay that log past [`Store::durable_index`] after a restart.
    pub fn publish(&self) -> Result<Vec<(i64, Vec<Change>)>> {
        let mut st = self.apply.lock();
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        self.flush_locked(&mut st)?;
        Ok(self.publish_locked(&mut st))
    }

    /// Writes the staged batch of the group, with the metadata describing it, to the
    /// backend in one atomic write.
    pub(crate) fn flush_locked(&self, st: &mut ApplyState) -> Result<()> {
        if st.flushed_index == st.applied_index && st.staged.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut st.staged);
        batch.put(Bucket::Meta, META_APPLIED_INDEX.to_vec(), st.applied_index.to_be_bytes().to_vec());
        batch.put(Bucket::Meta, META_CURRENT_REV.to_vec(), st.current_rev.to_be_bytes().to_vec());
        if let Err(e) = self.backend.write(batch) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        st.overlay.clear();
        st.flushed_index = st.applied_index;
        Ok(())
    }

    fn publish_locked(&self, st: &mut ApplyState) -> Vec<(i64, Vec<Change>)> {
        // the index first: a reader that sees the new revision finds its keys
        self.index.publish();
        self.compact_rev.store(st.compact_rev, Ordering::Release);
        self.committed_rev.store(st.current_rev, Ordering::Release);
        self.applied_index.store(st.applied_index, Ordering::Release);
        if !st.pending_compactions.is_empty() {
            let compactor = self.compactor.lock();
            for rev in st.pending_compactions.drain(..) {
                if let Some(c) = compactor.as_ref() {
                    c.schedule(rev);
                }
            }
        }
        std::mem::take(&mut st.uncommitted)
    }

    /// Makes the backend durable up to everything applied when called (it may run beside
    /// `apply`, which it blocks only to read the applied index); returns that index: log
    /// entries at or below it are no longer needed for recovery.
    ///
    /// A restore running meanwhile makes the returned index meaningless for the restored
    /// state: `durable_index` is then left as the restore set it (the check and the raise
    /// are made under `restored`, which the restore holds while it resets it).
    pub fn sync_backend(&self) -> Result<u64> {
        let (index, mark) = {
            let st = self.apply.lock();
            if self.failed.load(Ordering::Acquire) {
                return Err(Error::Stopped);
            }
            // what the backend holds: applies not yet flushed are covered by the log
            (st.flushed_index, self.restored.lock().count)
        };
        if let Err(e) = self.backend.sync() {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        let restored = self.restored.lock();
        if restored.count != mark {
            // the restore synced its own state: that is what is durable now
            return Ok(self.durable_index.load(Ordering::Acquire));
        }
        self.durable_index.fetch_max(index, Ordering::AcqRel);
        Ok(index)
    }

    /// The highest applied index the backend holds durably (replay a log past it).
    pub fn durable_index(&self) -> u64 {
        self.durable_index.load(Ordering::Acquire)
    }

    /// The committed (readable) store revision.
    pub fn revision(&self) -> i64 {
        self.committed_rev.load(Ordering::Acquire)
    }

    /// The compaction floor readers see.
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev.load(Ordering::Acquire)
    }

    /// The last log index applied and visible to readers.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// Bytes on disk.
    pub fn db_size(&self) -> u64 {
        self.backend.size()
    }

    /// Bytes of live data.
    pub fn db_size_in_use(&self) -> u64 {
        self.backend.size_in_use()
    }

    /// Bytes the backend quota counts (see [`Backend::size_allocated`]).
    pub fn db_size_allocated(&self) -> u64 {
        self.backend.size_allocated()
    }

    /// Rewrites the backend compactly and gives the free space back (Maintenance.
    /// Defragment); applies and reads go on meanwhile but for a short swap. A failure
    /// after the swap fails the backend, and so the store (sticky).
    pub fn defragment(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        self.backend.defragment()
    }

    /// Stops the background compactor and waits for its thread to end, so that once the
    /// last handle of the store is dropped its backend files are closed and unlocked at
    /// once (the thread holds the backend too). A compaction it abandons stays recorded
    /// as scheduled and runs again at the next open. For a caller that reopens the same
    /// folder in the same process (an import); compactions are no longer run after this.
    pub fn close(&self) {
        let compactor = self.compactor.lock().take();
        if let Some(c) = compactor {
            c.stop();
        }
    }

    /// Number of keys in the index (live or with history).
    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    /// Resolves once a physical compaction at `rev` or later is on disk. A restore
    /// meanwhile replaces the compactor; the wait goes on with the new one (polling every
    /// few milliseconds while the restore has none in place). Fails with
    /// [`Error::Stopped`] once the store failed or its compactor died on an error.
    pub async fn wait_compacted(&self, rev: i64) -> Result<()> {
        loop {
            let current = self.compactor.lock().as_ref().map(Compactor::finished);
            let Some(mut rx) = current else {
                if self.failed.load(Ordering::Acquire) {
                    return Err(Error::Stopped);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            };
            if rx.wait_for(|f| *f >= rev).await.is_ok() {
                return Ok(());
            }
            // the compactor's thread ended: a compaction failed, or a restore stopped it
            let replaced = self.compactor.lock().as_ref().is_none_or(|c| !c.finished().same_channel(&rx));
            if !replaced || self.failed.load(Ordering::Acquire) {
                return Err(Error::Stopped);
            }
        }
    }

    /// The lease `id` with its keys.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        self.lessor.read().get(id).cloned()
    }

    /// Every lease ID, sorted.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.lessor.read().ids()
    }

    /// The revisions a compaction at `rev` keeps (for hashing the store at a revision).
    pub fn keep_set(&self, rev: i64) -> HashSet<Revision> {
        self.index.keep(rev)
    }

    /// The active alarms (as applied; see `alarm.rs`).
    pub fn alarms(&self) -> Alarms {
        self.alarms.read().clone()
    }

    /// The current auth state (users, roles, permissions) with its permission cache.
    pub fn auth(&self) -> Arc<AuthView> {
        self.auth.read().clone()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }
}
