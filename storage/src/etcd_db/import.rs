//! etcd file → a cairn snapshot stream (module docs in `mod.rs` give both schemas).
//!
//! [`import_entries`] hands the stream's entries to a sink one at a time (`cairn snapshot
//! restore` writes them to a new store as they come, so a file of any size imports in
//! bounded memory when its pages are read on demand); [`import_db`] and
//! [`import_snapshot`] collect them into a stream in memory.
//!
//! The key and lease buckets are copied entry by entry straight from the file's pages
//! (no copy of a whole bucket in between); the key bucket's keys are checked to be revisions here and its
//! values are decoded by [`crate::Store::restore`]'s rebuild, which refuses the stream
//! whole if one does not. Meta translation, as etcd's own `store.restore` reads them:
//! * etcd's compacted revision is `finishedCompactRev`; a `scheduledCompactRev` above it
//!   is a compaction etcd would re-run at start: cairn's `compact_scheduled` is the
//!   greater one, `compact_finished` the finished one, so cairn re-runs it too;
//! * the store revision is the greater of the newest key revision and the finished
//!   compaction (every key at or below a compaction may have been removed).

use std::collections::BTreeMap;

use cairn_proto::authpb::{Role, User};
use cairn_proto::cairnpb::{AlarmList, AuthState, LeaseRecord};
use cairn_proto::etcdserverpb::AlarmMember;
use cairn_proto::leasepb;
use prost::Message;

use super::export::{Entries, Visit, AUTH_ENABLED, AUTH_REVISION};
use super::{split_sha256, EtcdDbError, BUCKET_KEY, BUCKET_LEASE, BUCKET_META};
use crate::alarm::META_ALARMS;
use super::{META_CONSISTENT_INDEX, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT, META_TERM};
use crate::backend::Bucket;
use crate::bbolt::{BboltFile, BucketData, BucketRef, Entry};
use crate::revision::{Revision, REV_BYTES_LEN};
use crate::snapshot::SnapshotWriter;
use crate::store::{META_APPLIED_INDEX, META_AUTH, META_COMPACT_FINISHED, META_COMPACT_SCHEDULED, META_CURRENT_REV};

/// An imported etcd file.
#[derive(Debug)]
pub struct Imported {
    /// A cairn snapshot stream of etcd's keys, leases and compaction, for
    /// [`crate::Store::restore`] (which sets the applied index it is given); empty from
    /// [`import_entries`], which hands the entries to its sink instead.
    pub snapshot: Vec<u8>,
    /// etcd's `consistent_index`: the Raft index the db reflects (0 if absent).
    pub consistent_index: u64,
    /// etcd's `term` (3.5 and later).
    pub term: Option<u64>,
    /// The store revision etcd would start at.
    pub revision: i64,
    /// etcd's compacted revision (`finishedCompactRev`; 0 if never compacted).
    pub compact_revision: i64,
    /// Entries of the key bucket (revisions, tombstones included).
    pub key_entries: u64,
    /// Leases.
    pub leases: u64,
    /// Whether the file carried a verified SHA-256 trailer.
    pub had_hash: bool,
    /// Every bucket other than key, meta and lease (members, cluster, alarm, auth...),
    /// verbatim, by name.
    pub other_buckets: BTreeMap<Vec<u8>, BucketData>,
}

/// Imports a snapshot file's bytes (a db with or without etcd's SHA-256 trailer, which
/// is verified when present).
pub fn import_snapshot(mut file: Vec<u8>) -> Result<Imported, EtcdDbError> {
    let (db, had_hash) = split_sha256(&file)?;
    let db_len = db.len();
    file.truncate(db_len);
    let mut imported = import_db(file)?;
    imported.had_hash = had_hash;
    Ok(imported)
}

/// Reads an 8-byte big-endian meta value.
fn meta_u64(meta: &BucketData, key: &'static [u8]) -> Result<Option<u64>, EtcdDbError> {
    let name = std::str::from_utf8(key).unwrap_or("?");
    match meta.items.get(key) {
        None => Ok(None),
        Some(crate::bbolt::Item::Bucket(_)) => Err(EtcdDbError::NestedBucket("meta")),
        Some(crate::bbolt::Item::Value(v)) => {
            let b: [u8; 8] = v.as_slice().try_into().map_err(|_| EtcdDbError::BadMeta { key: name, len: v.len() })?;
            Ok(Some(u64::from_be_bytes(b)))
        }
    }
}

