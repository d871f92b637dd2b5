//! The deterministic state machine: `apply(index, request)`.
//!
//! Determinism: every member applies the same entries in the same order and must reach
//! the same state and the same answers. So nothing here reads a clock, a random source,
//! a hash map's iteration order or any state outside the store; lease keys are revoked in
//! key order; lease IDs are chosen by the proposer, never here. Request errors are checked
//! before anything changes (see `txn.rs`), so an entry either applies whole or only
//! advances the applied index.
//!
//! Access control: while authentication is on, writes are checked here against the auth
//! state current at apply, as the user and auth revision the proposer recorded in the
//! entry (`InternalRequest.auth`): the same answer on every member, and a write proposed
//! before a revoke is refused (`auth/mod.rs`). Auth commands change that state
//! (`auth::apply_command`) and persist it under the Meta key `auth` in the same batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest, LeaseExpireRequest, LeaseRecord};
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse, DeleteRangeResponse, LeaseCheckpointRequest, LeaseCheckpointResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutResponse, ResponseHeader,
    TxnResponse,
};
use prost::Message;

use crate::alarm::{adds_data, refused_when_corrupt, META_ALARMS};
use crate::auth::{self, AuthApplied, AuthInfo, AuthView};
use crate::backend::{Bucket, WriteBatch};
use crate::error::{Error, Result};
use crate::lease::LeaseTable;
use crate::store::{Store, META_AUTH, META_COMPACT_SCHEDULED, META_MEMBERS};
use crate::txn;
use crate::write_txn::WriteTxn;

/// What applying one entry answered.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyResponse {
    /// Put.
    Put(PutResponse),
    /// DeleteRange.
    DeleteRange(DeleteRangeResponse),
    /// Txn.
    Txn(TxnResponse),
    /// Compaction (the floor moved; backend deletion follows in the background).
    Compaction(CompactionResponse),
    /// LeaseGrant.
    LeaseGrant(LeaseGrantResponse),
    /// LeaseRevoke.
    LeaseRevoke(LeaseRevokeResponse),
    /// LeaseCheckpoint.
    LeaseCheckpoint(LeaseCheckpointResponse),
    /// Alarm ACTIVATE / DEACTIVATE.
    Alarm(AlarmResponse),
    /// A batch of expired leases was revoked; the store revision after it.
    LeaseExpire {
        /// Revision after the revocations.
        revision: i64,
    },
    /// An auth command other than Authenticate was applied; the store revision (for the
    /// response header).
    Auth {
        /// The store revision.
        revision: i64,
    },
    /// A login was applied: `token` now names `user` on every member.
    Authenticated {
        /// The user.
        user: String,
        /// The simple token.
        token: String,
        /// The store revision.
        revision: i64,
    },
    /// The entry was at or below the applied index (a replay after restart): nothing done.
    Skipped,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

fn lease_key(id: i64) -> Vec<u8> {
    (id as u64).to_be_bytes().to_vec()
}

