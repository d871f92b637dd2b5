//! Errors of authentication and access control. Each is a deterministic answer (every
//! member computes the same one at apply); the server maps each to etcd's status in
//! `server/src/api/status.rs` (etcd: `api/v3rpc/rpctypes/error.go`).

/// Why an auth command or a permission check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// AuthEnable without a `root` user.
    #[error("root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of an existing name.
    #[error("user name already exists")]
    UserAlreadyExist,
    /// An empty user name (UserAdd), or a request without a user while auth is on.
    #[error("user name is empty")]
    UserEmpty,
    /// The named user does not exist.
    #[error("user name not found")]
    UserNotFound,
    /// RoleAdd of an existing name.
    #[error("role name already exists")]
    RoleAlreadyExist,
    /// The named role does not exist.
    #[error("role name not found")]
    RoleNotFound,
    /// RoleAdd with an empty name.
    #[error("role name is empty")]
    RoleEmpty,
    /// Wrong user or password, or a login of a user without password.
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The user may not do this.
    #[error("permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have.
    #[error("role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while authentication is off.
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown or expired.
    #[error("invalid auth token")]
    InvalidAuthToken,
    /// Deleting root, the root role, or revoking root from root while auth is on.
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    /// A write checked under an auth revision older than the one it is applied at.
    #[error("revision of auth store is old")]
    AuthOldRevision,
    /// RoleGrantPermission without a permission.
    #[error("permission not given")]
    PermissionNotGiven,
}