/// Reads a revision meta value's main revision.
fn meta_rev(meta: &BucketData, key: &'static [u8]) -> Result<Option<i64>, EtcdDbError> {
    let name = std::str::from_utf8(key).unwrap_or("?");
    match meta.items.get(key) {
        None => Ok(None),
        Some(crate::bbolt::Item::Bucket(_)) => Err(EtcdDbError::NestedBucket("meta")),
        Some(crate::bbolt::Item::Value(v)) if v.len() != REV_BYTES_LEN => Err(EtcdDbError::BadMeta { key: name, len: v.len() }),
        Some(crate::bbolt::Item::Value(v)) => Ok(Some(Revision::from_bytes(v).map_err(EtcdDbError::BadRevision)?.0.main)),
    }
}

fn bucket<'a>(root: &BucketRef<'a>, name: &'static str) -> Result<Option<BucketRef<'a>>, EtcdDbError> {
    Ok(root.bucket(name.as_bytes())?)
}

/// cairn's `auth` and `alarms` meta records, when there is something to record.
type AuthAndAlarms = (Option<Vec<u8>>, Option<Vec<u8>>);

/// etcd's auth buckets as cairn's `auth` meta record, and its alarm bucket as cairn's
/// `alarms` record (`None`: the file has no such bucket or nothing in it).
fn auth_and_alarms(root: &BucketRef<'_>) -> Result<AuthAndAlarms, EtcdDbError> {
    let values = |name: &'static str| -> Result<Entries, EtcdDbError> {
        match bucket(root, name)? {
            None => Ok(Vec::new()),
            Some(b) => Ok(b.load()?.values().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()),
        }
    };
    let bad = |what: &'static str, e: prost::DecodeError| EtcdDbError::BadStream(crate::Error::corrupt(what, e));
    let mut state = AuthState { enabled: false, revision: 0, users: Vec::new(), roles: Vec::new() };
    for (k, v) in values("auth")? {
        if k == AUTH_ENABLED {
            state.enabled = v.as_slice() == [1];
        } else if k == AUTH_REVISION {
            let b: [u8; 8] = v.as_slice().try_into().map_err(|_| EtcdDbError::BadMeta { key: "authRevision", len: v.len() })?;
            state.revision = u64::from_be_bytes(b);
        }
    }
    for (_, v) in values("authUsers")? {
        state.users.push(User::decode(v.as_slice()).map_err(|e| bad("authUsers", e))?);
    }
    for (_, v) in values("authRoles")? {
        state.roles.push(Role::decode(v.as_slice()).map_err(|e| bad("authRoles", e))?);
    }
    // a fresh store's auth state (off, revision 1, nobody) is what no record means
    let fresh = !state.enabled && state.revision <= 1 && state.users.is_empty() && state.roles.is_empty();
    let auth = (!fresh).then(|| state.encode_to_vec());
    let mut alarms = Vec::new();
    for (k, _) in values("alarm")? {
        alarms.push(AlarmMember::decode(k.as_slice()).map_err(|e| bad("alarm", e))?);
    }
    // cairn keeps them sorted by type, then member
    alarms.sort_by_key(|a| (a.alarm, a.member_id));
    let alarms = (!alarms.is_empty()).then(|| AlarmList { alarms }.encode_to_vec());
    Ok((auth, alarms))
}

/// Where [`import_entries`] hands the cairn stream's entries, in stream order.
pub type EntrySink<'s> = dyn FnMut(Bucket, &[u8], &[u8]) -> crate::Result<()> + 's;

