//! Raft snapshots of the state machine: taking one ([`Store::snapshot_bytes`],
//! [`Store::snapshot`]) and installing one ([`Store::restore`]). The bytes are the backend
//! snapshot stream (format in `snapshot.rs`): every bucket, so the Meta values (applied
//! index, revisions, member list) travel with the data they describe.
//!
//! # Taking a snapshot
//! Under the apply lock, so no flush lands meanwhile, the store takes a backend
//! [`ReadView`](crate::backend::ReadView): it holds exactly the state of `flushed_index`,
//! which is also the `applied_index` the stream's Meta bucket carries; that is the index
//! returned. Applies staged but not yet flushed (not committed or published yet) are not
//! in it. The scan then runs from the view with no lock held, beside applies.
//! [`Store::read_view`] (backups, Hash), which needs no index of its own (the view's
//! Meta bucket carries it), does not take the apply lock across the backend's commit:
//! it syncs the backend beside applies and pins the last commit.
//!
//! Against the compactor, which deletes unneeded revisions at or below a scheduled
//! compaction in batches and then writes `compact_finished`: a view taken between two of
//! its batches holds a state whose `compact_finished` is below `compact_scheduled`, so the
//! member installing it re-runs that compaction and ends with the same contents. (A view
//! is one consistent state, so the retries a scan of the live backend needed are gone.)

//! # Installing a snapshot
//! 1. Verify, touching nothing: parse the whole stream and check its CRC (`snapshot.rs`),
//!    refuse trailing bytes and duplicate entries, force `applied_index` to the Raft index,
//!    and rebuild the in-memory state from the image (`rebuild.rs`), which decodes every
//!    entry. A bad snapshot is refused here and the store is unchanged and usable.
//! 2. Under the apply lock (no apply, commit or snapshot runs meanwhile): stop the
//!    compactor and wait for its thread (it writes nothing more, so it cannot delete
//!    restored revisions), then diff the backend against the image into one
//!    [`WriteBatch`]: a delete for every key the image lacks, a put for every entry that
//!    is new or differs. Unchanged entries (most of them, for a follower slightly behind)
//!    cost no write.
//! 3. Under the write side of the store's `gate`: write the batch (atomic: after a crash
//!    the backend holds the old state or the new one, see `backend.rs`), sync it, then
//!    replace the key index, the lessor (leases and attachments), the apply state
//!    (whatever was staged or unpublished is dropped), the published revision, compaction
//!    floor and applied index, the member list, the alarms and the durable index, and record the
//!    restore for the watch hub ([`crate::watch::WatchHub::resync_after_restore`]).
//! 4. Start a new compactor over the restored state, re-scheduling a compaction the
//!    snapshot records as scheduled but not finished.
//!
//! From step 2 on every failure is fatal and sticky (the store refuses everything after
//! it), as any failed backend write is.
//!
//! Readers: every read of the index and the backend (`range`, `events_between`) holds the
//! read side of `gate`, and step 3 holds its write side from the backend write to the last
//! swap, so a read sees the whole old state or the whole new one. Lease queries read the
//! lessor alone, swapped in one assignment under its own lock.

use std::collections::BTreeMap;

use crate::backend::{write_snapshot, Backend, Bucket, ReadView, ScanFn, WriteBatch};
use crate::compactor::Compactor;
use crate::error::{Error, Result};
use crate::rebuild::{rebuild, Contents, Rebuilt};
use crate::snapshot::read_snapshot;
use crate::store::{ApplyState, Store, META_APPLIED_INDEX};

/// A verified snapshot: every bucket's entries, in key order.
struct Image {
    buckets: [BTreeMap<Vec<u8>, Vec<u8>>; 3],
}

fn slot(bucket: Bucket) -> usize {
    match bucket {
        Bucket::Key => 0,
        Bucket::Meta => 1,
        Bucket::Lease => 2,
    }
}

impl Image {
    /// Parses and verifies a whole stream (see the module docs, step 1).
    fn parse(data: &[u8]) -> Result<Image> {
        let mut input = data;
        let entries = read_snapshot(&mut input)?;
        if !input.is_empty() {
            return Err(Error::corrupt("snapshot", format!("{} bytes after the trailer", input.len())));
        }
        let mut image = Image { buckets: Default::default() };
        for (bucket, k, v) in entries {
            if image.buckets[slot(bucket)].insert(k, v).is_some() {
                return Err(Error::corrupt("snapshot", format!("duplicate entry in bucket {bucket:?}")));
            }
        }
        Ok(image)
    }

