//! A cairn read view → an etcd db file, streamed (module docs in `mod.rs` give both
//! schemas): what Maintenance.Snapshot sends and `cairn snapshot export-etcd` writes.
//!
//! [`EtcdExport::plan`] reads the view once to lay the file out (`bbolt::stream`: the
//! length is known before the first byte is sent), [`EtcdExport::write`] reads it again
//! and writes the pages in order; memory stays bounded whatever the data set's size.
//! Both passes read the key bucket with the view's uncached whole-bucket scans
//! (`ReadView::scan_all_uncached`), so a backup does not evict the writers' cached
//! nodes; the layout pass takes only the keys and the values' lengths
//! (`ReadView::scan_value_lens`: no value is copied or checksummed there), the write
//! pass checks every leaf it reads, and `bbolt::stream` refuses a second pass that does
//! not match the layout, so a view that changed or a damaged page never makes a file.
//!
//! Translation, bucket by bucket (etcd's names, in the order of the file):
//! * `alarm`: each active alarm's encoded `AlarmMember` as the key, an empty value;
//! * `auth`: `authEnabled` (one byte, 1 or 0) and `authRevision` (u64 BE);
//!   `authRoles`/`authUsers`: name → `authpb.Role`/`authpb.User` (bcrypt hashes as stored);
//! * `cluster`: empty (etcd records its cluster version itself once it runs);
//! * `key`: cairn's key bucket as is (the same revision keys and `KeyValue` values);
//! * `lease`: ID → `leasepb.Lease` (cairn's record has the same three fields);
//! * `members`/`members_removed`: cairn's member table as etcd writes it (hex ID →
//!   etcd's member JSON, hex ID → `removed`); etcd's and cairn's restores replace them;
//! * `meta`: `consistent_index` (cairn's applied index), and `scheduledCompactRev` /
//!   `finishedCompactRev` when a compaction happened.
//!
//! Nothing else of cairn's state is needed to restore it (import reads these buckets
//! back, `import.rs`): the store revision is derived from the key bucket and the
//! compaction by both etcd and cairn, so no bucket of cairn's own is added.

use std::collections::BTreeMap;
use std::io::Write;

use cairn_proto::cairnpb::{AlarmList, AuthState, LeaseRecord, MemberTable};
use cairn_proto::json::JsonStyle;
use cairn_proto::leasepb;
use prost::Message;

use super::{EtcdDbError, BUCKET_KEY, BUCKET_LEASE, BUCKET_META};
use super::{META_CONSISTENT_INDEX, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};
use crate::alarm::META_ALARMS;
use crate::backend::{Bucket, ReadView, ScanFn};
use crate::bbolt::{plan, write_planned, BucketSink, Plan, DEFAULT_PAGE_SIZE};
use crate::revision::Revision;
use crate::snapshot::read_snapshot;
use crate::store::{META_APPLIED_INDEX, META_AUTH, META_COMPACT_FINISHED, META_COMPACT_SCHEDULED, META_MEMBERS};

/// etcd's auth bucket keys.
pub(crate) const AUTH_ENABLED: &[u8] = b"authEnabled";
pub(crate) const AUTH_REVISION: &[u8] = b"authRevision";

/// A small bucket's entries, in key order.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A visitor of a bucket's entries that may fail.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), EtcdDbError> + 'a;

/// A visitor of a bucket's keys and value lengths that may fail.
type VisitLen<'a> = dyn FnMut(&[u8], usize) -> Result<(), EtcdDbError> + 'a;

/// The buckets made from cairn's meta bucket (small: a few entries each).
struct Small {
    alarm: Entries,
    auth: Entries,
    auth_roles: Entries,
    auth_users: Entries,
    members: Entries,
    members_removed: Entries,
    meta: Entries,
}

fn meta_i64(view: &dyn ReadView, key: &[u8]) -> Result<Option<i64>, EtcdDbError> {
    let Some(v) = view.get(Bucket::Meta, key).map_err(EtcdDbError::BadStream)? else { return Ok(None) };
    let b: [u8; 8] = v.as_slice().try_into().map_err(|_| {
        EtcdDbError::BadStream(crate::Error::corrupt("meta", format!("{}: {} bytes", String::from_utf8_lossy(key), v.len())))
    })?;
    Ok(Some(i64::from_be_bytes(b)))
}

fn decode<M: Message + Default>(view: &dyn ReadView, key: &[u8]) -> Result<Option<M>, EtcdDbError> {
    match view.get(Bucket::Meta, key).map_err(EtcdDbError::BadStream)? {
        None => Ok(None),
        Some(v) => Ok(Some(M::decode(v.as_slice()).map_err(|e| {
            EtcdDbError::BadStream(crate::Error::corrupt("meta", format!("{}: {e}", String::from_utf8_lossy(key))))
        })?)),
    }
}

