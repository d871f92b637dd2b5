//! Checks of [`AuthView`] and [`apply_command`] as etcd makes them.

use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::authpb::Permission;
use cairn_proto::cairnpb::AuthenticateCommand;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget};
use cairn_proto::etcdserverpb::*;

use super::*;

fn who(name: &str, revision: u64) -> AuthInfo {
    AuthInfo { username: name.into(), revision }
}

/// Applies `cmd` as root (or as `as_user`), installing the new state.
fn run(view: &mut Arc<AuthView>, as_user: Option<&AuthInfo>, cmd: Request) -> Result<AuthApplied, AuthError> {
    let (next, out) = apply_command(view, as_user, &cmd, 9).expect("an auth command")?;
    if let Some(s) = next {
        *view = Arc::new(AuthView::new(s));
    }
    Ok(out)
}

/// root (root role), alice (role "a": readwrite on prefix "a/", read on from-key "z"),
/// bob (no roles); auth enabled.
fn setup() -> Arc<AuthView> {
    let mut v = Arc::new(AuthView::default());
    for u in [ROOT, "alice", "bob"] {
        run(&mut v, None, Request::AuthUserAdd(AuthUserAddRequest { name: u.into(), hashed_password: "h".into(), ..Default::default() })).unwrap();
    }
    run(&mut v, None, Request::AuthRoleAdd(AuthRoleAddRequest { name: "a".into() })).unwrap();
    for (key, end, t) in [("a/", &b"a0"[..], PermType::Readwrite), ("z", &b"\0"[..], PermType::Read)] {
        let perm = Permission { perm_type: t as i32, key: key.into(), range_end: end.to_vec() };
        run(&mut v, None, Request::AuthRoleGrantPermission(AuthRoleGrantPermissionRequest { name: "a".into(), perm: Some(perm) })).unwrap();
    }
    run(&mut v, None, Request::AuthUserGrantRole(AuthUserGrantRoleRequest { user: "alice".into(), role: "a".into() })).unwrap();
    run(&mut v, None, Request::AuthUserGrantRole(AuthUserGrantRoleRequest { user: ROOT.into(), role: ROOT.into() })).unwrap();
    run(&mut v, None, Request::AuthEnable(AuthEnableRequest {})).unwrap();
    v
}

#[test]
fn disabled_auth_permits_everything() {
    let v = AuthView::default();
    assert_eq!(v.check_put(None, b"k"), Ok(()));
    assert_eq!(v.check_admin(None), Ok(()));
}

#[test]
fn users_are_confined_to_their_grants() {
    let v = setup();
    let rev = v.revision();
    let (alice, bob, root) = (who("alice", rev), who("bob", rev), who(ROOT, rev));
    assert_eq!(v.check_put(Some(&alice), b"a/x"), Ok(()));
    assert_eq!(v.check_range(Some(&alice), b"a/", b"a0"), Ok(()));
    assert_eq!(v.check_put(Some(&alice), b"b"), Err(AuthError::PermissionDenied));
    assert_eq!(v.check_range(Some(&alice), b"zz", b""), Ok(()));
    assert_eq!(v.check_put(Some(&alice), b"zz"), Err(AuthError::PermissionDenied));
    assert_eq!(v.check_range(Some(&bob), b"a/x", b""), Err(AuthError::PermissionDenied));
    assert_eq!(v.check_range(Some(&root), b"", b"\0"), Ok(()));
    assert_eq!(v.check_range(Some(&who("ghost", rev)), b"a/", b""), Err(AuthError::PermissionDenied));
    assert_eq!(v.check_range(None, b"a/", b""), Err(AuthError::UserEmpty));
    assert_eq!(v.check_put(Some(&who("alice", rev - 1)), b"a/x"), Err(AuthError::AuthOldRevision));
    assert_eq!(v.check_admin(Some(&alice)), Err(AuthError::PermissionDenied));
    assert_eq!(v.check_admin(Some(&who("ghost", rev))), Err(AuthError::UserNotFound));
    assert_eq!(v.check_admin(Some(&root)), Ok(()));
}

