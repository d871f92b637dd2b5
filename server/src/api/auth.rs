//! The Auth service: AuthEnable/Disable/Status, Authenticate, User* and Role*, with etcd's
//! rules and errors (etcd: `server/etcdserver/v3_server.go`, `server/auth/store.go`).
//!
//! Every change is a Raft command applied by the store's auth state
//! (`cairn_storage::auth`), which also makes the admin check (root role) at apply, as
//! etcd's `authApplierV3` does; the check is made here first too, so a non-admin never
//! makes this member run bcrypt. Passwords are hashed here before proposing, on the
//! blocking pool. Reads (UserGet/List, RoleGet/List, AuthStatus) are served from the
//! local state after a read barrier (etcd answers them through Raft: same answers, as
//! linearizable).
//!
//! Authenticate checks the password against the current state (off every lock), then
//! proposes the login with a random token prefix; each member adds the token when it
//! applies the entry. If the auth revision moved meanwhile, it checks again (etcd's loop).

use std::sync::Arc;

use base64::Engine as _;
use cairn_proto::authpb::Permission;
use cairn_proto::cairnpb::internal_request::Request as Command;
use cairn_proto::cairnpb::AuthenticateCommand;
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::*;
use cairn_storage::auth::{has_role, AuthError, AuthInfo, ROOT};
use cairn_storage::{ApplyResponse, Error as StorageError, Store};
use tonic::{Request, Response, Status};

use crate::api::status::rpc_error;
use crate::auth::{request_auth, tokens, Authenticator};
use crate::error::RequestError;
use crate::member::identity::Membership;
use crate::member::proposer::{request_kind, response_kind, Proposer};

/// The Auth service.
pub struct AuthService<P> {
    store: Arc<Store>,
    proposer: Arc<P>,
    membership: Arc<Membership>,
    auth: Arc<Authenticator>,
}

fn refused(e: AuthError) -> Status {
    rpc_error(StorageError::Auth(e))
}

impl<P: Proposer> AuthService<P> {
    /// The service over `store`'s auth state, changing it through `proposer`.
    pub fn new(store: Arc<Store>, proposer: Arc<P>, membership: Arc<Membership>, auth: Arc<Authenticator>) -> AuthService<P> {
        AuthService { store, proposer, membership, auth }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.membership.header(revision))
    }

    /// The caller, who must be an admin while auth is on.
    fn admin<T>(&self, request: &Request<T>) -> Result<Option<AuthInfo>, Status> {
        let who = self.auth.who_of(request).map_err(rpc_error)?;
        self.auth.check_admin(&who).map_err(rpc_error)?;
        Ok(who)
    }

    /// Proposes an auth change as `who`; the header of its answer.
    async fn change(&self, command: Command, who: &Option<AuthInfo>) -> Result<Option<ResponseHeader>, Status> {
        let kind = request_kind(&command);
        match self.proposer.propose_as(command, request_auth(who)).await.map_err(rpc_error)? {
            ApplyResponse::Auth { revision } => Ok(self.header(revision)),
            other => Err(mismatch(kind, &other)),
        }
    }

    /// An admin's auth change: `command` of the request, proposed as its user; `response`
    /// builds the answer around the header.
    async fn admin_change<T, R>(
        &self,
        request: Request<T>,
        command: impl FnOnce(T) -> Command,
        response: impl FnOnce(Option<ResponseHeader>) -> R,
    ) -> Result<Response<R>, Status> {
        let who = self.admin(&request)?;
        let header = self.change(command(request.into_inner()), &who).await?;
        Ok(Response::new(response(header)))
    }

    /// A linearizable read of the auth state by an admin, or by a user `own` allows
    /// (etcd lets users get themselves and their own roles).
    async fn admin_read<T>(&self, request: &Request<T>, own: impl Fn(&AuthInfo) -> bool) -> Result<(), Status> {
        let who = self.auth.who_of(request).map_err(rpc_error)?;
        if let Err(e) = self.auth.check_admin(&who) {
            if !who.as_ref().is_some_and(own) {
                return Err(rpc_error(e));
            }
        }
        self.proposer.read_barrier().await.map_err(rpc_error)
    }

    /// The stored form of a new password: bcrypt of `password`, or a hash the client sent
    /// already (etcd 3.5 clients may: base64 of a bcrypt hash).
    async fn stored_password(&self, password: String, hashed: &str) -> Result<String, Status> {
        if hashed.is_empty() {
            return self.auth.hash_password(password).await.map_err(rpc_error);
        }
        base64::engine::general_purpose::STANDARD
            .decode(hashed)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| refused(AuthError::AuthFailed))
    }
}

fn mismatch(request: &'static str, got: &ApplyResponse) -> Status {
    let err = RequestError::ResponseMismatch { request, got: response_kind(got) };
    tracing::error!(error = %err, "storage returned the wrong response kind");
    rpc_error(err)
}

/// The permission etcd shows for the root role, which grants everything.
fn root_permission() -> Permission {
    Permission { perm_type: 2, key: Vec::new(), range_end: vec![0] }
}

