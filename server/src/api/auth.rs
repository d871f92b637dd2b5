//! The Auth service, registered so that clients get a clear UNIMPLEMENTED answer naming the
//! method instead of a bare "unknown service": authentication is not implemented yet.
//! Also [`not_yet`], the answer of single methods of served services that are missing
//! (Maintenance's Snapshot, Defragment, ...).

use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

/// UNIMPLEMENTED for one method of an otherwise served service.
pub fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!("cairn: {method} is not implemented yet"))
}

/// UNIMPLEMENTED for a method of a service that is not implemented at all.
pub fn service_not_yet(service: &str, method: &str) -> Status {
    Status::unimplemented(format!(
        "cairn: the {service} service is not implemented yet ({method})"
    ))
}

/// Auth, every method answering UNIMPLEMENTED.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unimplemented;

/// Implements a service's trait with every listed unary method answering UNIMPLEMENTED;
/// `extra` items (streaming methods and their stream types) are written out by the caller.
macro_rules! not_yet_service {
    ($trait_:ident, $service:literal, { $($extra:tt)* }, $($method:ident($req:ty) -> $resp:ty = $name:literal;)*) => {
        #[tonic::async_trait]
        impl $trait_ for Unimplemented {
            $($extra)*
            $(
                async fn $method(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(service_not_yet($service, $name))
                }
            )*
        }
    };
}

not_yet_service!(Auth, "Auth", {},
    auth_enable(AuthEnableRequest) -> AuthEnableResponse = "AuthEnable";
    auth_disable(AuthDisableRequest) -> AuthDisableResponse = "AuthDisable";
    auth_status(AuthStatusRequest) -> AuthStatusResponse = "AuthStatus";
    authenticate(AuthenticateRequest) -> AuthenticateResponse = "Authenticate";
    user_add(AuthUserAddRequest) -> AuthUserAddResponse = "UserAdd";
    user_get(AuthUserGetRequest) -> AuthUserGetResponse = "UserGet";
    user_list(AuthUserListRequest) -> AuthUserListResponse = "UserList";
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse = "UserDelete";
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse = "UserChangePassword";
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse = "UserGrantRole";
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse = "UserRevokeRole";
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse = "RoleAdd";
    role_get(AuthRoleGetRequest) -> AuthRoleGetResponse = "RoleGet";
    role_list(AuthRoleListRequest) -> AuthRoleListResponse = "RoleList";
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse = "RoleDelete";
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse = "RoleGrantPermission";
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse = "RoleRevokePermission";
);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn methods_answer_unimplemented_with_their_name() {
        let err = Auth::auth_status(&Unimplemented, Request::new(AuthStatusRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert_eq!(
            err.message(),
            "cairn: the Auth service is not implemented yet (AuthStatus)"
        );
        assert_eq!(
            not_yet("Hash").message(),
            "cairn: Hash is not implemented yet"
        );
    }
}
