//! Starting on a data folder etcd wrote: the folder is imported in place, or refused with
//! the command that migrates it; it is never mistaken for an empty folder.
//!
//! ```text
//!  <data-dir>/member/snap/db     etcd's backend file (bbolt): keys, leases, members
//!  <data-dir>/member/wal/*.wal   etcd's log (or --wal-dir/*.wal, as etcd places it)
//!  <data-dir>/member/cairn       the store the import writes (through member/cairn.import,
//!                                renamed into place once complete)
//!  <data-dir>/member/identity    written by the member's first start right after, which
//!                                marks the import done: etcd's files are not read again
//! ```
//! etcd's files are left untouched, so the folder can still be given back to etcd (without
//! what cairn wrote since).
//!
//! An import, of a one-member etcd cluster (what a single control-plane kubeadm cluster
//! runs), or of any member `etcdctl snapshot restore` wrote and that never ran: its WAL
//! holds only the bootstrap conf changes, and every member restored from the same
//! snapshot holds the same data, so each imports its own folder and they form the
//! restored cluster (its membership then comes from those conf changes, not from the db's
//! `members` bucket, which etcd's restore leaves as the snapshot's source had it). A
//! member of a larger cluster that ran may not have applied what the others did, so it
//! is refused: each is rebuilt from one snapshot with `cairn snapshot restore`, as etcd's
//! own restore does. The import:
//! 1. the db file gives the keys with their history, the leases and the compaction, up to
//!    its `consistent_index` (`cairn_storage::etcd_db::import_db`);
//! 2. the WAL gives the member and cluster IDs and the entries after that index, which are
//!    replayed onto the store (`cairn_storage::etcd_db::replay`) — all of them: a lone
//!    member commits its whole log when it restarts, so etcd would have applied them too;
//! 3. the store's applied index is reset to 0 (a restore of its own state), since the
//!    member's Raft log starts anew, bootstrapped with etcd's member and cluster IDs.
//!
//! Users, roles and alarms in the db travel (`import_db` reads etcd's auth and alarm
//! buckets); changes to them in the WAL tail are not replayed (logged when there are).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_storage::bbolt::{BucketData, Item};
use cairn_storage::etcd_db::{import_db, read_wal, replay, Replayed};
use cairn_storage::{StorageEngine, Store, StoreConfig};
use cairn_proto::raftpb::ConfChange;
use prost::Message;
use tracing::{info, warn};

/// `raftpb.Entry.Type` of a conf change, and `ConfChange.type`s.
const ENTRY_CONF_CHANGE: i32 = 1;
const ADD_NODE: i32 = 0;
const REMOVE_NODE: i32 = 1;
const ADD_LEARNER: i32 = 3;

/// Why an etcd data folder is not imported.
#[derive(Debug, thiserror::Error)]
pub enum EtcdImportError {
    /// Reading a file failed.
    #[error("etcd data folder: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The db file does not read.
    #[error("etcd data folder: {0}")]
    Db(#[from] cairn_storage::etcd_db::EtcdDbError),
    /// The WAL does not read.
    #[error("etcd data folder: {0}")]
    Wal(#[from] cairn_storage::etcd_db::WalError),
    /// A members-bucket record that does not parse.
    #[error("etcd data folder: member record {0:?}: {1}")]
    BadMember(String, String),
    /// The cluster has another size than one.
    #[error(
        "{dir} holds a member of a {members}-member etcd cluster; cairn imports only a one-member \
         etcd folder in place. Save a snapshot from the etcd cluster (etcdctl snapshot save FILE) \
         and build each member's data folder with `cairn snapshot restore FILE --data-dir ... \
         --name ... --initial-cluster ... --initial-cluster-token ... --initial-advertise-peer-urls ...`"
    )]
    NotOneMember {
        /// The data folder.
        dir: PathBuf,
        /// Members after the log.
        members: usize,
    },
    /// The WAL belongs to a member the db does not list.
    #[error("etcd data folder: the WAL belongs to member {0:x}, which is not in the db's member list")]
    UnknownMember(u64),
    /// Writing the store failed.
    #[error("etcd data folder: writing cairn's store: {0}")]
    Store(#[from] cairn_storage::Error),
}

/// A member as etcd's members bucket and conf-change contexts hold it (JSON).
#[derive(Clone, Debug, serde::Deserialize)]
struct EtcdMember {
    id: u64,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(default)]
    name: String,
}

/// A member of the imported cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedMember {
    /// etcd's member ID.
    pub id: u64,
    /// Its name as etcd recorded it (may be empty).
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
}

/// The member an import produced.
#[derive(Debug)]
pub struct Imported {
    /// etcd's member ID, kept.
    pub member_id: u64,
    /// etcd's cluster ID, kept.
    pub cluster_id: u64,
    /// Its peer URLs as etcd recorded them.
    pub peer_urls: Vec<String>,
    /// Every member of the cluster (this one included), by ID.
    pub members: Vec<ImportedMember>,
}

/// Whether `data_dir` holds etcd's backend file.
pub fn holds_etcd_data(data_dir: &Path) -> bool {
    data_dir.join("member").join("snap").join("db").is_file()
}

