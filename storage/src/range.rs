//! Range reads over the key index and the backend, with etcd's semantics
//! (etcd: `applierV3backend.Range` and `storeTxnRead.rangeKeys`).
//!
//! Work is pushed into the index where the answer allows it:
//! * `count_only`: the index counts (whole unchanged subtrees at once, `index/cow.rs`) and
//!   no value is read;
//! * `limit` with results neither filtered nor re-sorted: the index gathers exactly `limit`
//!   keys and counts the rest of the span for `count` (etcd's total, however many are
//!   returned); `more` is `count > limit`. Otherwise etcd's rule holds exactly: with no
//!   sort order, `limit + 1` keys in key order are fetched and only they are sorted (by a
//!   non-key target) and cut; with an order or a filter every key is fetched, filtered,
//!   sorted and then cut;
//! * `keys_only` (unless sorting by value): values are skipped while decoding, not copied.
//!
//! A compaction above the read revision published while the read ran may have removed
//! keys or values from under it: the floor is checked again at the end and such a read is
//! answered as compacted, never with a partial result.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use crate::backend::{Backend, Bucket};
use crate::error::{Error, Result};
use crate::index::{KeySpan, TreeIndex};
use crate::key_index::KeyAt;
use crate::revision::Revision;

/// What a read needs: the index, the backend, the values a write transaction has staged
/// but not yet written, and the compaction floor.
pub(crate) struct ReadCtx<'a> {
    pub index: &'a TreeIndex,
    pub backend: &'a dyn Backend,
    /// `Some` exactly inside a write transaction (the apply thread), whose reads also see
    /// the index's unpublished changes (`TreeIndex::*_latest`).
    pub pending: Option<&'a HashMap<Revision, KeyValue>>,
    /// Reads below this revision are refused (the apply thread's own floor inside a write
    /// transaction, so every member answers alike; the published one for readers).
    pub compact_floor: i64,
    /// The live published floor, to tell a concurrent compaction from corruption.
    pub live_compact_rev: &'a AtomicI64,
}