#[tonic::async_trait]
impl<P: Proposer> Auth for AuthService<P> {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        self.admin_change(request, Command::AuthEnable, |header| AuthEnableResponse { header }).await
    }

    async fn auth_disable(&self, request: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        self.admin_change(request, Command::AuthDisable, |header| AuthDisableResponse { header }).await
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        self.auth.who_of(&request).map_err(rpc_error)?;
        self.proposer.read_barrier().await.map_err(rpc_error)?;
        let view = self.auth.view();
        Ok(Response::new(AuthStatusResponse {
            header: self.header(self.store.revision()),
            enabled: view.enabled(),
            auth_revision: view.revision(),
        }))
    }

    async fn authenticate(&self, request: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        self.proposer.read_barrier().await.map_err(rpc_error)?;
        let AuthenticateRequest { name, password } = request.into_inner();
        loop {
            let checked = self.auth.check_password(&name, password.clone()).await.map_err(rpc_error)?;
            let prefix = tokens::token_prefix().map_err(|e| {
                tracing::error!(error = %e, "no random bytes for a token");
                rpc_error(RequestError::Stopped)
            })?;
            let command = Command::Authenticate(AuthenticateCommand { name: name.clone(), token_prefix: prefix });
            let kind = request_kind(&command);
            let (token, revision) = match self.proposer.propose(command).await.map_err(rpc_error)? {
                ApplyResponse::Authenticated { token, revision, .. } => (token, revision),
                other => return Err(mismatch(kind, &other)),
            };
            if checked == self.auth.view().revision() {
                let token = self.auth.token_for(token, &name, checked).ok_or_else(|| {
                    tracing::warn!(user = %name, "cannot issue a JWT: this member has no --auth-token priv-key");
                    rpc_error(RequestError::Storage(cairn_storage::Error::Auth(cairn_storage::auth::AuthError::AuthFailed)))
                })?;
                return Ok(Response::new(AuthenticateResponse { header: self.header(revision), token }));
            }
            tracing::info!(user = %name, "the auth revision moved while the password was checked; checking again");
        }
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        let who = self.admin(&request)?;
        let mut r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password = std::mem::take(&mut r.password);
        r.hashed_password = if no_password { String::new() } else { self.stored_password(password, &r.hashed_password).await? };
        let header = self.change(Command::AuthUserAdd(r), &who).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        self.admin_read(&request, |who| who.username == request.get_ref().name).await?;
        let view = self.auth.view();
        let user = view.state().user(&request.get_ref().name).ok_or_else(|| refused(AuthError::UserNotFound))?;
        Ok(Response::new(AuthUserGetResponse { header: self.header(self.store.revision()), roles: user.roles.clone() }))
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        self.admin_read(&request, |_| false).await?;
        let users = self.auth.view().state().user_names();
        Ok(Response::new(AuthUserListResponse { header: self.header(self.store.revision()), users }))
    }

    async fn user_delete(&self, request: Request<AuthUserDeleteRequest>) -> Result<Response<AuthUserDeleteResponse>, Status> {
        self.admin_change(request, Command::AuthUserDelete, |header| AuthUserDeleteResponse { header }).await
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let who = self.admin(&request)?;
        let mut r = request.into_inner();
        // etcd hashes unless the user has no password (then none is stored)
        let no_password = self.auth.view().state().user(&r.name).is_some_and(cairn_storage::auth::no_password);
        let password = std::mem::take(&mut r.password);
        r.hashed_password = if no_password { String::new() } else { self.stored_password(password, &r.hashed_password).await? };
        let header = self.change(Command::AuthUserChangePassword(r), &who).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(&self, request: Request<AuthUserGrantRoleRequest>) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        self.admin_change(request, Command::AuthUserGrantRole, |header| AuthUserGrantRoleResponse { header }).await
    }

    async fn user_revoke_role(&self, request: Request<AuthUserRevokeRoleRequest>) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        self.admin_change(request, Command::AuthUserRevokeRole, |header| AuthUserRevokeRoleResponse { header }).await
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        self.admin_change(request, Command::AuthRoleAdd, |header| AuthRoleAddResponse { header }).await
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        let name = &request.get_ref().role;
        let view = self.auth.view();
        let has_role = |who: &AuthInfo| view.state().user(&who.username).is_some_and(|u| has_role(u, name));
        self.admin_read(&request, has_role).await?;
        let view = self.auth.view();
        let role = view.state().role(name).ok_or_else(|| refused(AuthError::RoleNotFound))?;
        let perm = if name == ROOT { vec![root_permission()] } else { role.key_permission.clone() };
        Ok(Response::new(AuthRoleGetResponse { header: self.header(self.store.revision()), perm }))
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        self.admin_read(&request, |_| false).await?;
        let roles = self.auth.view().state().role_names();
        Ok(Response::new(AuthRoleListResponse { header: self.header(self.store.revision()), roles }))
    }

    async fn role_delete(&self, request: Request<AuthRoleDeleteRequest>) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        self.admin_change(request, Command::AuthRoleDelete, |header| AuthRoleDeleteResponse { header }).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        self.admin_change(request, Command::AuthRoleGrantPermission, |header| AuthRoleGrantPermissionResponse { header }).await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        self.admin_change(request, Command::AuthRoleRevokePermission, |header| AuthRoleRevokePermissionResponse { header }).await
    }
}