    fn bucket(&self, bucket: Bucket) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.buckets[slot(bucket)]
    }
}

impl Contents for Image {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.bucket(bucket).get(key).cloned())
    }

    fn scan_all(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        for (k, v) in self.bucket(bucket) {
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

/// The batch turning the backend's contents into `image`'s: one ordered merge of each
/// bucket's backend entries with the image's.
fn diff(backend: &dyn Backend, image: &Image) -> Result<WriteBatch> {
    let mut batch = WriteBatch::default();
    for bucket in Bucket::ALL {
        let mut want = image.bucket(bucket).iter().peekable();
        backend.scan(bucket, &[], None, &mut |k, v| {
            // image entries before `k` are missing from the backend
            while let Some((wk, wv)) = want.next_if(|(wk, _)| wk.as_slice() < k) {
                batch.put(bucket, wk.clone(), wv.clone());
            }
            match want.next_if(|(wk, _)| wk.as_slice() == k) {
                Some((_, wv)) if wv.as_slice() == v => {}
                Some((wk, wv)) => batch.put(bucket, wk.clone(), wv.clone()),
                None => batch.delete(bucket, k.to_vec()),
            }
            Ok(true)
        })?;
        for (wk, wv) in want {
            batch.put(bucket, wk.clone(), wv.clone());
        }
    }
    Ok(batch)
}

impl Store {
    /// A snapshot of the whole state as bytes, with the applied index it reflects: the
    /// stream's own Meta `applied_index`. The apply lock is held only to take a backend
    /// view (module docs), so no apply lands between the index and the data; the scan
    /// itself runs beside applies.
    pub fn snapshot_bytes(&self) -> Result<(u64, Vec<u8>)> {
        let (index, view) = self.snapshot_view()?;
        let mut buf = Vec::new();
        write_snapshot(view.as_ref(), &mut buf)?;
        Ok((index, buf))
    }

    /// A backend view holding exactly the state of `flushed_index`, with that index.
    fn snapshot_view(&self) -> Result<(u64, Box<dyn ReadView>)> {
        let st = self.apply.lock();
        if self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        match self.backend.read_view() {
            Ok(view) => Ok((st.flushed_index, view)),
            Err(e) => {
                if e.is_fatal() {
                    self.failed.store(true, std::sync::atomic::Ordering::Release);
                }
                Err(e)
            }
        }
    }

    /// A consistent view of the whole store holding at least every apply published when
    /// called (Maintenance.Snapshot writes a backup from it, Hash hashes it): the backend
    /// is synced as [`Store::sync_backend`] does, beside applies, then its last commit
    /// is pinned; no apply waits for the fdatasync. The view's own Meta `applied_index`
    /// tells which index it holds.
    pub fn read_view(&self) -> Result<Box<dyn ReadView>> {
        self.sync_backend()?;
        if self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        self.backend.synced_view()
    }

    /// Streams [`Store::snapshot_bytes`]'s stream to `out` (Maintenance.Snapshot) from a
    /// backend view; returns its length. A slow `out` holds no lock of the store.
    pub fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64> {
        let (_, view) = self.snapshot_view()?;
        write_snapshot(view.as_ref(), out)
    }

    /// Replaces the whole state with `data`, a stream [`Store::snapshot_bytes`] produced on
    /// another member, taken at Raft index `index` (module docs). On return the restored
    /// state is durable, [`Store::applied_index`] and [`Store::durable_index`] are
    /// `index`, and readers see it. A stream that does not verify or decode is refused
    /// with [`Error::Corrupt`] and the store left unchanged; a backend failure while
    /// installing stops the store (fatal, sticky). Call it from the applying thread, and
    /// let the watch hub know afterwards ([`crate::watch::WatchHub::resync_after_restore`]).
    pub fn restore(&self, index: u64, data: &[u8]) -> Result<()> {
        let mut image = Image::parse(data)?;
        image.buckets[slot(Bucket::Meta)].insert(META_APPLIED_INDEX.to_vec(), index.to_be_bytes().to_vec());
        let rebuilt = rebuild(&image, self.cfg.min_lease_ttl)?;

        let mut st = self.apply.lock();
        if self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        let result = self.install_locked(&mut st, &image, rebuilt, index);
        if let Err(e) = &result {
            tracing::error!(index, error = %e, "installing a snapshot failed; the store is stopped");
            self.failed.store(true, std::sync::atomic::Ordering::Release);
        }
        result
    }

    /// Steps 2 to 4 of an install (module docs); every error is fatal.
    fn install_locked(&self, st: &mut ApplyState, image: &Image, r: Rebuilt, index: u64) -> Result<()> {
        use std::sync::atomic::Ordering::Release;
        let old = self.compactor.lock().take();
        if let Some(c) = old {
            c.stop();
        }
        let batch = diff(self.backend.as_ref(), image)?;
        let changes = batch.ops.len();
        let (rev, scheduled, finished) = (r.current_rev, r.compact_scheduled, r.compact_finished);
        {
            let _gate = self.gate.write();
            self.backend.write(batch)?;
            self.backend.sync()?;
            self.index.replace(r.index);
            *self.lessor.write() = r.lessor;
            *st = ApplyState::new(index, rev, scheduled);
            *self.members.lock() = r.members;
            *self.alarms.write() = r.alarms;
            *self.auth.write() = std::sync::Arc::new(crate::auth::AuthView::new(r.auth));
            self.compact_rev.store(scheduled, Release);
            self.committed_rev.store(rev, Release);
            self.applied_index.store(index, Release);
            let mut mark = self.restored.lock();
            mark.count += 1;
            mark.revision = rev;
            self.durable_index.store(index, Release);
        }
        let compactor = Compactor::start(self.index.clone(), self.backend.clone(), finished)?;
        if scheduled > finished {
            compactor.schedule(scheduled);
        }
        *self.compactor.lock() = Some(compactor);
        tracing::info!(
            index,
            revision = rev,
            compact_rev = scheduled,
            changes,
            keys = self.index.len(),
            "snapshot restored"
        );
        Ok(())
    }

    /// How many restores the store went through since it was opened, and the revision the
    /// last one left it at (the watch hub compares it with what it has seen).
    pub(crate) fn restore_mark(&self) -> crate::store::RestoreMark {
        *self.restored.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sled_backend::SledBackend;

    fn image(entries: &[(Bucket, &str, &str)]) -> Image {
        let mut im = Image { buckets: Default::default() };
        for (b, k, v) in entries {
            im.buckets[slot(*b)].insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        im
    }

    #[test]
    fn diff_writes_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let be = SledBackend::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for (k, v) in [("a", "1"), ("b", "2"), ("d", "4"), ("f", "6")] {
            b.put(Bucket::Key, k.into(), v.into());
        }
        b.put(Bucket::Lease, b"x".to_vec(), b"y".to_vec());
        be.write(b).unwrap();
        let want = image(&[
            (Bucket::Key, "0", "0"),
            (Bucket::Key, "b", "2"),
            (Bucket::Key, "c", "3"),
            (Bucket::Key, "d", "X"),
            (Bucket::Key, "g", "7"),
            (Bucket::Meta, "m", "1"),
        ]);
        let batch = diff(&be, &want).unwrap();
        use crate::backend::BatchOp::{Delete, Put};
        let p = |b, k: &str, v: &str| Put(b, k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let d = |b, k: &str| Delete(b, k.as_bytes().to_vec());
        assert_eq!(
            batch.ops,
            vec![
                p(Bucket::Key, "0", "0"),
                d(Bucket::Key, "a"),
                p(Bucket::Key, "c", "3"),
                p(Bucket::Key, "d", "X"),
                d(Bucket::Key, "f"),
                p(Bucket::Key, "g", "7"),
                p(Bucket::Meta, "m", "1"),
                d(Bucket::Lease, "x"),
            ]
        );
        be.write(batch).unwrap();
        for bucket in Bucket::ALL {
            let mut got = BTreeMap::new();
            be.scan(bucket, &[], None, &mut |k, v| {
                got.insert(k.to_vec(), v.to_vec());
                Ok(true)
            })
            .unwrap();
            assert_eq!(&got, want.bucket(bucket), "{bucket:?}");
        }
    }

    #[test]
    fn parse_refuses_trailing_bytes_and_duplicates() {
        let mut buf = Vec::new();
        let mut w = crate::snapshot::SnapshotWriter::new(&mut buf).unwrap();
        w.entry(Bucket::Key, b"k", b"v").unwrap();
        w.finish().unwrap();
        assert!(Image::parse(&buf).is_ok());
        let mut long = buf.clone();
        long.push(0);
        assert!(matches!(Image::parse(&long), Err(Error::Corrupt { .. })));

        let mut dup = Vec::new();
        let mut w = crate::snapshot::SnapshotWriter::new(&mut dup).unwrap();
        w.entry(Bucket::Key, b"k", b"v").unwrap();
        w.entry(Bucket::Key, b"k", b"w").unwrap();
        w.finish().unwrap();
        assert!(matches!(Image::parse(&dup), Err(Error::Corrupt { .. })));
    }
}