fn sorted(mut e: Entries) -> Entries {
    e.sort();
    e
}

impl Small {
    fn of(view: &dyn ReadView) -> Result<Small, EtcdDbError> {
        let alarms: AlarmList = decode(view, META_ALARMS)?.unwrap_or_default();
        let alarm = sorted(alarms.alarms.iter().map(|a| (a.encode_to_vec(), Vec::new())).collect());
        let auth_state: AuthState = decode(view, META_AUTH)?.unwrap_or_default();
        let auth = vec![
            (AUTH_ENABLED.to_vec(), vec![u8::from(auth_state.enabled)]),
            (AUTH_REVISION.to_vec(), auth_state.revision.max(1).to_be_bytes().to_vec()),
        ];
        let auth_roles = sorted(auth_state.roles.iter().map(|r| (r.name.clone(), r.encode_to_vec())).collect());
        let auth_users = sorted(auth_state.users.iter().map(|u| (u.name.clone(), u.encode_to_vec())).collect());
        let table: MemberTable = decode(view, META_MEMBERS)?.unwrap_or_default();
        let members = sorted(table.members.iter().map(|m| (format!("{:x}", m.id).into_bytes(), member_json(m).into_bytes())).collect());
        let members_removed = sorted(table.removed.iter().map(|id| (format!("{id:x}").into_bytes(), b"removed".to_vec())).collect());

        let applied = meta_i64(view, META_APPLIED_INDEX)?.unwrap_or(0);
        let mut meta = vec![(META_CONSISTENT_INDEX.to_vec(), (applied as u64).to_be_bytes().to_vec())];
        // a compaction at 0 (or none) removes nothing; etcd records none then
        for (theirs, ours) in [(META_SCHEDULED_COMPACT, META_COMPACT_SCHEDULED), (META_FINISHED_COMPACT, META_COMPACT_FINISHED)] {
            if let Some(rev) = meta_i64(view, ours)?.filter(|&r| r > 0) {
                meta.push((theirs.to_vec(), Revision::new(rev, 0).to_bytes(false)));
            }
        }
        Ok(Small { alarm, auth, auth_roles, auth_users, members, members_removed, meta: sorted(meta) })
    }
}

/// etcd's member JSON (`membership.Member` through Go's `encoding/json`: fields in
/// declaration order, empty name and client URLs and a false learner flag left out).
fn member_json(m: &cairn_proto::cairnpb::MemberRecord) -> String {
    let list = |v: &[String]| v.iter().map(|s| json_string(s)).collect::<Vec<_>>().join(",");
    let mut s = format!("{{\"id\":{},\"peerURLs\":[{}]", m.id, list(&m.peer_urls));
    if m.is_learner {
        s.push_str(",\"isLearner\":true");
    }
    if !m.name.is_empty() {
        s.push_str(&format!(",\"name\":{}", json_string(&m.name)));
    }
    if !m.client_urls.is_empty() {
        s.push_str(&format!(",\"clientURLs\":[{}]", list(&m.client_urls)));
    }
    s.push('}');
    s
}

/// A JSON string as Go's encoding/json writes it (HTML-safe: `<`, `>` and `&` escaped too).
fn json_string(s: &str) -> String {
    cairn_proto::json::json_string(s, JsonStyle::GoMarshal)
}

/// An etcd db file of a read view, laid out and ready to be written (module docs).
pub struct EtcdExport<'v> {
    view: &'v dyn ReadView,
    small: Small,
    plan: Plan,
}

impl<'v> EtcdExport<'v> {
    /// The first pass over `view`: reads its meta bucket and lays out every page.
    pub fn plan(view: &'v dyn ReadView) -> Result<EtcdExport<'v>, EtcdDbError> {
        let small = Small::of(view)?;
        let plan = plan(DEFAULT_PAGE_SIZE, &mut |sink| feed(view, &small, sink, Pass::Layout))?;
        Ok(EtcdExport { view, small, plan })
    }

    /// The db file's length in bytes (without a SHA-256 trailer).
    pub fn db_len(&self) -> u64 {
        self.plan.file_len()
    }

    /// The second pass: writes the db file ([`EtcdExport::db_len`] bytes) to `out`.
    pub fn write(&self, out: &mut dyn Write) -> Result<(), EtcdDbError> {
        write_planned(&self.plan, &mut |sink| feed(self.view, &self.small, sink, Pass::Write), out)
    }
}

/// Which pass of the export a feed is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// [`plan`]: keys and value lengths are enough.
    Layout,
    /// [`write_planned`]: the values, checked.
    Write,
}

