//! Authentication and role-based access control, as the state machine applies it
//! (etcd: `server/auth/store.go`, `server/etcdserver/apply_auth.go`).
//!
//! * `state.rs`: [`AuthState`], the replicated users, roles, enabled flag and auth
//!   revision, and every auth command's rules;
//! * `perms.rs`: [`UserPerms`], one user's roles merged into READ and WRITE interval sets;
//! * `error.rs`: [`AuthError`];
//! * here: [`AuthView`], one auth revision's state with its per-user permission cache,
//!   and the checks etcd makes (`is_range_permitted`, admin, Txn, lease), and
//!   [`apply_command`], an auth command applied to a view.
//!
//! # Consistency
//! The store keeps the current view behind a leaf lock (`Store::auth`), replaced whole by
//! the apply thread after each auth change, so a check sees one revision's state. The
//! cache of a view is never invalidated: a change makes a new view with an empty cache
//! (etcd clears its cache on every change too). Writes are checked twice, as etcd
//! checks them: by the API before proposing (the caller's revision is taken there) and at
//! apply against the view then current, refusing a write proposed under an older auth
//! revision ([`AuthError::AuthOldRevision`]), so no write slips through a revoke.
//!
//! # Persistence
//! The whole state is one `cairnpb.AuthState` record under the Meta key `auth`
//! (`store.rs`), staged in the batch of the entry that changed it, so it is atomic with
//! the applied index and travels in Raft snapshots.

mod error;
mod perms;
mod state;

use std::collections::HashMap;
use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{RequestOp, TxnRequest};
use parking_lot::RwLock;

pub use error::AuthError;
pub use perms::{End, Interval, IntervalSet, UserPerms};
pub use state::{has_role, no_password, AuthState, ROOT};

/// Who a request runs as: a user name and the auth revision it was checked at (etcd's
/// `AuthInfo`). Revision 0 means no user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    /// The user name.
    pub username: String,
    /// The auth revision the request was checked at.
    pub revision: u64,
}

/// One auth revision's state and its permission cache (module docs).
#[derive(Debug, Default)]
pub struct AuthView {
    state: AuthState,
    /// User name → merged permissions, filled on first use. Leaf lock: taken only to look
    /// up or insert one entry.
    cache: RwLock<HashMap<String, Arc<UserPerms>>>,
}

impl AuthView {
    /// A view of `state` with an empty cache.
    pub fn new(state: AuthState) -> AuthView {
        AuthView { state, cache: RwLock::new(HashMap::new()) }
    }

    /// The state.
    pub fn state(&self) -> &AuthState {
        &self.state
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        self.state.enabled()
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.state.revision()
    }

    fn perms(&self, name: &str) -> Option<Arc<UserPerms>> {
        if let Some(p) = self.cache.read().get(name) {
            return Some(p.clone());
        }
        let user = self.state.user(name)?;
        let perms = user.roles.iter().filter_map(|r| self.state.role(r)).flat_map(|r| r.key_permission.iter());
        let built = Arc::new(UserPerms::build(perms));
        self.cache.write().insert(name.to_string(), built.clone());
        Some(built)
    }

    /// etcd's `isOpPermitted`: may `who` read (or write) `(key, range_end)`?
    fn op_permitted(&self, who: Option<&AuthInfo>, key: &[u8], range_end: &[u8], write: bool) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let who = match who {
            Some(w) if w.revision != 0 => w,
            _ => return Err(AuthError::UserEmpty),
        };
        if who.revision < self.revision() {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self.state.user(&who.username).ok_or(AuthError::PermissionDenied)?;
        if has_role(user, ROOT) {
            return Ok(());
        }
        let perms = self.perms(&who.username).ok_or(AuthError::PermissionDenied)?;
        let ok = if write { perms.can_write(key, range_end) } else { perms.can_read(key, range_end) };
        if ok { Ok(()) } else { Err(AuthError::PermissionDenied) }
    }

    /// Range (and watch) permission on `(key, range_end)`.
    pub fn check_range(&self, who: Option<&AuthInfo>, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.op_permitted(who, key, range_end, false)
    }

    /// Put permission on `key`.
    pub fn check_put(&self, who: Option<&AuthInfo>, key: &[u8]) -> Result<(), AuthError> {
        self.op_permitted(who, key, &[], true)
    }

