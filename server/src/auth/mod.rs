//! Who a client request runs as, and the password work of authentication (etcd:
//! `AuthInfoFromCtx`, `CheckPassword`, the API side of `server/auth/store.go`).
//!
//! * [`Authenticator::who`]: the user of a request while auth is on: the user its
//!   `token` metadata names (an unknown or expired token is refused with etcd's
//!   "invalid auth token"), else with `--client-cert-auth` the client certificate's
//!   common name, else no user. The auth revision is the one current at the check, as
//!   etcd's simple tokens report it; writes carry both into the log (`RequestAuth`) and
//!   are checked again at apply (`cairn_storage::auth`).
//! * bcrypt runs only here, on the blocking pool, never under a lock nor on the apply
//!   thread: hashing a new password before proposing it (as etcd 3.5 does), checking a
//!   login's password before proposing the login.
//! * `tokens.rs`: the simple-token table; `jwt.rs`: JWT tokens (`--auth-token jwt,…`),
//!   which carry the user and auth revision themselves.

pub mod jwt;
pub mod tokens;

use std::sync::Arc;

use cairn_proto::cairnpb::RequestAuth;
use cairn_storage::auth::{no_password, AuthError, AuthInfo, AuthView};
use cairn_storage::{Error as StorageError, Store};
use tonic::metadata::MetadataMap;

use crate::error::RequestError;

pub use jwt::JwtTokens;
pub use tokens::SimpleTokens;

/// etcd's `--bcrypt-cost` default (bcrypt.DefaultCost).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// etcd's `--auth-token-ttl` default, in seconds.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 300;

fn refused(e: AuthError) -> RequestError {
    RequestError::Storage(StorageError::Auth(e))
}

/// Authentication of one member's client requests (module docs).
pub struct Authenticator {
    store: Arc<Store>,
    tokens: Arc<SimpleTokens>,
    /// `--auth-token jwt,…`: tokens are JWTs, not simple tokens.
    jwt: Option<Arc<JwtTokens>>,
    bcrypt_cost: u32,
    client_cert_auth: bool,
}

impl Authenticator {
    /// Over `store`'s auth state and this member's `tokens`; `bcrypt_cost` is
    /// `--bcrypt-cost` (etcd's default replaces a cost bcrypt refuses).
    pub fn new(store: Arc<Store>, tokens: Arc<SimpleTokens>, bcrypt_cost: u32, client_cert_auth: bool) -> Authenticator {
        let bcrypt_cost = if (4..=31).contains(&bcrypt_cost) { bcrypt_cost } else { DEFAULT_BCRYPT_COST };
        Authenticator { store, tokens, jwt: None, bcrypt_cost, client_cert_auth }
    }

    /// Tokens are the JWTs `jwt` issues and checks instead of simple tokens.
    pub fn with_jwt(mut self, jwt: Option<Arc<JwtTokens>>) -> Authenticator {
        self.jwt = jwt;
        self
    }

    /// The token for `user`, who logged in at auth revision `revision` (proposed as
    /// `simple`): a JWT when tokens are JWTs; `None` on a member that can only verify them.
    pub fn token_for(&self, simple: String, user: &str, revision: u64) -> Option<String> {
        match &self.jwt {
            None => Some(simple),
            Some(jwt) => jwt.assign(user, revision),
        }
    }

    /// The current auth state.
    pub fn view(&self) -> Arc<AuthView> {
        self.store.auth()
    }

    /// The token table.
    pub fn tokens(&self) -> &Arc<SimpleTokens> {
        &self.tokens
    }

    /// The user a request runs as (module docs); `None` while auth is off or when the
    /// request names no user. `common_name` is the verified client certificate's CN.
    pub fn who(&self, metadata: &MetadataMap, common_name: Option<String>) -> Result<Option<AuthInfo>, RequestError> {
        let view = self.store.auth();
        if !view.enabled() {
            return Ok(None);
        }
        let token = metadata.get("token").or_else(|| metadata.get("authorization"));
        if let Some(token) = token {
            let token = token.to_str().map_err(|_| refused(AuthError::InvalidAuthToken))?;
            let (username, revision) = match &self.jwt {
                // a JWT carries the revision it was issued at; an old one is refused
                // where permissions are checked
                Some(jwt) => jwt.info(token),
                None => self.tokens.user(token).map(|u| (u, view.revision())),
            }
            .ok_or(refused(AuthError::InvalidAuthToken))?;
            return Ok(Some(AuthInfo { username, revision }));
        }
        if self.client_cert_auth {
            if let Some(cn) = common_name.filter(|cn| !cn.is_empty()) {
                return Ok(Some(AuthInfo { username: cn, revision: view.revision() }));
            }
        }
        Ok(None)
    }