impl Store {
    /// Applies the log entry `index`. Changes reach the backend at the next
    /// [`Store::commit`] / [`Store::publish`] (one atomic write for the group), and are
    /// visible to readers only then. Must be called from one thread at a time, with increasing
    /// indexes. `Err` with [`Error::is_fatal`] means the store stopped; any other `Err` is
    /// the request's deterministic answer (the index still advanced).
    pub fn apply(&self, index: u64, req: &InternalRequest) -> Result<ApplyResponse> {
        let mut st = self.apply.lock();
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        if index <= st.applied_index {
            return Ok(ApplyResponse::Skipped);
        }
        let view = self.auth.read().clone();
        let who = req.auth.as_ref().map(|a| AuthInfo { username: a.username.clone(), revision: a.auth_revision });
        if let Some(out) = req.request.as_ref().and_then(|cmd| auth::apply_command(&view, who.as_ref(), cmd, index)) {
            st.applied_index = index;
            let (next, applied) = out?;
            if let Some(next) = next {
                st.staged.put(Bucket::Meta, META_AUTH.to_vec(), next.encode());
                *self.auth.write() = Arc::new(AuthView::new(next));
            }
            let revision = st.current_rev;
            return Ok(match applied {
                AuthApplied::Changed => ApplyResponse::Auth { revision },
                AuthApplied::Token { user, token } => ApplyResponse::Authenticated { user, token, revision },
            });
        }
        let mut lessor = self.lessor.write();
        if let Err(e) = check_permission(&view, who.as_ref(), &lessor, req.request.as_ref()) {
            st.applied_index = index;
            return Err(e.into());
        }
        let st = &mut *st;
        let mut tx = WriteTxn::new(self, &mut lessor, &mut st.overlay, st.current_rev, st.compact_rev);
        let mut extra = WriteBatch::default();
        // a CORRUPT alarm refuses writes and a NOSPACE alarm what adds data (`alarm.rs`;
        // the alarm set changes only under `apply`, so every member refuses alike)
        let (corrupt, capped) = {
            let alarms = self.alarms.read();
            let r = req.request.as_ref();
            (
                r.is_some_and(refused_when_corrupt) && alarms.has(AlarmType::Corrupt),
                r.is_some_and(adds_data) && alarms.has(AlarmType::Nospace),
            )
        };
        let result = match &req.request {
            None => Err(Error::EmptyRequest),
            Some(_) if corrupt => Err(Error::CorruptCluster),
            Some(_) if capped => Err(Error::NoSpace),
            Some(Request::Put(p)) => txn::put(&mut tx, p).map(ApplyResponse::Put),
            Some(Request::DeleteRange(d)) => txn::delete_range(&mut tx, d).map(ApplyResponse::DeleteRange),
            Some(Request::Txn(t)) => txn::txn(&mut tx, t).map(ApplyResponse::Txn),
            Some(Request::Compaction(c)) => {
                compaction(&mut st.compact_rev, &mut st.pending_compactions, st.current_rev, c, &mut extra)
                    .map(ApplyResponse::Compaction)
            }
            Some(Request::LeaseGrant(g)) => lease_grant(tx.lessor, g, st.current_rev, &mut extra),
            Some(Request::LeaseRevoke(r)) => lease_revoke(&mut tx, r, &mut extra),
            Some(Request::LeaseCheckpoint(c)) => lease_checkpoint(tx.lessor, c, st.current_rev, &mut extra),
            Some(Request::LeaseExpire(e)) => lease_expire(&mut tx, e, &mut extra),
            // the member table is the server's state machine's (it never reaches a store)
            Some(Request::MemberAttr(_)) => Err(Error::EmptyRequest),
            Some(Request::Alarm(a)) => Ok(self.apply_alarm(a, st.current_rev, &mut extra)),
            // answered by `auth::apply_command` above
            Some(
                Request::AuthEnable(_)
                | Request::AuthDisable(_)
                | Request::Authenticate(_)
                | Request::AuthUserAdd(_)
                | Request::AuthUserDelete(_)
                | Request::AuthUserChangePassword(_)
                | Request::AuthUserGrantRole(_)
                | Request::AuthUserRevokeRole(_)
                | Request::AuthRoleAdd(_)
                | Request::AuthRoleDelete(_)
                | Request::AuthRoleGrantPermission(_)
                | Request::AuthRoleRevokePermission(_),
            ) => Err(Error::EmptyRequest),
        };
        if let Err(e) = &result {
            if e.is_fatal() {
                self.failed.store(true, Ordering::Release);
                return Err(Error::Stopped);
            }
        }
        let (batch, rev, changes) = tx.finish();
        drop(lessor);
        st.staged.ops.extend(batch.ops);
        st.staged.ops.extend(extra.ops);
        st.applied_index = index;
        if !changes.is_empty() {
            st.current_rev = rev;
            st.uncommitted.push((rev, changes));
        }
        result
    }
}

/// Log entries that change no key, only the applied index (and the member list).
impl Store {
    /// Advances the applied index to `index` for a log entry that changes no key (a
    /// leader's empty entry, a configuration change). Staged like [`Store::apply`]: the
    /// index reaches the backend with the next [`Store::commit`] / [`Store::publish`] (in
    /// the same batch as the group's data) and [`Store::applied_index`] reports it then.
    /// Indexes only grow: `index` at or below the applied index is ignored, as `apply`
    /// skips a replayed entry. Deterministic: depends on nothing but `index`.
    pub fn note_applied(&self, index: u64) -> Result<()> {
        let mut st = self.apply.lock();
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        st.applied_index = st.applied_index.max(index);
        Ok(())
    }

    /// Applies the log entry `index` that sets the cluster's member list to `members` (an
    /// opaque blob the server encodes): staged under the Meta key `members` (see
    /// `store.rs`) in the same batch as the applied index, which advances as with
    /// [`Store::note_applied`]. Snapshots carry it; [`Store::members`] returns it at once.
    /// An `index` at or below the applied index is ignored (a replay).
    pub fn apply_members(&self, index: u64, members: &[u8]) -> Result<()> {
        let mut st = self.apply.lock();
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        if index <= st.applied_index {
            return Ok(());
        }
        st.staged.put(Bucket::Meta, META_MEMBERS.to_vec(), members.to_vec());
        st.applied_index = index;
        *self.members.lock() = Some(members.to_vec());
        Ok(())
    }

    /// The member list of the last applied [`Store::apply_members`] (applied, maybe not
    /// yet committed), or the one a restored snapshot carried; `None` if none ever was.
    pub fn members(&self) -> Option<Vec<u8>> {
        self.members.lock().clone()
    }
}

impl Store {
    /// Applies an alarm ACTIVATE/DEACTIVATE: the set changes (and is staged under Meta
    /// `alarms`, see `alarm.rs`) only when the request changes it. Called under `apply`.
    fn apply_alarm(&self, r: &AlarmRequest, rev: i64, batch: &mut WriteBatch) -> ApplyResponse {
        let mut alarms = self.alarms.write();
        let (listed, changed) = alarms.apply(r);
        if changed {
            batch.put(Bucket::Meta, META_ALARMS.to_vec(), alarms.encode());
            tracing::warn!(member = %format!("{:x}", r.member_id), alarm = r.alarm, action = r.action, "alarm changed");
        }
        ApplyResponse::Alarm(AlarmResponse { header: header(rev), alarms: listed })
    }
}

