//! The write path's interface: a command goes in, its applied (and durable) result comes out.
//!
//! The one implementation is [`crate::member::raft_proposer::RaftProposer`] (every member,
//! a single one and the embedded engine included, writes through Raft); the services and
//! the lessor see only this trait.

use std::future::Future;
use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::RequestAuth;
use cairn_storage::ApplyResponse;

use crate::error::RequestError;

/// Puts state-machine commands through the write path.
///
/// Contract for implementations:
/// - the returned future resolves only after the command was applied **and** its effects are
///   durable; the response is the one the state machine returned for *this* command (matched
///   by request id, never by position in a queue);
/// - a command whose encoding exceeds the configured `--max-request-bytes` is refused with
///   `Storage(RequestTooLarge)` before it enters the pipeline;
/// - after a fatal storage error every pending and later proposal fails
///   ([`RequestError::Halted`]); nothing is acknowledged on top of lost data;
/// - dropping the future abandons the wait, not the command: it may still be applied.
pub trait Proposer: Send + Sync + 'static {
    /// Proposes `request` as no user (the server's own commands, or auth off) and waits
    /// for its result.
    fn propose(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<ApplyResponse, RequestError>> + Send {
        self.propose_as(request, None)
    }

    /// Proposes `request` on behalf of the user `auth` names (the apply re-checks its
    /// permissions at the auth revision recorded there) and waits for its result.
    fn propose_as(
        &self,
        request: Request,
        auth: Option<RequestAuth>,
    ) -> impl Future<Output = Result<ApplyResponse, RequestError>> + Send;

    /// Waits until a read served from the local store afterwards is linearizable: it sees
    /// every write acknowledged (by any member) before this call. One node whose reads see
    /// only durable, acknowledged state has nothing to wait for; a Raft member runs a
    /// ReadIndex round and waits until it applied the index.
    fn read_barrier(&self) -> impl Future<Output = Result<(), RequestError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Why the write path stopped for good, if it did (`/health` reports it).
    fn halted(&self) -> Option<Arc<str>> {
        None
    }
}

/// The name of a command kind, for logs and error messages.
pub fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Put(_) => "Put",
        Request::DeleteRange(_) => "DeleteRange",
        Request::Txn(_) => "Txn",
        Request::Compaction(_) => "Compaction",
        Request::LeaseGrant(_) => "LeaseGrant",
        Request::LeaseRevoke(_) => "LeaseRevoke",
        Request::LeaseCheckpoint(_) => "LeaseCheckpoint",
        Request::LeaseExpire(_) => "LeaseExpire",
        Request::MemberAttr(_) => "MemberAttr",
        Request::Alarm(_) => "Alarm",
        Request::AuthEnable(_) => "AuthEnable",
        Request::AuthDisable(_) => "AuthDisable",
        Request::Authenticate(_) => "Authenticate",
        Request::AuthUserAdd(_) => "UserAdd",
        Request::AuthUserDelete(_) => "UserDelete",
        Request::AuthUserChangePassword(_) => "UserChangePassword",
        Request::AuthUserGrantRole(_) => "UserGrantRole",
        Request::AuthUserRevokeRole(_) => "UserRevokeRole",
        Request::AuthRoleAdd(_) => "RoleAdd",
        Request::AuthRoleDelete(_) => "RoleDelete",
        Request::AuthRoleGrantPermission(_) => "RoleGrantPermission",
        Request::AuthRoleRevokePermission(_) => "RoleRevokePermission",
    }
}

/// The name of a response kind, for error messages.
pub fn response_kind(response: &ApplyResponse) -> &'static str {
    match response {
        ApplyResponse::Put(_) => "Put",
        ApplyResponse::DeleteRange(_) => "DeleteRange",
        ApplyResponse::Txn(_) => "Txn",
        ApplyResponse::Compaction(_) => "Compaction",
        ApplyResponse::LeaseGrant(_) => "LeaseGrant",
        ApplyResponse::LeaseRevoke(_) => "LeaseRevoke",
        ApplyResponse::LeaseCheckpoint(_) => "LeaseCheckpoint",
        ApplyResponse::LeaseExpire { .. } => "LeaseExpire",
        ApplyResponse::Alarm(_) => "Alarm",
        ApplyResponse::Auth { .. } => "Auth",
        ApplyResponse::Authenticated { .. } => "Authenticated",
        ApplyResponse::Skipped => "Skipped",
    }
}
