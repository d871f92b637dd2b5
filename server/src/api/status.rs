//! The one place that turns errors into gRPC statuses, with etcd's exact codes and messages
//! (etcd: `api/v3rpc/rpctypes/error.go` and `api/v3rpc/util.go`). Clients compare the
//! messages byte for byte (clientv3's `rpctypes.Error`, kube-apiserver's compaction check),
//! so every message here is etcd's, prefix included.

use cairn_storage::auth::AuthError;
use cairn_storage::Error as StorageError;
use tonic::{Code, Status};

use crate::error::RequestError;

/// UNIMPLEMENTED for one method of a served service that cairn does not implement yet.
pub fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!("cairn: {method} is not implemented yet"))
}

/// The gRPC status etcd sends for `err`.
pub fn to_status(err: &RequestError) -> Status {
    let (code, message) = match err {
        RequestError::Storage(e) => storage_code_and_message(e),
        // The write path is gone on this member; Unavailable makes clients try another one.
        RequestError::Halted(_) | RequestError::Stopped => {
            (Code::Unavailable, "etcdserver: server stopped")
        }
        RequestError::NoLeader => (Code::Unavailable, "etcdserver: no leader"),
        RequestError::Timeout => (Code::Unavailable, "etcdserver: request timed out"),
        RequestError::LeaderChanged => (Code::Unavailable, "etcdserver: leader changed"),
        RequestError::MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
        RequestError::PeerUrlExists => (Code::FailedPrecondition, "etcdserver: Peer URLs already exists"),
        // etcd maps membership.ErrIDRemoved to the not-found error too
        RequestError::MemberRemoved => (Code::NotFound, "etcdserver: member not found"),
        RequestError::NotALearner => (Code::FailedPrecondition, "etcdserver: can only promote a learner member"),
        RequestError::LearnerNotReady => (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        RequestError::NotSupportedForLearner => (Code::Unavailable, "etcdserver: rpc not supported for learner"),
        RequestError::UnhealthyCluster => (Code::Unavailable, "etcdserver: unhealthy cluster"),
        RequestError::NotEnoughStartedMembers => {
            (Code::FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members")
        }
        RequestError::NotLeader(message) => (Code::FailedPrecondition, *message),
        RequestError::ResponseMismatch { .. } => {
            return Status::internal(format!("cairn: {err}"));
        }
    };
    Status::new(code, message)
}

fn storage_code_and_message(e: &StorageError) -> (Code, &'static str) {
    use StorageError as E;
    match e {
        E::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        E::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        // etcd answers a RequestOp with no operation set with ErrGRPCKeyNotFound.
        E::EmptyRequest => (Code::InvalidArgument, "etcdserver: key not found"),
        E::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        E::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        E::TooManyOps => (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        E::DuplicateKey => (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        E::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
        E::InvalidSortOption => (Code::InvalidArgument, "etcdserver: invalid sort option"),
        E::Compacted => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        E::FutureRev => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        E::Auth(a) => auth_code_and_message(a),
        E::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
        E::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
        E::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
        E::NoSpace => (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        ),
        // etcd's ErrGRPCCorrupt, for a CORRUPT alarm's refusal (etcd has no other)
        E::CorruptCluster => (Code::DataLoss, "etcdserver: corrupt cluster"),
        E::Corrupt { .. } => (Code::DataLoss, "etcdserver: corrupt cluster"),
        // A failed backend stops this member's write path for good (sticky), as etcd's
        // panicking backend would; clients should go to another member.
        E::Backend(_) | E::Stopped => (Code::Unavailable, "etcdserver: server stopped"),
        // only opening a data folder with the other engine fails so; never a request
        E::WrongEngine { .. } => (Code::Unavailable, "etcdserver: server stopped"),
    }
}

fn auth_code_and_message(e: &AuthError) -> (Code, &'static str) {
    use AuthError as A;
    match e {
        A::RootUserNotExist => (Code::FailedPrecondition, "etcdserver: root user does not exist"),
        A::RootRoleNotExist => (Code::FailedPrecondition, "etcdserver: root user does not have root role"),
        A::UserAlreadyExist => (Code::FailedPrecondition, "etcdserver: user name already exists"),
        A::UserEmpty => (Code::InvalidArgument, "etcdserver: user name is empty"),
        A::UserNotFound => (Code::FailedPrecondition, "etcdserver: user name not found"),
        A::RoleAlreadyExist => (Code::FailedPrecondition, "etcdserver: role name already exists"),
        A::RoleNotFound => (Code::FailedPrecondition, "etcdserver: role name not found"),
        A::RoleEmpty => (Code::InvalidArgument, "etcdserver: role name is empty"),
        A::AuthFailed => (Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"),
        A::PermissionDenied => (Code::PermissionDenied, "etcdserver: permission denied"),
        A::RoleNotGranted => (Code::FailedPrecondition, "etcdserver: role is not granted to the user"),
        A::PermissionNotGranted => (Code::FailedPrecondition, "etcdserver: permission is not granted to the role"),
        A::AuthNotEnabled => (Code::FailedPrecondition, "etcdserver: authentication is not enabled"),
        A::InvalidAuthToken => (Code::Unauthenticated, "etcdserver: invalid auth token"),
        A::InvalidAuthMgmt => (Code::InvalidArgument, "etcdserver: invalid auth management"),
        // etcd 3.4's ErrGRPCAuthOldRevision; clients re-authenticate and retry on it
        A::AuthOldRevision => (Code::InvalidArgument, "etcdserver: revision of auth store is old"),
        A::PermissionNotGiven => (Code::InvalidArgument, "etcdserver: permission not given"),
    }
}

impl From<RequestError> for Status {
    fn from(err: RequestError) -> Status {
        to_status(&err)
    }
}

/// Shorthand for `.map_err(rpc_error)?` on storage and pipeline results in service handlers.
pub fn rpc_error(err: impl Into<RequestError>) -> Status {
    to_status(&err.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(err: StorageError, code: Code, message: &str) {
        let status = rpc_error(err);
        assert_eq!(status.code(), code, "{message}");
        assert_eq!(status.message(), message);
    }

    #[test]
    fn every_storage_error_maps_to_etcds_status() {
        use Code::*;
        check(
            StorageError::EmptyKey,
            InvalidArgument,
            "etcdserver: key is not provided",
        );
        check(
            StorageError::KeyNotFound,
            InvalidArgument,
            "etcdserver: key not found",
        );
        check(
            StorageError::EmptyRequest,
            InvalidArgument,
            "etcdserver: key not found",
        );
        check(
            StorageError::ValueProvided,
            InvalidArgument,
            "etcdserver: value is provided",
        );
        check(
            StorageError::LeaseProvided,
            InvalidArgument,
            "etcdserver: lease is provided",
        );
        check(
            StorageError::TooManyOps,
            InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        check(
            StorageError::DuplicateKey,
            InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        check(
            StorageError::RequestTooLarge,
            InvalidArgument,
            "etcdserver: request is too large",
        );
        check(
            StorageError::InvalidSortOption,
            InvalidArgument,
            "etcdserver: invalid sort option",
        );
        check(
            StorageError::Compacted,
            OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        check(
            StorageError::FutureRev,
            OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        check(
            StorageError::LeaseNotFound,
            NotFound,
            "etcdserver: requested lease not found",
        );
        check(
            StorageError::LeaseExists,
            FailedPrecondition,
            "etcdserver: lease already exists",
        );
        check(
            StorageError::LeaseTtlTooLarge,
            OutOfRange,
            "etcdserver: too large lease TTL",
        );
        check(
            StorageError::NoSpace,
            ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        );
        check(
            StorageError::Corrupt {
                what: "index",
                detail: "x".into(),
            },
            DataLoss,
            "etcdserver: corrupt cluster",
        );
        check(StorageError::CorruptCluster, DataLoss, "etcdserver: corrupt cluster");
        check(
            StorageError::Backend("disk".into()),
            Unavailable,
            "etcdserver: server stopped",
        );
        check(
            StorageError::Stopped,
            Unavailable,
            "etcdserver: server stopped",
        );
    }

    #[test]
    fn pipeline_errors() {
        let s = Status::from(RequestError::Halted("fsync failed".into()));
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: server stopped")
        );
        let s = Status::from(RequestError::Stopped);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: server stopped")
        );
        let s = Status::from(RequestError::ResponseMismatch {
            request: "Put",
            got: "Txn",
        });
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().contains("Put got a Txn response"));
    }
}
