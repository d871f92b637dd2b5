//! A write transaction of the state machine: every change it makes shares one main
//! revision (`begin_rev + 1`), numbered by sub revision in the order made.
//! (etcd: `storeTxnWrite` in `kvstore_txn.go`.)
//!
//! The key index is updated as changes are made, so later reads of the same transaction
//! see them (at `rev()`, in the index's working version: `*_latest`); concurrent readers
//! do not, because they read the published version at the committed revision, which is
//! older. Values are staged in `pending` and in the store's staged
//! batch, which reaches the backend in one atomic write per group of applies (`flush`).

use std::collections::HashMap;

use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use crate::backend::{Bucket, WriteBatch};
use crate::error::Result;
use crate::index::KeySpan;
use crate::lease::LeaseTable;
use crate::range::ReadCtx;
use crate::revision::Revision;
use crate::store::Store;

/// One change, as watchers will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The written value (for a deletion: only the key, and the deletion's mod revision).
    pub kv: KeyValue,
    /// True for a deletion.
    pub tombstone: bool,
}

pub(crate) struct WriteTxn<'s> {
    store: &'s Store,
    pub(crate) lessor: &'s mut LeaseTable,
    begin_rev: i64,
    /// The compaction floor of the apply state (deterministic across members).
    compact_floor: i64,
    changes: Vec<Change>,
    /// Values written since the last flush to the backend (this transaction's and those of
    /// earlier applies of the same group), by revision.
    pending: &'s mut HashMap<Revision, KeyValue>,
    pub(crate) batch: WriteBatch,
}

impl<'s> WriteTxn<'s> {
    pub(crate) fn new(
        store: &'s Store,
        lessor: &'s mut LeaseTable,
        pending: &'s mut HashMap<Revision, KeyValue>,
        begin_rev: i64,
        compact_floor: i64,
    ) -> Self {
        WriteTxn { store, lessor, begin_rev, compact_floor, changes: Vec::new(), pending, batch: WriteBatch::default() }
    }

    /// The revision reads of this transaction see: its own once it changed anything.
    pub(crate) fn rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }

    pub(crate) fn compact_floor(&self) -> i64 {
        self.compact_floor
    }

    fn read_ctx(&self) -> ReadCtx<'_> {
        self.store.read_ctx(Some(&*self.pending), self.compact_floor)
    }

    /// A range inside the transaction (sees its earlier writes).
    pub(crate) fn range(&self, r: &RangeRequest) -> Result<RangeResponse> {
        self.read_ctx().range(r, self.rev())
    }

    /// The values of a span at the transaction's revision.
    pub(crate) fn kvs(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>> {
        self.read_ctx().kvs(&KeySpan::new(key, range_end), self.rev())
    }

    /// Writes `key`; returns the transaction's revision.
    pub(crate) fn put(&mut self, key: &[u8], value: bytes::Bytes, lease: i64) -> Result<i64> {
        let rev = self.begin_rev + 1;
        let idx_rev = Revision::new(rev, self.changes.len() as i64);
        let (created, ver) = match self.store.index.put(key, idx_rev)? {
            Some(at) => (at.created.main, at.version),
            None => (rev, 0),
        };
        // the key and value are shared, not copied, by the pending map and the change list
        let kv = KeyValue {
            key: bytes::Bytes::copy_from_slice(key),
            create_revision: created,
            mod_revision: rev,
            version: ver + 1,
            value,
            lease,
        };
        self.batch.put(Bucket::Key, idx_rev.to_bytes(false), kv.encode_to_vec());
        self.lessor.set_key_lease(key, lease);
        self.pending.insert(idx_rev, kv.clone());
        self.changes.push(Change { kv, tombstone: false });
        Ok(rev)
    }

    /// Deletes every live key of the span; returns how many.
    pub(crate) fn delete_range(&mut self, key: &[u8], range_end: &[u8]) -> Result<i64> {
        let at = self.rev();
        let (hits, _) = self.store.index.range_latest(&KeySpan::new(key, range_end), at, 0);
        for h in &hits {
            self.delete(&h.key)?;
        }
        Ok(hits.len() as i64)
    }

    /// Deletes one live key.
    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<()> {
        let idx_rev = Revision::new(self.begin_rev + 1, self.changes.len() as i64);
        let kv = KeyValue { key: bytes::Bytes::copy_from_slice(key), mod_revision: idx_rev.main, ..Default::default() };
        // etcd stores a tombstone's value as just the key
        let stored = KeyValue { key: kv.key.clone(), ..Default::default() };
        self.batch.put(Bucket::Key, idx_rev.to_bytes(true), stored.encode_to_vec());
        self.store.index.tombstone(key, idx_rev)?;
        self.lessor.set_key_lease(key, 0);
        self.changes.push(Change { kv, tombstone: true });
        Ok(())
    }

    /// Ends the transaction: its batch, its final revision and its changes.
    pub(crate) fn finish(self) -> (WriteBatch, i64, Vec<Change>) {
        let rev = self.rev();
        (self.batch, rev, self.changes)
    }
}
