//! The MVCC store: opening and rebuilding, the read path, and commit.
//! Applying requests is in `apply.rs`.
//!
//! # Visibility
//! `apply` changes the key index and writes the backend at once, but readers only see a
//! revision after `commit` made it durable: every read runs at `committed_rev` (or older),
//! so nothing a crash could lose is ever observed.
//!
//! # Locks (in the order they may be taken)
//! 1. `apply`: the apply state; held by the (single) applying thread for a whole apply or
//!    commit.
//! 2. `lessor`: lease state; written only while `apply` is held; read by lease queries.
//! 3. the key index's tree lock (`index.rs`), a leaf.
//!
//! # Meta bucket (values are 8-byte big-endian integers)
//! `applied_index` the last applied log index; `current_rev` the store revision;
//! `compact_scheduled` the last compaction recorded; `compact_finished` the last one whose
//! backend deletions are done. All but the last are written in the same batch as the data
//! they describe.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_proto::cairnpb::LeaseRecord;
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::backend::{Backend, Bucket, WriteBatch};
use crate::compactor::Compactor;
use crate::error::{Error, Result};
use crate::index::TreeIndex;
use crate::lease::{LeaseInfo, Lessor};
use crate::range::ReadCtx;
use crate::revision::Revision;
use crate::sled_backend::SledBackend;
use crate::validate::DEFAULT_MAX_TXN_OPS;
use crate::write_txn::Change;

pub(crate) const META_APPLIED_INDEX: &[u8] = b"applied_index";
pub(crate) const META_CURRENT_REV: &[u8] = b"current_rev";
pub(crate) const META_COMPACT_SCHEDULED: &[u8] = b"compact_scheduled";
pub(crate) const META_COMPACT_FINISHED: &[u8] = b"compact_finished";

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory of the backend's files.
    pub dir: PathBuf,
    /// etcd's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Smallest TTL a lease is granted (etcd: ⌈1.5 × election timeout⌉ seconds).
    pub min_lease_ttl: i64,
}

impl StoreConfig {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig { dir: dir.into(), max_txn_ops: DEFAULT_MAX_TXN_OPS, min_lease_ttl: 2 }
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

/// The MVCC key-value store (see the module docs).
pub struct Store {
    pub(crate) cfg: StoreConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) index: Arc<TreeIndex>,
    pub(crate) apply: Mutex<ApplyState>,
    pub(crate) lessor: RwLock<Lessor>,
    /// The newest durable revision: what readers see.
    committed_rev: AtomicI64,
    /// Reads below this revision are refused (published at commit).
    compact_rev: AtomicI64,
    applied_index: AtomicU64,
    /// Applied index the backend holds durably.
    durable_index: AtomicU64,
    /// Set by the first fatal error; the store then refuses every write (sticky).
    pub(crate) failed: AtomicBool,
    compactor: Compactor,
}

fn meta_i64(backend: &dyn Backend, key: &[u8]) -> Result<Option<i64>> {
    match backend.get(Bucket::Meta, key)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v.as_slice().try_into().map_err(|_| Error::corrupt("meta", format!("{key:?}")))?;
            Ok(Some(i64::from_be_bytes(b)))
        }
    }
}