/// Feeds every etcd bucket, in name order, to `sink`.
fn feed(view: &dyn ReadView, small: &Small, sink: &mut dyn BucketSink, pass: Pass) -> Result<(), EtcdDbError> {
    let put_all = |sink: &mut dyn BucketSink, name: &[u8], entries: &Entries| -> Result<(), EtcdDbError> {
        sink.bucket(name)?;
        for (k, v) in entries {
            sink.entry(k, v)?;
        }
        Ok(())
    };
    put_all(sink, b"alarm", &small.alarm)?;
    put_all(sink, b"auth", &small.auth)?;
    put_all(sink, b"authRoles", &small.auth_roles)?;
    put_all(sink, b"authUsers", &small.auth_users)?;
    put_all(sink, b"cluster", &Vec::new())?;
    sink.bucket(BUCKET_KEY)?;
    // the key bucket's values go as they are: the layout needs only their lengths
    match pass {
        Pass::Layout => scan_lens(view, Bucket::Key, &mut |k, n| Ok(sink.entry_len(k, n)?))?,
        Pass::Write => scan(view, Bucket::Key, &mut |k, v| Ok(sink.entry(k, v)?))?,
    }
    sink.bucket(BUCKET_LEASE)?;
    // lease records are re-encoded (and few): both passes decode them
    scan(view, Bucket::Lease, &mut |k, v| {
        let r = LeaseRecord::decode(v)?;
        let l = leasepb::Lease { id: r.id, ttl: r.ttl, remaining_ttl: r.remaining_ttl };
        Ok(sink.entry(k, &l.encode_to_vec())?)
    })?;
    put_all(sink, b"members", &small.members)?;
    put_all(sink, b"members_removed", &small.members_removed)?;
    put_all(sink, BUCKET_META, &small.meta)
}

/// Scans a whole bucket of `view` (uncached), stopping at the first error of `visit`.
fn scan(view: &dyn ReadView, bucket: Bucket, visit: &mut Visit<'_>) -> Result<(), EtcdDbError> {
    let mut failed = None;
    view.scan_all_uncached(bucket, &mut |k, v| Ok(keep_going(visit(k, v), &mut failed))).map_err(EtcdDbError::BadStream)?;
    failed.map_or(Ok(()), Err)
}

/// [`scan`] of the keys and the values' lengths only (`ReadView::scan_value_lens`).
fn scan_lens(view: &dyn ReadView, bucket: Bucket, visit: &mut VisitLen<'_>) -> Result<(), EtcdDbError> {
    let mut failed = None;
    view.scan_value_lens(bucket, &mut |k, n| Ok(keep_going(visit(k, n), &mut failed))).map_err(EtcdDbError::BadStream)?;
    failed.map_or(Ok(()), Err)
}

/// After `Ok`, `true`: scan on; after `Err`, keeps the error in `failed` and stops.
fn keep_going(r: Result<(), EtcdDbError>, failed: &mut Option<EtcdDbError>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            *failed = Some(e);
            false
        }
    }
}

/// A cairn snapshot stream's entries as a read view (each bucket sorted by key).
struct EntriesView(BTreeMap<(u8, Vec<u8>), Vec<u8>>);

impl ReadView for EntriesView {
    fn get(&self, bucket: Bucket, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        Ok(self.0.get(&(bucket as u8, key.to_vec())).cloned())
    }

    fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> crate::Result<()> {
        for ((b, k), v) in self.0.range((bucket as u8, start.to_vec())..) {
            if *b != bucket as u8 || end.is_some_and(|e| k.as_slice() >= e) || !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

/// The etcd db (a bare bbolt file, as etcd's `member/snap/db`) holding the state of the
/// cairn snapshot stream `stream` ([`crate::Store::snapshot_bytes`]), in memory: for
/// converting a saved cairn-format backup (`cairn snapshot export-etcd`) and for tests.
pub fn export_db(stream: &[u8]) -> Result<Vec<u8>, EtcdDbError> {
    let mut input = stream;
    let entries = read_snapshot(&mut input).map_err(EtcdDbError::BadStream)?;
    for (bucket, k, _) in &entries {
        if *bucket == Bucket::Key {
            Revision::from_bytes(k).map_err(EtcdDbError::BadStream)?;
        }
    }
    let view = EntriesView(entries.into_iter().map(|(b, k, v)| ((b as u8, k), v)).collect());
    let export = EtcdExport::plan(&view)?;
    let mut out = Vec::with_capacity(export.db_len() as usize);
    export.write(&mut out)?;
    Ok(out)
}

/// [`export_db`] followed by the db's SHA-256: the snapshot file `etcdctl snapshot
/// save` would have written, which `etcdctl snapshot status` and `restore` accept.
pub fn export_snapshot(stream: &[u8]) -> Result<Vec<u8>, EtcdDbError> {
    Ok(super::append_sha256(export_db(stream)?))
}