/// etcd's `authApplierV3` checks of a write, made before it changes anything: Put needs
/// write on its key, read too with `prev_kv`, and write on every key of the lease it
/// attaches; DeleteRange write (and read with `prev_kv`); Txn every compare and op;
/// LeaseRevoke write on every attached key. A no-op while auth is off.
fn check_permission(view: &AuthView, who: Option<&AuthInfo>, lessor: &LeaseTable, req: Option<&Request>) -> Result<(), auth::AuthError> {
    if !view.enabled() {
        return Ok(());
    }
    let lease_keys = |id: i64| lessor.get(id).map(|l| l.keys.iter()).into_iter().flatten();
    match req {
        Some(Request::Put(p)) => {
            view.check_put(who, &p.key)?;
            view.check_lease_keys(who, lease_keys(p.lease))?;
            if p.prev_kv {
                view.check_range(who, &p.key, &[])?;
            }
            Ok(())
        }
        Some(Request::DeleteRange(d)) => {
            view.check_delete(who, &d.key, &d.range_end)?;
            if d.prev_kv {
                view.check_range(who, &d.key, &d.range_end)?;
            }
            Ok(())
        }
        Some(Request::Txn(t)) => view.check_txn(who, t),
        Some(Request::LeaseRevoke(r)) => view.check_lease_keys(who, lease_keys(r.id)),
        _ => Ok(()),
    }
}

fn compaction(
    compact_rev: &mut i64,
    pending: &mut Vec<i64>,
    current_rev: i64,
    c: &CompactionRequest,
    batch: &mut WriteBatch,
) -> Result<CompactionResponse> {
    if c.revision <= *compact_rev {
        return Err(Error::Compacted);
    }
    if c.revision > current_rev {
        return Err(Error::FutureRev);
    }
    *compact_rev = c.revision;
    pending.push(c.revision);
    batch.put(Bucket::Meta, META_COMPACT_SCHEDULED.to_vec(), c.revision.to_be_bytes().to_vec());
    Ok(CompactionResponse { header: header(current_rev) })
}

fn persist_lease(batch: &mut WriteBatch, id: i64, ttl: i64, remaining_ttl: i64) {
    let rec = LeaseRecord { id, ttl, remaining_ttl };
    batch.put(Bucket::Lease, lease_key(id), rec.encode_to_vec());
}

fn lease_grant(lessor: &mut LeaseTable, g: &LeaseGrantRequest, rev: i64, batch: &mut WriteBatch) -> Result<ApplyResponse> {
    let l = lessor.grant(g.id, g.ttl)?;
    persist_lease(batch, l.id, l.ttl, 0);
    Ok(ApplyResponse::LeaseGrant(LeaseGrantResponse { header: header(rev), id: l.id, ttl: l.ttl, error: String::new() }))
}

fn revoke_one(tx: &mut WriteTxn<'_>, id: i64, batch: &mut WriteBatch) -> Result<()> {
    let keys = tx.lessor.revoke(id)?;
    for k in keys {
        tx.delete(&k)?;
    }
    batch.delete(Bucket::Lease, lease_key(id));
    Ok(())
}

fn lease_revoke(tx: &mut WriteTxn<'_>, r: &LeaseRevokeRequest, batch: &mut WriteBatch) -> Result<ApplyResponse> {
    revoke_one(tx, r.id, batch)?;
    Ok(ApplyResponse::LeaseRevoke(LeaseRevokeResponse { header: header(tx.rev()) }))
}

fn lease_checkpoint(
    lessor: &mut LeaseTable,
    c: &LeaseCheckpointRequest,
    rev: i64,
    batch: &mut WriteBatch,
) -> Result<ApplyResponse> {
    for cp in &c.checkpoints {
        if lessor.checkpoint(cp.id, cp.remaining_ttl) {
            let ttl = lessor.get(cp.id).map(|l| l.ttl).unwrap_or(0);
            persist_lease(batch, cp.id, ttl, cp.remaining_ttl);
        }
    }
    Ok(ApplyResponse::LeaseCheckpoint(LeaseCheckpointResponse { header: header(rev) }))
}

/// Revokes every still-existing lease of the batch in one revision (leases revoked or
/// renewed away since the leader chose them are skipped: not an error).
fn lease_expire(tx: &mut WriteTxn<'_>, e: &LeaseExpireRequest, batch: &mut WriteBatch) -> Result<ApplyResponse> {
    for &id in &e.ids {
        if tx.lessor.exists(id) {
            revoke_one(tx, id, batch)?;
        }
    }
    Ok(ApplyResponse::LeaseExpire { revision: tx.rev() })
}
