//! Reading the store's history back as watch events (etcd: `syncWatchers` reading
//! `[minRev, curRev]` from the key bucket in `watchable_store.go`).
//!
//! The key bucket is keyed by revision (see `revision.rs`), so the changes of revisions
//! `from..=to` are one ordered scan of `[Revision(from, 0), Revision(to + 1, 0))`. Every
//! entry is a change exactly as [`Store::commit`] reported it: a put's value is the stored
//! `KeyValue`; a tombstone is stored as `KeyValue { key }` and comes back with its
//! `mod_revision` set from the revision, as etcd's delete events carry it.
//!
//! Compaction: a physical compaction at `C` deletes entries at or below `C` while a scan
//! may be running. The floor is checked before and after the scan; a window starting below
//! the floor seen after the scan may have lost entries and is refused as
//! [`Error::Compacted`], never returned with silent gaps.

use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use crate::backend::Bucket;
use crate::error::{Error, Result};
use crate::revision::Revision;
use crate::store::Store;
use crate::write_txn::Change;

/// Changes of consecutive revisions read back from the backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// `(revision, its changes in sub-revision order)`, increasing revisions; revisions
    /// with no stored change (none in practice) are absent.
    pub revisions: Vec<(i64, Vec<Change>)>,
    /// Every revision up to and including this one was read completely (the scan stops at
    /// a revision boundary once `byte_budget` is spent, so this may be below `to`).
    pub through: i64,
}

impl Store {
    /// The changes of every committed revision in `from..=to`, whole revisions only, stopping
    /// after the first revision that takes the values read past `byte_budget` bytes
    /// (`through` says how far it got; at least one revision is always read).
    ///
    /// `to` is clamped to the committed revision: applied but not yet durable changes are
    /// never returned. `from` below 1 reads from the first revision.
    ///
    /// Errors: [`Error::Compacted`] when `from` is below the compaction floor (checked
    /// before and after the scan, see the module docs); backend and decoding errors.
    pub fn events_between(&self, from: i64, to: i64, byte_budget: usize) -> Result<History> {
        // a restore cannot swap the state under the scan (see `store.rs`, lock 2)
        let _gate = self.gate.read();
        let from = from.max(1);
        let to = to.min(self.revision());
        if from < self.compact_revision() {
            return Err(Error::Compacted);
        }
        if to < from {
            return Ok(History { revisions: Vec::new(), through: to });
        }
        let start = Revision::main_prefix_start(from);
        let end = Revision::main_prefix_start(to.saturating_add(1));
        let mut out: Vec<(i64, Vec<Change>)> = Vec::new();
        let mut bytes = 0usize;
        let mut through = to;
        self.backend.scan(Bucket::Key, &start, Some(&end), &mut |k, v| {
            let (rev, tombstone) = Revision::from_bytes(k)?;
            let is_new = out.last().is_none_or(|(r, _)| *r != rev.main);
            if is_new && bytes > byte_budget {
                // the previous revision is complete; stop at this boundary
                through = rev.main - 1;
                return Ok(false);
            }
            bytes += v.len();
            let mut kv = KeyValue::decode(v).map_err(|e| Error::corrupt("key bucket value", e))?;
            if tombstone {
                kv.mod_revision = rev.main;
            }
            let change = Change { kv, tombstone };
            match out.last_mut() {
                Some((r, changes)) if *r == rev.main => changes.push(change),
                _ => out.push((rev.main, vec![change])),
            }
            Ok(true)
        })?;
        if from < self.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok(History { revisions: out, through })
    }
}