/// Imports the etcd member in `data_dir` (its WAL in `wal_dir`, etcd's `--wal-dir`, or
/// `member/wal`) into `store_dir` (module docs).
pub fn import(data_dir: &Path, wal_dir: Option<&Path>, store_dir: &Path, engine: StorageEngine) -> Result<Imported, EtcdImportError> {
    let db_path = data_dir.join("member").join("snap").join("db");
    let db = std::fs::read(&db_path).map_err(|source| EtcdImportError::Io { path: db_path.clone(), source })?;
    let db = import_db(db)?;
    let wal_dir = wal_dir.map_or_else(|| data_dir.join("member").join("wal"), Path::to_owned);
    let wal = read_wal(&wal_dir)?;
    let tail = wal.entries_after(db.consistent_index);
    // a folder `etcdctl snapshot restore` wrote, never started: the log is the bootstrap
    let never_ran = !wal.entries.is_empty() && wal.entries.iter().all(|e| e.r#type == ENTRY_CONF_CHANGE);
    let (mut members, changes) = match never_ran {
        true => (BTreeMap::new(), &wal.entries[..]),
        false => (bucket_members(db.other_buckets.get(b"members".as_slice()))?, tail),
    };
    for e in changes.iter().filter(|e| e.r#type == ENTRY_CONF_CHANGE) {
        let Ok(cc) = ConfChange::decode(e.data.as_slice()) else { continue };
        match cc.r#type {
            ADD_NODE | ADD_LEARNER => {
                let m: Option<EtcdMember> = serde_json::from_slice(&cc.context).ok();
                let (peer_urls, name) = m.map(|m| (m.peer_urls, m.name)).unwrap_or_default();
                members.entry(cc.node_id).or_insert(EtcdMember { id: cc.node_id, peer_urls, name });
            }
            REMOVE_NODE => {
                members.remove(&cc.node_id);
            }
            _ => {}
        }
    }
    if members.len() != 1 && !(never_ran && !members.is_empty()) {
        return Err(EtcdImportError::NotOneMember { dir: data_dir.to_owned(), members: members.len() });
    }
    let all: Vec<ImportedMember> =
        members.values().map(|m| ImportedMember { id: m.id, name: m.name.clone(), peer_urls: m.peer_urls.clone() }).collect();
    let me = members.remove(&wal.node_id).ok_or(EtcdImportError::UnknownMember(wal.node_id))?;

    let tmp = store_dir.with_extension("import");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EtcdImportError::Io { path, source }
    };
    for stale in [&tmp, store_dir] {
        // a store without an identity beside it comes from an import cut short
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(io(stale))?;
        }
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let (revision, done) = {
        let mut cfg = StoreConfig::new(&tmp);
        cfg.engine = engine;
        let store = Store::open(cfg)?;
        store.restore(0, &db.snapshot)?;
        let done = replay(&store, tail)?;
        // the Raft log starts anew: the state, at applied index 0 (module docs)
        let (_, state) = store.snapshot_bytes()?;
        store.restore(0, &state)?;
        let revision = store.revision();
        // its files unlocked before the member opens them (a compaction left is re-run)
        store.close();
        drop(store);
        (revision, done)
    };
    std::fs::rename(&tmp, store_dir).map_err(io(store_dir))?;
    if let Some(parent) = store_dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
    }
    log_import(data_dir, &wal, db.consistent_index, revision, &done, &me);
    Ok(Imported { member_id: wal.node_id, cluster_id: wal.cluster_id, peer_urls: me.peer_urls, members: all })
}

fn log_import(
    dir: &Path,
    wal: &cairn_storage::etcd_db::EtcdWal,
    consistent_index: u64,
    revision: i64,
    done: &Replayed,
    me: &EtcdMember,
) {
    info!(
        data_dir = %dir.display(),
        member_id = %format!("{:016x}", wal.node_id),
        cluster_id = %format!("{:016x}", wal.cluster_id),
        name = %me.name,
        consistent_index,
        last_index = wal.entries.last().map_or(consistent_index, |e| e.index),
        replayed = done.applied,
        failed_as_in_etcd = done.failed,
        revision,
        "imported etcd data folder (etcd's files are left as they were)"
    );
    if done.not_carried > 0 {
        warn!(
            auth_or_alarm_entries = done.not_carried,
            "changes to users, roles and alarms in etcd's WAL after its db are not replayed: make them again"
        );
    }
}

/// The members bucket: hex ID → JSON member.
fn bucket_members(bucket: Option<&BucketData>) -> Result<BTreeMap<u64, EtcdMember>, EtcdImportError> {
    let mut out = BTreeMap::new();
    for (k, item) in bucket.map(|b| &b.items).into_iter().flatten() {
        let name = String::from_utf8_lossy(k).into_owned();
        let Item::Value(v) = item else {
            return Err(EtcdImportError::BadMember(name, "a nested bucket".into()));
        };
        let m: EtcdMember = serde_json::from_slice(v).map_err(|e| EtcdImportError::BadMember(name, e.to_string()))?;
        out.insert(m.id, m);
    }
    Ok(out)
}
