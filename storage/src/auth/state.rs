//! The replicated auth state (users, roles, the enabled flag, the auth revision) and the
//! deterministic application of every auth command to it, with etcd's rules
//! (etcd: `server/auth/store.go`).
//!
//! Determinism: users and roles live in `BTreeMap`s; a user's roles and a role's
//! permissions are kept sorted, as etcd keeps them; nothing reads a clock or random
//! source. Passwords arrive already hashed (the proposing member runs bcrypt).
//!
//! The auth revision starts at 1 (etcd's first start commits revision 1) and is raised by
//! every change except AuthEnable and no-op grants, exactly where etcd raises it.

use std::collections::BTreeMap;

use cairn_proto::authpb::{Permission, Role, User, UserAddOptions};
use cairn_proto::cairnpb::AuthState as AuthStateRecord;
use cairn_proto::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use prost::Message;

use super::error::AuthError;

/// The name of the superuser and of the role granting everything.
pub const ROOT: &str = "root";

/// Users, roles, the enabled flag and the auth revision (module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState { enabled: false, revision: 1, users: BTreeMap::new(), roles: BTreeMap::new() }
    }
}

type R = Result<(), AuthError>;

impl AuthState {
    /// Decodes the stored record (see [`AuthState::encode`]).
    pub fn decode(bytes: &[u8]) -> Result<AuthState, prost::DecodeError> {
        let r = AuthStateRecord::decode(bytes)?;
        let name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(AuthState {
            enabled: r.enabled,
            revision: r.revision.max(1),
            users: r.users.into_iter().map(|u| (name(&u.name), u)).collect(),
            roles: r.roles.into_iter().map(|ro| (name(&ro.name), ro)).collect(),
        })
    }

