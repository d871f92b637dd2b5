//! Range reads over the key index and the backend, with etcd's semantics
//! (etcd: `applierV3backend.Range` and `storeTxnRead.rangeKeys`).

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
use crate::revision::Revision;

/// What a read needs: the index, the backend, the values a write transaction has staged
/// but not yet written, and the compaction floor.
pub(crate) struct ReadCtx<'a> {
    pub index: &'a TreeIndex,
    pub backend: &'a dyn Backend,
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
            Some(v) => KeyValue::decode(v.as_slice()).map_err(|e| Error::corrupt("key bucket value", e)),
            None if rev.main <= self.live_compact_rev.load(AtomicOrdering::Acquire) => Err(Error::Compacted),
            None => Err(Error::corrupt("key bucket", format!("revision {rev} named by the index is missing"))),
        }
    }

    /// The keys of `span` visible at `at` with their values (etcd's `Range` with no options).
    pub fn kvs(&self, span: &KeySpan<'_>, at: i64) -> Result<Vec<KeyValue>> {
        let (hits, _) = self.index.range(span, at, 0);
        hits.iter().map(|h| self.fetch(h.at.modified)).collect()
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
            let count = self.index.count(&span, rev);
            return Ok(RangeResponse { header, kvs: vec![], more: false, count });
        }
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let order = SortOrder::try_from(r.sort_order).map_err(|_| Error::InvalidSortOption)?;
        let target = SortTarget::try_from(r.sort_target).map_err(|_| Error::InvalidSortOption)?;
        // fetch everything when results are filtered or re-sorted, one extra otherwise so
        // `more` is known
        let fetch_limit = if order != SortOrder::None || filtered || r.limit <= 0 { 0 } else { r.limit as usize + 1 };
        let (hits, total) = self.index.range(&span, rev, fetch_limit);
        let mut kvs = Vec::with_capacity(hits.len());
        for h in &hits {
            let kv = self.fetch(h.at.modified)?;
            if keep(r, &kv) {
                kvs.push(kv);
            }
        }
        sort_kvs(&mut kvs, order, target);
        let mut more = false;
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