    /// [`Authenticator::who`] of a gRPC request.
    pub fn who_of<T>(&self, request: &tonic::Request<T>) -> Result<Option<AuthInfo>, RequestError> {
        self.who(request.metadata(), common_name(request))
    }

    /// etcd's `IsAdminPermitted` for the request's user.
    pub fn check_admin(&self, who: &Option<AuthInfo>) -> Result<(), RequestError> {
        self.store.auth().check_admin(who.as_ref()).map_err(refused)
    }

    /// Hashes a new password with bcrypt (on the blocking pool).
    pub async fn hash_password(&self, password: String) -> Result<String, RequestError> {
        let cost = self.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|_| RequestError::Stopped)?
            .map_err(|e| {
                tracing::error!(error = %e, "bcrypt failed to hash a password");
                refused(AuthError::AuthFailed)
            })
    }

    /// etcd's `CheckPassword`: the auth revision the password was checked at. The user
    /// record is read from the current state, then bcrypt runs on the blocking pool,
    /// holding nothing.
    pub async fn check_password(&self, name: &str, password: String) -> Result<u64, RequestError> {
        let view = self.store.auth();
        if !view.enabled() {
            return Err(refused(AuthError::AuthNotEnabled));
        }
        let user = view.state().user(name).ok_or(refused(AuthError::AuthFailed))?;
        if no_password(user) {
            return Err(refused(AuthError::AuthFailed));
        }
        let hash = String::from_utf8_lossy(&user.password).into_owned();
        let revision = view.revision();
        drop(view);
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .map_err(|_| RequestError::Stopped)?;
        if !ok {
            tracing::info!(user = name, "invalid password");
            return Err(refused(AuthError::AuthFailed));
        }
        Ok(revision)
    }
}

/// What a proposal records about its user (`InternalRequest.auth`).
pub fn request_auth(who: &Option<AuthInfo>) -> Option<RequestAuth> {
    who.as_ref().map(|w| RequestAuth { username: w.username.clone(), auth_revision: w.revision })
}

/// The common name of the client certificate the TLS layer verified, if any.
pub fn common_name<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    let der = certs.first()?;
    crate::net::tls::certificate_common_name(der.as_ref())
}

/// A service's access to the authenticator: the client services always have one; the
/// services a member also serves to its peers (Lease, Cluster) have none there (peers
/// are trusted, as etcd trusts its peer listener), and check nothing.
#[derive(Clone, Default)]
pub struct AuthGate(Option<Arc<Authenticator>>);

impl AuthGate {
    /// Checks through `auth`.
    pub fn new(auth: Arc<Authenticator>) -> AuthGate {
        AuthGate(Some(auth))
    }

    /// The user of `request` ([`Authenticator::who`]).
    pub fn who<T>(&self, request: &tonic::Request<T>) -> Result<Option<AuthInfo>, tonic::Status> {
        self.who_parts(request.metadata(), common_name(request))
    }

    /// The user of a request with `metadata`, over a connection whose client certificate
    /// has `common_name` (a watch stream checks each creation so).
    pub fn who_parts(&self, metadata: &MetadataMap, common_name: Option<String>) -> Result<Option<AuthInfo>, tonic::Status> {
        match &self.0 {
            Some(a) => a.who(metadata, common_name).map_err(crate::api::status::rpc_error),
            None => Ok(None),
        }
    }

    /// Refuses `request` unless its user is an admin (root role) or auth is off
    /// (etcd's admin-only Maintenance and Cluster calls).
    pub fn admin<T>(&self, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let who = self.who(request)?;
        match &self.0 {
            Some(a) => a.check_admin(&who).map_err(crate::api::status::rpc_error),
            None => Ok(()),
        }
    }

    /// Refuses a Txn `who` may not run (a read-only Txn, served without the write path
    /// whose apply would check it).
    pub fn check_txn(&self, who: &Option<AuthInfo>, txn: &cairn_proto::etcdserverpb::TxnRequest) -> Result<(), tonic::Status> {
        match &self.0 {
            Some(a) => a.view().check_txn(who.as_ref(), txn).map_err(|e| crate::api::status::rpc_error(StorageError::Auth(e))),
            None => Ok(()),
        }
    }

    /// Refuses a read of `(key, range_end)` by `who` (Range, Watch creation).
    pub fn check_range(&self, who: &Option<AuthInfo>, key: &[u8], range_end: &[u8]) -> Result<(), tonic::Status> {
        match &self.0 {
            Some(a) => a.view().check_range(who.as_ref(), key, range_end).map_err(|e| crate::api::status::rpc_error(StorageError::Auth(e))),
            None => Ok(()),
        }
    }
}