#[test]
fn txn_checks_compares_and_both_branches() {
    let v = setup();
    let alice = who("alice", v.revision());
    let cmp = |k: &str| Compare { key: k.into(), result: CompareResult::Equal as i32, target: CompareTarget::Version as i32, ..Default::default() };
    let put = |k: &str| RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: k.into(), ..Default::default() })) };
    let ok = TxnRequest { compare: vec![cmp("a/1")], success: vec![put("a/2")], failure: vec![put("a/3")] };
    assert_eq!(v.check_txn(Some(&alice), &ok), Ok(()));
    for bad in [
        TxnRequest { compare: vec![cmp("b")], ..ok.clone() },
        TxnRequest { success: vec![put("b")], ..ok.clone() },
        TxnRequest { failure: vec![put("b")], ..ok.clone() },
        TxnRequest { failure: vec![RequestOp { request: Some(request_op::Request::RequestTxn(TxnRequest { success: vec![put("b")], ..Default::default() })) }], ..ok.clone() },
    ] {
        assert_eq!(v.check_txn(Some(&alice), &bad), Err(AuthError::PermissionDenied), "{bad:?}");
    }
}

#[test]
fn admin_commands_need_root_and_logins_get_tokens() {
    let mut v = setup();
    let alice = who("alice", v.revision());
    let add = Request::AuthRoleAdd(AuthRoleAddRequest { name: "x".into() });
    assert_eq!(run(&mut v, Some(&alice), add.clone()), Err(AuthError::PermissionDenied));
    assert_eq!(run(&mut v, None, add.clone()), Err(AuthError::UserEmpty));
    let before = v.revision();
    assert_eq!(run(&mut v, Some(&who(ROOT, 0)), add), Ok(AuthApplied::Changed));
    assert_eq!(v.revision(), before + 1);
    let login = Request::Authenticate(AuthenticateCommand { name: "alice".into(), token_prefix: "abc".into() });
    assert_eq!(run(&mut v, None, login), Ok(AuthApplied::Token { user: "alice".into(), token: "abc.9".into() }));
    let ghost = Request::Authenticate(AuthenticateCommand { name: "ghost".into(), token_prefix: "abc".into() });
    assert_eq!(run(&mut v, None, ghost), Err(AuthError::AuthFailed));
    assert!(apply_command(&v, None, &Request::Put(PutRequest::default()), 1).is_none());
}

#[test]
fn a_new_view_sees_revoked_permissions() {
    let mut v = setup();
    let root = who(ROOT, v.revision());
    assert_eq!(v.check_put(Some(&who("alice", v.revision())), b"a/x"), Ok(()));
    run(&mut v, Some(&root), Request::AuthUserRevokeRole(AuthUserRevokeRoleRequest { name: "alice".into(), role: "a".into() })).unwrap();
    assert_eq!(v.check_put(Some(&who("alice", v.revision())), b"a/x"), Err(AuthError::PermissionDenied));
}

mod store {
    use cairn_proto::cairnpb::{InternalRequest, RequestAuth};

    use super::*;
    use crate::{ApplyResponse, Error, Store, StoreConfig};

    fn apply(store: &Store, index: u64, as_user: Option<(&str, u64)>, r: Request) -> crate::Result<ApplyResponse> {
        let auth = as_user.map(|(u, rev)| RequestAuth { username: u.into(), auth_revision: rev });
        store.apply(index, &InternalRequest { id: index, request: Some(r), auth })
    }