impl Store {
    /// Opens the store in `cfg.dir` on sled, rebuilding the key index and leases.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Store>> {
        let backend: Arc<dyn Backend> = Arc::new(SledBackend::open(&cfg.dir)?);
        Self::open_with(cfg, backend)
    }

    /// Opens the store over any backend.
    pub fn open_with(cfg: StoreConfig, backend: Arc<dyn Backend>) -> Result<Arc<Store>> {
        let applied_index = meta_i64(backend.as_ref(), META_APPLIED_INDEX)?.unwrap_or(0) as u64;
        // as in etcd, an empty store is at revision 1 (the first write makes revision 2) and
        // nothing is compacted (-1, so that even a compaction at 0 is accepted once)
        let mut current_rev = meta_i64(backend.as_ref(), META_CURRENT_REV)?.unwrap_or(1);
        let scheduled = meta_i64(backend.as_ref(), META_COMPACT_SCHEDULED)?.unwrap_or(-1);
        let finished = meta_i64(backend.as_ref(), META_COMPACT_FINISHED)?.unwrap_or(-1);

        let index = Arc::new(TreeIndex::new());
        let mut key_lease: HashMap<Vec<u8>, i64> = HashMap::new();
        backend.scan(Bucket::Key, &[], None, &mut |k, v| {
            let (rev, tombstone) = Revision::from_bytes(k)?;
            let kv = KeyValue::decode(v).map_err(|e| Error::corrupt("key bucket value", e))?;
            current_rev = current_rev.max(rev.main);
            if tombstone {
                index.tombstone(&kv.key, rev)?;
                key_lease.remove(&kv.key);
                return Ok(true);
            }
            if index.contains(&kv.key) {
                index.put(&kv.key, rev)?;
            } else {
                index.restore(&kv.key, Revision::new(kv.create_revision, 0), rev, kv.version)?;
            }
            if kv.lease != 0 {
                key_lease.insert(kv.key, kv.lease);
            } else {
                key_lease.remove(&kv.key);
            }
            Ok(true)
        })?;

        let mut lessor = Lessor::new(cfg.min_lease_ttl);
        backend.scan(Bucket::Lease, &[], None, &mut |_, v| {
            let r = LeaseRecord::decode(v).map_err(|e| Error::corrupt("lease bucket value", e))?;
            lessor.restore(r.id, r.ttl, r.remaining_ttl);
            Ok(true)
        })?;
        let mut attached: Vec<_> = key_lease.into_iter().collect();
        attached.sort();
        for (k, id) in attached {
            lessor.set_key_lease(&k, id);
        }

        let compactor = Compactor::start(index.clone(), backend.clone(), finished)?;
        if scheduled > finished {
            compactor.schedule(scheduled);
        }
        tracing::info!(current_rev, applied_index, compact_rev = scheduled, keys = index.len(), leases = lessor.len(), "store opened");
        Ok(Arc::new(Store {
            cfg,
            backend,
            index,
            apply: Mutex::new(ApplyState {
                current_rev,
                applied_index,
                compact_rev: scheduled,
                pending_compactions: Vec::new(),
                uncommitted: Vec::new(),
                staged: WriteBatch::default(),
                overlay: HashMap::new(),
                flushed_index: applied_index,
            }),
            lessor: RwLock::new(lessor),
            committed_rev: AtomicI64::new(current_rev),
            compact_rev: AtomicI64::new(scheduled),
            applied_index: AtomicU64::new(applied_index),
            durable_index: AtomicU64::new(applied_index),
            failed: AtomicBool::new(false),
            compactor,
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
        // load the floor before the revision: a commit in between only raises both
        let floor = self.compact_rev.load(Ordering::Acquire);
        let cur = self.committed_rev.load(Ordering::Acquire);
        self.read_ctx(None, floor).range(req, cur)
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
    fn flush_locked(&self, st: &mut ApplyState) -> Result<()> {
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
        self.compact_rev.store(st.compact_rev, Ordering::Release);
        self.committed_rev.store(st.current_rev, Ordering::Release);
        self.applied_index.store(st.applied_index, Ordering::Release);
        for rev in st.pending_compactions.drain(..) {
            self.compactor.schedule(rev);
        }
        std::mem::take(&mut st.uncommitted)
    }

    /// Makes the backend durable up to everything applied when called (it may run beside
    /// `apply`, which it blocks only to read the applied index); returns that index: log
    /// entries at or below it are no longer needed for recovery.
    pub fn sync_backend(&self) -> Result<u64> {
        let index = {
            let st = self.apply.lock();
            if self.failed.load(Ordering::Acquire) {
                return Err(Error::Stopped);
            }
            // what the backend holds: applies not yet flushed are covered by the log
            st.flushed_index
        };
        if let Err(e) = self.backend.sync() {
            self.failed.store(true, Ordering::Release);
            return Err(e);
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

    /// Number of keys in the index (live or with history).
    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    /// Resolves once a physical compaction at `rev` or later is on disk.
    pub async fn wait_compacted(&self, rev: i64) -> Result<()> {
        let mut rx = self.compactor.finished();
        rx.wait_for(|f| *f >= rev).await.map(|_| ()).map_err(|_| Error::Stopped)
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

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Streams the backend (Maintenance.Snapshot).
    pub fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64> {
        self.backend.snapshot(out)
    }
}