/// Visits every plain value of `bucket` in key order with a fallible `visit`; a nested
/// bucket is refused (etcd writes none in the buckets read this way).
fn each_value(
    bucket: &BucketRef<'_>,
    what: &'static str,
    visit: &mut Visit<'_>,
) -> Result<(), EtcdDbError> {
    let mut failed = None;
    bucket.for_each(&mut |k, e| {
        let r = match e {
            Entry::Value(v) => visit(k, v),
            Entry::Bucket(_) => Err(EtcdDbError::NestedBucket(what)),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) => {
                failed = Some(e);
                Ok(false)
            }
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// Imports a bare db file's bytes (etcd's `member/snap/db`, or a snapshot without its
/// trailer) into a cairn stream in memory.
pub fn import_db(db: Vec<u8>) -> Result<Imported, EtcdDbError> {
    let file = BboltFile::from_bytes(db)?;
    let mut snapshot = Vec::new();
    let mut w = SnapshotWriter::new(&mut snapshot).map_err(EtcdDbError::BadStream)?;
    let mut imported = import_entries(&file, &mut |b, k, v| w.entry(b, k, v))?;
    w.finish().map_err(EtcdDbError::BadStream)?;
    imported.snapshot = snapshot;
    Ok(imported)
}

/// Hands the cairn stream of an open etcd db to `sink`, entry by entry: the key bucket,
/// the leases, then cairn's meta records (the module docs say how they are derived). A
/// sink's error stops the import and is returned as [`EtcdDbError::Sink`].
pub fn import_entries(file: &BboltFile, sink: &mut EntrySink<'_>) -> Result<Imported, EtcdDbError> {
    let root = file.root();
    let key = bucket(&root, "key")?.ok_or(EtcdDbError::MissingBucket("key"))?;
    let meta = bucket(&root, "meta")?.ok_or(EtcdDbError::MissingBucket("meta"))?.load()?;
    let consistent_index = meta_u64(&meta, META_CONSISTENT_INDEX)?.unwrap_or(0);
    let term = meta_u64(&meta, META_TERM)?;
    let finished = meta_rev(&meta, META_FINISHED_COMPACT)?;
    let scheduled = meta_rev(&meta, META_SCHEDULED_COMPACT)?;

    let mut revision = 1i64;
    let mut key_entries = 0u64;
    each_value(&key, "key", &mut |k, v| {
        let (rev, _) = Revision::from_bytes(k).map_err(EtcdDbError::BadRevision)?;
        revision = revision.max(rev.main);
        sink(Bucket::Key, k, v).map_err(EtcdDbError::Sink)?;
        key_entries += 1;
        Ok(())
    })?;

    let mut leases = 0u64;
    if let Some(lease) = bucket(&root, "lease")? {
        each_value(&lease, "lease", &mut |k, v| {
            let l = leasepb::Lease::decode(v)?;
            if k != (l.id as u64).to_be_bytes() {
                return Err(EtcdDbError::LeaseKeyMismatch { id: l.id, key: k.to_vec() });
            }
            let rec = LeaseRecord { id: l.id, ttl: l.ttl, remaining_ttl: l.remaining_ttl };
            sink(Bucket::Lease, k, &rec.encode_to_vec()).map_err(EtcdDbError::Sink)?;
            leases += 1;
            Ok(())
        })?;
    }

    let (auth, alarms) = auth_and_alarms(&root)?;

    let compact_finished = finished.unwrap_or(-1);
    let compact_scheduled = scheduled.unwrap_or(-1).max(compact_finished);
    revision = revision.max(compact_finished);
    let mut meta_out = vec![
        (META_APPLIED_INDEX, consistent_index.to_be_bytes()),
        (META_CURRENT_REV, revision.to_be_bytes()),
    ];
    if compact_scheduled >= 0 {
        meta_out.push((META_COMPACT_SCHEDULED, compact_scheduled.to_be_bytes()));
    }
    if compact_finished >= 0 {
        meta_out.push((META_COMPACT_FINISHED, compact_finished.to_be_bytes()));
    }
    let mut meta_out: BTreeMap<&[u8], Vec<u8>> = meta_out.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
    if let Some(auth) = auth {
        meta_out.insert(META_AUTH, auth);
    }
    if let Some(alarms) = alarms {
        meta_out.insert(META_ALARMS, alarms);
    }
    for (k, v) in meta_out {
        sink(Bucket::Meta, k, &v).map_err(EtcdDbError::Sink)?;
    }

    let mut other_buckets = BTreeMap::new();
    let mut nested = Vec::new();
    root.for_each(&mut |name, e| {
        if let Entry::Bucket(b) = e {
            if ![BUCKET_KEY, BUCKET_META, BUCKET_LEASE].contains(&name) {
                nested.push((name.to_vec(), b));
            }
        }
        Ok(true)
    })?;
    for (name, b) in nested {
        other_buckets.insert(name, b.load()?);
    }
    Ok(Imported {
        snapshot: Vec::new(),
        consistent_index,
        term,
        revision,
        compact_revision: compact_finished.max(0),
        key_entries,
        leases,
        had_hash: false,
        other_buckets,
    })
}