    fn put(key: &str) -> Request {
        Request::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() })
    }

    #[test]
    fn auth_state_is_applied_persisted_and_checked_at_apply() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = 0;
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            let setup = setup();
            // replay setup()'s state through the store: users, role, grants, enable
            for u in [ROOT, "alice"] {
                index += 1;
                apply(&store, index, None, Request::AuthUserAdd(AuthUserAddRequest { name: u.into(), hashed_password: "h".into(), ..Default::default() })).unwrap();
            }
            let role = setup.state().role("a").unwrap().clone();
            index += 1;
            apply(&store, index, None, Request::AuthRoleAdd(AuthRoleAddRequest { name: "a".into() })).unwrap();
            for perm in role.key_permission {
                index += 1;
                apply(&store, index, None, Request::AuthRoleGrantPermission(AuthRoleGrantPermissionRequest { name: "a".into(), perm: Some(perm) })).unwrap();
            }
            for (user, role) in [("alice", "a"), (ROOT, ROOT)] {
                index += 1;
                apply(&store, index, None, Request::AuthUserGrantRole(AuthUserGrantRoleRequest { user: user.into(), role: role.into() })).unwrap();
            }
            index += 1;
            assert!(matches!(apply(&store, index, None, Request::AuthEnable(AuthEnableRequest {})).unwrap(), ApplyResponse::Auth { .. }));
            let rev = store.auth().revision();
            index += 1;
            assert!(matches!(apply(&store, index, Some(("alice", rev)), put("a/1")).unwrap(), ApplyResponse::Put(_)));
            index += 1;
            assert!(matches!(apply(&store, index, Some(("alice", rev)), put("b")), Err(Error::Auth(AuthError::PermissionDenied))));
            index += 1;
            assert!(matches!(apply(&store, index, None, put("a/2")), Err(Error::Auth(AuthError::UserEmpty))));
            // a revoke between proposing and applying: the old revision is refused
            index += 1;
            apply(&store, index, Some((ROOT, rev)), Request::AuthUserRevokeRole(AuthUserRevokeRoleRequest { name: "alice".into(), role: "a".into() })).unwrap();
            index += 1;
            assert!(matches!(apply(&store, index, Some(("alice", rev)), put("a/3")), Err(Error::Auth(AuthError::AuthOldRevision))));
            store.commit().unwrap();
            assert_eq!(store.applied_index(), index);
        }
        let store = Store::reopen_when_free(dir.path());
        let view = store.auth();
        assert!(view.enabled());
        assert_eq!(view.state().user_names(), vec!["alice".to_string(), ROOT.to_string()]);
        assert!(view.state().user("alice").unwrap().roles.is_empty());
        assert_eq!(view.state().role("a").unwrap().key_permission.len(), 2);
        let rev = view.revision();
        assert!(matches!(apply(&store, index + 1, Some(("alice", rev)), put("a/4")), Err(Error::Auth(AuthError::PermissionDenied))));
    }

    #[test]
    fn raft_snapshots_carry_the_auth_state() {
        let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = Store::open(StoreConfig::new(src_dir.path())).unwrap();
        let dst = Store::open(StoreConfig::new(dst_dir.path())).unwrap();
        apply(&src, 1, None, Request::AuthUserAdd(AuthUserAddRequest { name: ROOT.into(), hashed_password: "h".into(), ..Default::default() })).unwrap();
        apply(&src, 2, None, Request::AuthUserGrantRole(AuthUserGrantRoleRequest { user: ROOT.into(), role: ROOT.into() })).unwrap();
        apply(&src, 3, None, Request::AuthEnable(AuthEnableRequest {})).unwrap();
        src.commit().unwrap();
        // the follower had other auth state, which the snapshot replaces
        apply(&dst, 1, None, Request::AuthRoleAdd(AuthRoleAddRequest { name: "stale".into() })).unwrap();
        dst.commit().unwrap();
        let (index, bytes) = src.snapshot_bytes().unwrap();
        dst.restore(index, &bytes).unwrap();
        let view = dst.auth();
        assert!(view.enabled());
        assert_eq!(view.revision(), src.auth().revision());
        assert_eq!(view.state(), src.auth().state());
        assert!(view.state().role("stale").is_none());
        let who = Some(("nobody", view.revision()));
        assert!(matches!(apply(&dst, index + 1, who, put("k")), Err(Error::Auth(AuthError::PermissionDenied))));
    }
}
