//! Replaying an etcd member's log tail onto a store: the entries its WAL holds after the
//! db file's `consistent_index` (read with [`super::read_wal`]), applied as cairn's own
//! commands so the store ends where etcd's state machine would have after its restart.
//!
//! Each normal entry's data is an `etcdserverpb.InternalRaftRequest` (or, in 3.4, a v2
//! request, or nothing at all: a leader's first entry of its term). What changes the
//! keyspace or the leases is translated one to one ([`to_cairn`]): put, delete-range, txn,
//! compaction, lease grant, revoke and checkpoint. What does not travel, as with a restore
//! from etcd's snapshot (`mod.rs`): reads, logins, auth changes and alarms, which name
//! etcd's users and members; v2 requests (member attributes in 3.4), and conf changes,
//! which the importer reads for membership itself. The counts of each are in
//! [`Replayed`] so an importer can say what it left out.
//!
//! A request etcd answered with an error (a put with an unknown lease, say) fails here the
//! same way and changes nothing, as it did in etcd; only a fatal store error stops a replay.

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::raftpb::Entry;

use crate::error::Result;
use crate::Store;

/// `raftpb.Entry.Type` of a normal entry.
const ENTRY_NORMAL: i32 = 0;

/// What a replay did, by kind of entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Entries applied as cairn commands.
    pub applied: u64,
    /// Of those, requests that failed as they had in etcd (no change).
    pub failed: u64,
    /// Empty entries, v2 requests, reads and logins: nothing to carry.
    pub no_op: u64,
    /// Auth changes and alarms: not carried (module docs).
    pub not_carried: u64,
    /// Membership changes (for the importer to read).
    pub conf_changes: u64,
}

/// What one entry's data means for an import.
#[derive(Debug, PartialEq)]
pub enum Translated {
    /// A cairn command to apply.
    Apply(InternalRequest),
    /// Nothing to apply: an empty entry, a v2 request, a read or a login.
    NoOp,
    /// An auth change or alarm, which an import does not carry.
    NotCarried,
}

/// Translates a normal entry's data (module docs).
pub fn to_cairn(data: &[u8]) -> Translated {
    if data.is_empty() {
        return Translated::NoOp;
    }
    // a 3.4 v2 request (`etcdserverpb.Request`) does not decode as an internal request:
    // its field 3 is a path string starting with '/', which is no valid message
    // (its Txn decoded as cairn decodes a client's: as deep as `nested::MAX_TXN_DEPTH`)
    let Ok(r) = cairn_proto::nested::decode_internal_raft_request(data) else {
        return Translated::NoOp;
    };
    let request = if let Some(p) = r.put {
        Request::Put(p)
    } else if let Some(d) = r.delete_range {
        Request::DeleteRange(d)
    } else if let Some(t) = r.txn {
        Request::Txn(t)
    } else if let Some(c) = r.compaction {
        Request::Compaction(c)
    } else if let Some(g) = r.lease_grant {
        Request::LeaseGrant(g)
    } else if let Some(v) = r.lease_revoke {
        Request::LeaseRevoke(v)
    } else if let Some(c) = r.lease_checkpoint {
        Request::LeaseCheckpoint(c)
    } else if r.alarm.is_some()
        || r.auth_enable.is_some()
        || r.auth_disable.is_some()
        || r.auth_user_add.is_some()
        || r.auth_user_delete.is_some()
        || r.auth_user_change_password.is_some()
        || r.auth_user_grant_role.is_some()
        || r.auth_user_revoke_role.is_some()
        || r.auth_role_add.is_some()
        || r.auth_role_delete.is_some()
        || r.auth_role_grant_permission.is_some()
        || r.auth_role_revoke_permission.is_some()
    {
        return Translated::NotCarried;
    } else {
        return Translated::NoOp;
    };
    Translated::Apply(InternalRequest { id: r.id, request: Some(request), auth: None })
}

/// Applies `entries` to `store` in order, as commands at the store's next applied
/// indexes, then commits them (durable and visible). The store's applied index then
/// counts the applied commands, not etcd's Raft indexes: an importer resets it.
pub fn replay(store: &Store, entries: &[Entry]) -> Result<Replayed> {
    let mut out = Replayed::default();
    let mut index = store.applied_index();
    for e in entries {
        if e.r#type != ENTRY_NORMAL {
            out.conf_changes += 1;
            continue;
        }
        match to_cairn(&e.data) {
            Translated::Apply(req) => {
                index += 1;
                match store.apply(index, &req) {
                    Ok(_) => {}
                    Err(err) if err.is_fatal() => return Err(err),
                    Err(_) => out.failed += 1,
                }
                out.applied += 1;
            }
            Translated::NoOp => out.no_op += 1,
            Translated::NotCarried => out.not_carried += 1,
        }
    }
    store.commit()?;
    Ok(out)
}
