//! The store as the state machine of a Raft member (`cairn_raft_node::StateMachine`).
//!
//! - KV and lease commands go to [`Store::apply`]; a request's own refusal (failed compare,
//!   unknown lease) is its deterministic answer, a fatal storage error stops the node.
//! - `MemberAttrRequest` entries and membership conf changes update the replicated member
//!   table ([`Members`]), whose encoding the store keeps with the applied index
//!   ([`Store::apply_members`]), so a snapshot carries it.
//! - `publish` makes an applied batch visible and feeds the watch hub (in commit order,
//!   before proposers are answered); `persist` syncs the backend (the log is compacted only
//!   behind it); `restore` installs a leader's snapshot.
//! - After every member table change, `on_members` runs on the apply thread (the transport
//!   learns new peer addresses there; the server notices its own removal).
//! - Applied logins add their simple token to this member's table; applied user deletions,
//!   password changes and AuthDisable drop tokens (`auth/tokens.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{ConfChangeContext, InternalRequest, MemberTable};
use cairn_raft_node::raft::eraftpb::ConfState;
use cairn_raft_node::{AppliedConfChange, SnapshotSource, StateMachine, StateMachineError};
use cairn_storage::watch::WatchHub;
use cairn_storage::{ApplyResponse, Error as StorageError, Store};
use prost::Message;
use tracing::warn;

use crate::auth::SimpleTokens;
use crate::metrics::Metrics;
use crate::member::table::Members;

/// What applying one entry answers its proposer.
pub type Output = Result<ApplyResponse, StorageError>;

/// Called with the member table after each change.
pub type MembersHook = Box<dyn Fn(&MemberTable) + Send>;

/// Called with (lease ID, TTL) after each applied grant (the leader's lessor queues it).
pub type GrantHook = Box<dyn Fn(i64, i64) + Send>;

/// The store as a Raft state machine (see the module docs).
pub struct RaftMachine {
    store: Arc<Store>,
    hub: WatchHub,
    members: Arc<Members>,
    on_members: MembersHook,
    on_grant: GrantHook,
    tokens: Option<Arc<SimpleTokens>>,
    /// Applying one entry for longer logs a warning (`--experimental-warning-apply-duration`).
    warn_apply: Duration,
    /// Counts applied puts, deletes, txns, lease grants and revocations, slow applies.
    metrics: Arc<Metrics>,
}

impl RaftMachine {
    /// The machine over `store` and its `hub`, keeping `members`.
    pub fn new(store: Arc<Store>, hub: WatchHub, members: Arc<Members>, on_members: MembersHook, on_grant: GrantHook) -> RaftMachine {
        RaftMachine { store, hub, members, on_members, on_grant, tokens: None, warn_apply: Duration::from_millis(100), metrics: Arc::new(Metrics::new()) }
    }

    /// Warns about entries whose apply takes longer than `d`.
    pub fn warn_apply_after(mut self, d: Duration) -> Self {
        self.warn_apply = d;
        self
    }

    /// Counts into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Keeps `tokens` up to date with applied logins and auth changes.
    pub fn with_tokens(mut self, tokens: Arc<SimpleTokens>) -> RaftMachine {
        self.tokens = Some(tokens);
        self
    }

    /// Token bookkeeping after an applied auth entry (module docs).
    fn track_tokens(&self, req: &InternalRequest, applied: &ApplyResponse) {
        let Some(tokens) = &self.tokens else { return };
        match (applied, &req.request) {
            (ApplyResponse::Authenticated { user, token, .. }, _) => tokens.assign(token.clone(), user.clone()),
            (ApplyResponse::Auth { .. }, Some(Request::AuthUserDelete(r))) => tokens.invalidate_user(&r.name),
            (ApplyResponse::Auth { .. }, Some(Request::AuthUserChangePassword(r))) => tokens.invalidate_user(&r.name),
            (ApplyResponse::Auth { .. }, Some(Request::AuthDisable(_))) => tokens.clear(),
            _ => {}
        }
    }

    fn save_members(&mut self, index: u64, table: &MemberTable) -> Result<(), StateMachineError> {
        self.store.apply_members(index, &table.encode_to_vec()).map_err(StateMachineError::new)?;
        (self.on_members)(table);
        Ok(())
    }
}

/// The kind of a command, for the slow-apply warning (never its keys or values).
fn request_kind(req: &InternalRequest) -> &'static str {
    match &req.request {
        Some(Request::Put(_)) => "put",
        Some(Request::DeleteRange(_)) => "delete_range",
        Some(Request::Txn(_)) => "txn",
        Some(Request::Compaction(_)) => "compaction",
        Some(Request::LeaseGrant(_)) => "lease_grant",
        Some(Request::LeaseRevoke(_)) => "lease_revoke",
        Some(Request::LeaseCheckpoint(_)) => "lease_checkpoint",
        Some(Request::LeaseExpire(_)) => "lease_expire",
        Some(Request::MemberAttr(_)) => "member_attr",
        Some(Request::Alarm(_)) => "alarm",
        // the auth commands, named as their RPCs
        Some(other) => crate::member::proposer::request_kind(other),
        None => "empty",
    }
}