impl ReadCtx<'_> {
    /// The stored value of `rev`. A value missing under a revision the index named means
    /// a compaction removed it after the reader checked the floor: answered as compacted.
    pub fn fetch(&self, rev: Revision) -> Result<KeyValue> {
        if let Some(kv) = self.pending.and_then(|p| p.get(&rev)) {
            return Ok(kv.clone());
        }
        match self.backend.get(Bucket::Key, &rev.to_bytes(false))? {
            // the key and value share the read buffer: no copy per field
            Some(v) => KeyValue::decode(bytes::Bytes::from(v)).map_err(|e| Error::corrupt("key bucket value", e)),
            None if rev.main <= self.live_compact_rev.load(AtomicOrdering::Acquire) => Err(Error::Compacted),
            None => Err(Error::corrupt("key bucket", format!("revision {rev} named by the index is missing"))),
        }
    }

    /// Like [`ReadCtx::fetch`] without the value: the stored value is skipped while
    /// decoding, never copied.
    fn fetch_head(&self, rev: Revision) -> Result<KeyValue> {
        if let Some(kv) = self.pending.and_then(|p| p.get(&rev)) {
            return Ok(KeyValue { value: bytes::Bytes::new(), ..kv.clone() });
        }
        match self.backend.get(Bucket::Key, &rev.to_bytes(false))? {
            Some(v) => {
                let h = KeyValueHead::decode(v.as_slice()).map_err(|e| Error::corrupt("key bucket value", e))?;
                Ok(KeyValue {
                    key: h.key.into(),
                    create_revision: h.create_revision,
                    mod_revision: h.mod_revision,
                    version: h.version,
                    value: bytes::Bytes::new(),
                    lease: h.lease,
                })
            }
            None if rev.main <= self.live_compact_rev.load(AtomicOrdering::Acquire) => Err(Error::Compacted),
            None => Err(Error::corrupt("key bucket", format!("revision {rev} named by the index is missing"))),
        }
    }

    /// The index's range in the version this read sees (see `pending`).
    fn index_range(&self, span: &KeySpan<'_>, at: i64, limit: usize) -> (Vec<KeyAt>, i64) {
        match self.pending {
            Some(_) => self.index.revisions_latest(span, at, limit),
            None => self.index.revisions(span, at, limit),
        }
    }

    /// Refuses a read at `rev` that a compaction published meanwhile overtook (module docs).
    /// Inside a write transaction the read revision is at or above the apply thread's
    /// floor, which is at or above the published one: this never fires there.
    fn still_readable(&self, rev: i64) -> Result<()> {
        if rev < self.live_compact_rev.load(AtomicOrdering::Acquire) {
            return Err(Error::Compacted);
        }
        Ok(())
    }

    /// The keys of `span` visible at `at` with their values (etcd's `Range` with no options).
    pub fn kvs(&self, span: &KeySpan<'_>, at: i64) -> Result<Vec<KeyValue>> {
        let (hits, _) = self.index_range(span, at, 0);
        hits.iter().map(|h| self.fetch(h.modified)).collect()
    }

    /// A Range request answered at store revision `cur_rev` (the header's revision).
    pub fn range(&self, r: &RangeRequest, cur_rev: i64) -> Result<RangeResponse> {
        let rev = match r.revision {
            x if x > cur_rev => return Err(Error::FutureRev),
            x if x <= 0 => cur_rev,
            x => x,
        };
        if rev < self.compact_floor {
            return Err(Error::Compacted);
        }
        let header = Some(ResponseHeader { revision: cur_rev, ..Default::default() });
        let span = KeySpan::new(&r.key, &r.range_end);
        if r.count_only {
            let count = match self.pending {
                Some(_) => self.index.count_latest(&span, rev),
                None => self.index.count(&span, rev),
            };
            self.still_readable(rev)?;
            return Ok(RangeResponse { header, kvs: vec![], more: false, count });
        }
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let order = SortOrder::try_from(r.sort_order).map_err(|_| Error::InvalidSortOption)?;
        let target = SortTarget::try_from(r.sort_target).map_err(|_| Error::InvalidSortOption)?;
        // the limit goes into the index when the index's key order is the answer's order
        // and nothing is filtered out (module docs). etcd's rule otherwise: a request with
        // no sort order fetches `limit + 1` keys in key order and then sorts only those
        // (by a non-key target, ascending); one with an order or a filter fetches all.
        let in_key_order = !resorts(order, target);
        let fetch_limit = match () {
            _ if r.limit <= 0 || filtered => 0,
            _ if in_key_order => r.limit as usize,
            _ if order == SortOrder::None => r.limit as usize + 1,
            _ => 0,
        };
        let pushed = in_key_order && fetch_limit > 0;
        let (hits, total) = self.index_range(&span, rev, fetch_limit);
        let heads_only = r.keys_only && target != SortTarget::Value;
        let mut kvs = Vec::with_capacity(hits.len());
        for h in &hits {
            let kv = if heads_only { self.fetch_head(h.modified)? } else { self.fetch(h.modified)? };
            if keep(r, &kv) {
                kvs.push(kv);
            }
        }
        self.still_readable(rev)?;
        sort_kvs(&mut kvs, order, target);
        let mut more = pushed && total > r.limit;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { header, kvs, more, count: total })
    }
}

fn keep(r: &RangeRequest, kv: &KeyValue) -> bool {
    !((r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision)
        || (r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision)
        || (r.max_create_revision != 0 && kv.create_revision > r.max_create_revision)
        || (r.min_create_revision != 0 && kv.create_revision < r.min_create_revision))
}

/// True when [`sort_kvs`] changes the key order of the results.
fn resorts(order: SortOrder, target: SortTarget) -> bool {
    !matches!((order, target), (SortOrder::None | SortOrder::Ascend, SortTarget::Key))
}

/// A stored `mvccpb.KeyValue` without field 5 (the value): decoding skips the value's
/// bytes instead of copying them (tags as in `kv.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValueHead {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// etcd's ordering rules: results come in key order; a non-key target with no order means
/// ascending; key + ascending needs no work. Sorting is stable, so ties stay in key order
/// (what etcd's insertion sort yields for small results).
fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (SortOrder::Ascend, SortTarget::Key) => return,
        (o, _) => o,
    };
    let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(cmp),
    }
}