    /// The stored record: `cairnpb.AuthState` (users and roles in name order).
    pub fn encode(&self) -> Vec<u8> {
        AuthStateRecord {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
        .encode_to_vec()
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The user `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The role `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every user name, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Every role name, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    fn bump(&mut self) -> R {
        self.revision += 1;
        Ok(())
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, AuthError> {
        self.users.get_mut(name).ok_or(AuthError::UserNotFound)
    }

    /// AuthEnable: needs `root` with the `root` role; enabling twice is no change.
    pub fn enable(&mut self) -> R {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !has_role(root, ROOT) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(())
    }

    /// AuthDisable; disabling twice is no change.
    pub fn disable(&mut self) -> R {
        if !self.enabled {
            return Ok(());
        }
        self.enabled = false;
        self.bump()
    }

    /// Authenticate (the password was checked by the proposer): the user must still exist
    /// and have a password.
    pub fn check_login(&self, name: &str) -> R {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        match self.users.get(name) {
            Some(u) if !no_password(u) => Ok(()),
            _ => Err(AuthError::AuthFailed),
        }
    }

    /// UserAdd; `r.hashed_password` is the bcrypt hash (ignored for a no-password user).
    pub fn user_add(&mut self, r: &AuthUserAddRequest) -> R {
        if r.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let options = r.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password { Vec::new() } else { r.hashed_password.clone().into_bytes() };
        let user = User { name: r.name.clone().into_bytes(), password, roles: Vec::new(), options: Some(options) };
        self.users.insert(r.name.clone(), user);
        self.bump()
    }

    /// UserDelete; `root` cannot be deleted while auth is on.
    pub fn user_delete(&mut self, name: &str) -> R {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.bump()
    }

    /// UserChangePassword (a no-password user keeps having none).
    pub fn user_change_password(&mut self, r: &AuthUserChangePasswordRequest) -> R {
        let user = self.user_mut(&r.name)?;
        user.password = if no_password(user) { Vec::new() } else { r.hashed_password.clone().into_bytes() };
        self.bump()
    }

    /// UserGrantRole; granting a role the user has is no change. `root` needs no
    /// role record.
    pub fn user_grant_role(&mut self, r: &AuthUserGrantRoleRequest) -> R {
        if !self.users.contains_key(&r.user) {
            return Err(AuthError::UserNotFound);
        }
        if r.role != ROOT && !self.roles.contains_key(&r.role) {
            return Err(AuthError::RoleNotFound);
        }
        let user = self.user_mut(&r.user)?;
        match user.roles.binary_search(&r.role) {
            Ok(_) => Ok(()),
            Err(at) => {
                user.roles.insert(at, r.role.clone());
                self.bump()
            }
        }
    }

    /// UserRevokeRole; `root` keeps the `root` role while auth is on.
    pub fn user_revoke_role(&mut self, r: &AuthUserRevokeRoleRequest) -> R {
        if self.enabled && r.name == ROOT && r.role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.user_mut(&r.name)?;
        let before = user.roles.len();
        user.roles.retain(|x| *x != r.role);
        if user.roles.len() == before {
            return Err(AuthError::RoleNotGranted);
        }
        self.bump()
    }

    /// RoleAdd.
    pub fn role_add(&mut self, name: &str) -> R {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.roles.insert(name.to_string(), Role { name: name.as_bytes().to_vec(), key_permission: Vec::new() });
        self.bump()
    }

    /// RoleDelete, revoking the role from every user; the `root` role cannot be deleted
    /// while auth is on.
    pub fn role_delete(&mut self, name: &str) -> R {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|x| x != name);
        }
        self.bump()
    }

    /// RoleGrantPermission: replaces the type of a permission on the same range, or adds
    /// it (permissions stay sorted by key).
    pub fn role_grant_permission(&mut self, r: &AuthRoleGrantPermissionRequest) -> R {
        let perm = r.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
        let role = self.roles.get_mut(&r.name).ok_or(AuthError::RoleNotFound)?;
        let perms = &mut role.key_permission;
        match perms.iter_mut().find(|p| p.key == perm.key && p.range_end == perm.range_end) {
            Some(p) => p.perm_type = perm.perm_type,
            None => {
                let at = perms.partition_point(|p| p.key <= perm.key);
                perms.insert(at, Permission { perm_type: perm.perm_type, key: perm.key.clone(), range_end: perm.range_end.clone() });
            }
        }
        self.bump()
    }

    /// RoleRevokePermission of the permission on exactly `(key, range_end)`.
    pub fn role_revoke_permission(&mut self, r: &AuthRoleRevokePermissionRequest) -> R {
        let role = self.roles.get_mut(&r.role).ok_or(AuthError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission.retain(|p| !(p.key == r.key && p.range_end == r.range_end));
        if role.key_permission.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.bump()
    }
}

/// True when `user` has `role`.
pub fn has_role(user: &User, role: &str) -> bool {
    user.roles.iter().any(|r| r == role)
}

/// True for a user added with `--no-password` (it logs in only by certificate).
pub fn no_password(user: &User) -> bool {
    user.options.is_some_and(|o| o.no_password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::authpb::permission::Type as PermType;

    fn add_user(s: &mut AuthState, name: &str) -> R {
        s.user_add(&AuthUserAddRequest { name: name.into(), hashed_password: "h".into(), ..Default::default() })
    }

    fn grant(s: &mut AuthState, user: &str, role: &str) -> R {
        s.user_grant_role(&AuthUserGrantRoleRequest { user: user.into(), role: role.into() })
    }

    #[test]
    fn enable_needs_root_with_root_role() {
        let mut s = AuthState::default();
        assert_eq!(s.enable(), Err(AuthError::RootUserNotExist));
        add_user(&mut s, ROOT).unwrap();
        assert_eq!(s.enable(), Err(AuthError::RootRoleNotExist));
        grant(&mut s, ROOT, ROOT).unwrap();
        let rev = s.revision();
        s.enable().unwrap();
        assert!(s.enabled());
        assert_eq!(s.revision(), rev, "enable does not raise the revision");
        assert_eq!(s.user_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(s.role_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(
            s.user_revoke_role(&AuthUserRevokeRoleRequest { name: ROOT.into(), role: ROOT.into() }),
            Err(AuthError::InvalidAuthMgmt)
        );
        s.disable().unwrap();
        assert_eq!(s.revision(), rev + 1);
        s.user_revoke_role(&AuthUserRevokeRoleRequest { name: ROOT.into(), role: ROOT.into() }).unwrap();
    }

    #[test]
    fn users_and_roles_errors() {
        let mut s = AuthState::default();
        assert_eq!(add_user(&mut s, ""), Err(AuthError::UserEmpty));
        add_user(&mut s, "u").unwrap();
        assert_eq!(add_user(&mut s, "u"), Err(AuthError::UserAlreadyExist));
        assert_eq!(grant(&mut s, "x", "r"), Err(AuthError::UserNotFound));
        assert_eq!(grant(&mut s, "u", "r"), Err(AuthError::RoleNotFound));
        assert_eq!(s.role_add(""), Err(AuthError::RoleEmpty));
        s.role_add("r").unwrap();
        assert_eq!(s.role_add("r"), Err(AuthError::RoleAlreadyExist));
        grant(&mut s, "u", "r").unwrap();
        let rev = s.revision();
        grant(&mut s, "u", "r").unwrap();
        assert_eq!(s.revision(), rev, "a second grant changes nothing");
        assert_eq!(
            s.user_revoke_role(&AuthUserRevokeRoleRequest { name: "u".into(), role: "q".into() }),
            Err(AuthError::RoleNotGranted)
        );
        s.role_delete("r").unwrap();
        assert!(s.user("u").unwrap().roles.is_empty(), "deleting a role revokes it");
        assert_eq!(s.role_delete("r"), Err(AuthError::RoleNotFound));
        assert_eq!(s.user_delete("x"), Err(AuthError::UserNotFound));
    }

    #[test]
    fn permissions_sorted_replaced_and_revoked() {
        let mut s = AuthState::default();
        s.role_add("r").unwrap();
        let g = |key: &str, t: PermType| AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(Permission { perm_type: t as i32, key: key.into(), range_end: vec![] }),
        };
        s.role_grant_permission(&g("b", PermType::Read)).unwrap();
        s.role_grant_permission(&g("a", PermType::Read)).unwrap();
        s.role_grant_permission(&g("b", PermType::Write)).unwrap();
        let perms = &s.role("r").unwrap().key_permission;
        assert_eq!(perms.iter().map(|p| (p.key.clone(), p.perm_type)).collect::<Vec<_>>(), vec![
            (b"a".to_vec(), PermType::Read as i32),
            (b"b".to_vec(), PermType::Write as i32)
        ]);
        assert_eq!(
            s.role_grant_permission(&AuthRoleGrantPermissionRequest { name: "r".into(), perm: None }),
            Err(AuthError::PermissionNotGiven)
        );
        let revoke = |key: &str| AuthRoleRevokePermissionRequest { role: "r".into(), key: key.into(), range_end: vec![] };
        s.role_revoke_permission(&revoke("a")).unwrap();
        assert_eq!(s.role_revoke_permission(&revoke("a")), Err(AuthError::PermissionNotGranted));
    }

    #[test]
    fn encode_round_trips() {
        let mut s = AuthState::default();
        add_user(&mut s, ROOT).unwrap();
        grant(&mut s, ROOT, ROOT).unwrap();
        s.role_add("r").unwrap();
        s.enable().unwrap();
        assert_eq!(AuthState::decode(&s.encode()).unwrap(), s);
    }
}