/// Counts an applied command as etcd's mvcc and lessor count it: puts, deletes and ranges
/// (inside txns too, the executed branch), a txn when it ran more than one operation, lease
/// grants, and revocations (by request or expiry).
fn count_applied(m: &Metrics, req: &InternalRequest, applied: &ApplyResponse) {
    match (applied, &req.request) {
        (ApplyResponse::Put(_), _) => m.puts.inc(),
        (ApplyResponse::DeleteRange(_), _) => m.deletes.inc(),
        (ApplyResponse::Txn(t), _) => m.count_txn(t),
        (ApplyResponse::LeaseGrant(_), _) => m.leases_granted.inc(),
        (ApplyResponse::LeaseRevoke(_), _) => m.leases_revoked.inc(),
        (ApplyResponse::LeaseExpire { .. }, Some(Request::LeaseExpire(e))) => m.leases_revoked.add(e.ids.len() as u64),
        _ => {}
    }
}

/// The member table a store holds, if it holds one that decodes.
pub fn stored_members(store: &Store) -> Result<Option<MemberTable>, prost::DecodeError> {
    store.members().map(|b| MemberTable::decode(b.as_slice())).transpose()
}

fn fatal(e: StorageError) -> StateMachineError {
    StateMachineError::new(e)
}

impl StateMachine for RaftMachine {
    type Output = Output;

    fn applied_index(&self) -> u64 {
        self.store.applied_index()
    }

    fn apply(&mut self, index: u64, req: &InternalRequest) -> Result<Output, StateMachineError> {
        if let Some(Request::MemberAttr(attr)) = &req.request {
            match self.members.apply_attr(attr) {
                Some(table) => self.save_members(index, &table)?,
                None => self.store.note_applied(index).map_err(fatal)?,
            }
            return Ok(Ok(ApplyResponse::Skipped));
        }
        let started = Instant::now();
        let applied = self.store.apply(index, req);
        let took = started.elapsed();
        if took > self.warn_apply {
            self.metrics.slow_apply.inc();
            // etcd's wording and fields, so that log searches and alerts carry over
            warn!(
                took = ?took,
                expected_duration = ?self.warn_apply,
                index,
                request = request_kind(req),
                "apply request took too long"
            );
        }
        if let Ok(r) = &applied {
            count_applied(&self.metrics, req, r);
        }
        match applied {
            Ok(ApplyResponse::LeaseGrant(g)) => {
                (self.on_grant)(g.id, g.ttl);
                Ok(Ok(ApplyResponse::LeaseGrant(g)))
            }
            Ok(r) => {
                self.track_tokens(req, &r);
                Ok(Ok(r))
            }
            Err(e) if e.is_fatal() => Err(fatal(e)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn apply_conf_change(&mut self, index: u64, _conf: &ConfState, change: &AppliedConfChange) -> Result<(), StateMachineError> {
        // a context that does not decode (never written by cairn) adds a member without URLs
        let added = ConfChangeContext::decode(change.context.as_slice()).ok().and_then(|c| c.member);
        let table = self.members.apply_conf_change(change.change, added);
        self.save_members(index, &table)
    }

    /// Makes the applied batch visible and hands its revisions to the watch hub, on the
    /// apply thread, in commit order, before the writes it contains are acknowledged.
    fn publish(&mut self) -> Result<(), StateMachineError> {
        let visible = self.store.publish().map_err(fatal)?;
        self.hub.publish(visible);
        Ok(())
    }

    fn persist(&mut self) -> Result<u64, StateMachineError> {
        self.store.sync_backend().map_err(fatal)
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateMachineError> {
        self.store.restore(index, data).map_err(fatal)?;
        self.hub.resync_after_restore();
        match stored_members(&self.store) {
            Ok(Some(table)) => {
                self.members.replace(table.clone());
                (self.on_members)(&table);
            }
            Ok(None) => {}
            Err(e) => return Err(StateMachineError::new(e)),
        }
        Ok(())
    }

    fn snapshot_source(&self) -> Box<dyn SnapshotSource> {
        Box::new(StoreSnapshots(self.store.clone()))
    }
}

/// Snapshots of the store for followers that fell behind the log.
struct StoreSnapshots(Arc<Store>);

impl SnapshotSource for StoreSnapshots {
    fn snapshot(&self) -> Result<(u64, Vec<u8>), StateMachineError> {
        self.0.snapshot_bytes().map_err(fatal)
    }
}