    /// DeleteRange permission on `(key, range_end)`.
    pub fn check_delete(&self, who: Option<&AuthInfo>, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.op_permitted(who, key, range_end, true)
    }

    /// etcd's `IsAdminPermitted`: the user must have the root role (any auth revision).
    pub fn check_admin(&self, who: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let who = match who {
            Some(w) if !w.username.is_empty() => w,
            _ => return Err(AuthError::UserEmpty),
        };
        let user = self.state.user(&who.username).ok_or(AuthError::UserNotFound)?;
        if has_role(user, ROOT) { Ok(()) } else { Err(AuthError::PermissionDenied) }
    }

    /// Every compare needs read, every op of both branches its own permission (etcd's
    /// `checkTxnAuth`; nested Txns are checked recursively).
    pub fn check_txn(&self, who: Option<&AuthInfo>, txn: &TxnRequest) -> Result<(), AuthError> {
        for c in &txn.compare {
            self.check_range(who, &c.key, &c.range_end)?;
        }
        self.check_ops(who, &txn.success)?;
        self.check_ops(who, &txn.failure)
    }

    fn check_ops(&self, who: Option<&AuthInfo>, ops: &[RequestOp]) -> Result<(), AuthError> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(r)) => self.check_range(who, &r.key, &r.range_end)?,
                Some(Op::RequestPut(p)) => {
                    self.check_put(who, &p.key)?;
                    if p.prev_kv {
                        self.check_range(who, &p.key, &[])?;
                    }
                }
                Some(Op::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.check_range(who, &d.key, &d.range_end)?;
                    }
                    self.check_delete(who, &d.key, &d.range_end)?;
                }
                Some(Op::RequestTxn(t)) => self.check_txn(who, t)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Write permission on every key attached to a lease (LeaseRevoke, and a Put attaching
    /// the lease: whoever could not revoke the lease may not extend it to more keys).
    pub fn check_lease_keys<'a>(&self, who: Option<&AuthInfo>, keys: impl IntoIterator<Item = &'a Vec<u8>>) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        for k in keys {
            self.check_put(who, k)?;
        }
        Ok(())
    }
}

/// What an applied auth command answers.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthApplied {
    /// The state changed (or the change was a no-op, as etcd's repeated grant).
    Changed,
    /// A login: the token assigned to the user on every member.
    Token {
        /// The user.
        user: String,
        /// The simple token `<prefix>.<log index>`.
        token: String,
    },
}

/// Applies the auth command `cmd` (log entry `index`, proposed as `who`) to `view`:
/// `Ok(None)` if `cmd` is not an auth command; else the new state (if it changed) and the
/// answer. Admin commands need the root role while auth is on (etcd's
/// `needAdminPermission`). Deterministic: depends only on `view`, `who`, `cmd` and `index`.
pub fn apply_command(
    view: &AuthView,
    who: Option<&AuthInfo>,
    cmd: &Request,
    index: u64,
) -> Option<Result<(Option<AuthState>, AuthApplied), AuthError>> {
    if let Request::Authenticate(a) = cmd {
        let result = view.state().check_login(&a.name);
        return Some(result.map(|()| {
            (None, AuthApplied::Token { user: a.name.clone(), token: format!("{}.{}", a.token_prefix, index) })
        }));
    }
    let mut next = view.state().clone();
    let change = match cmd {
        Request::AuthEnable(_) => next.enable(),
        Request::AuthDisable(_) => next.disable(),
        Request::AuthUserAdd(r) => next.user_add(r),
        Request::AuthUserDelete(r) => next.user_delete(&r.name),
        Request::AuthUserChangePassword(r) => next.user_change_password(r),
        Request::AuthUserGrantRole(r) => next.user_grant_role(r),
        Request::AuthUserRevokeRole(r) => next.user_revoke_role(r),
        Request::AuthRoleAdd(r) => next.role_add(&r.name),
        Request::AuthRoleDelete(r) => next.role_delete(&r.role),
        Request::AuthRoleGrantPermission(r) => next.role_grant_permission(r),
        Request::AuthRoleRevokePermission(r) => next.role_revoke_permission(r),
        _ => return None,
    };
    Some(view.check_admin(who).and(change).map(|()| {
        let changed = next != *view.state();
        (changed.then_some(next), AuthApplied::Changed)
    }))
}

#[cfg(test)]
mod tests;
