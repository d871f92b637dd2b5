//! Malformed protobuf as the request of every gRPC method: arbitrary bytes, and valid
//! encodings with a byte flipped, cut short or inserted (a proptest with a fixed seed;
//! `PROPTEST_CASES` runs more). The server never drops the call or the connection, and
//! never goes down: every call ends with a gRPC status.
//!
//! Bytes that do not decode as the method's request are answered INTERNAL, as grpc-go
//! (etcd) answers them ("grpc: error unmarshalling request: ..."); tonic's message is
//! prost's ("failed to decode Protobuf message: ..."), and clients only see the code.
//! etcd's decoder (gogo/protobuf) accepts some bytes prost refuses (invalid UTF-8 in a
//! `string` field, for one), so against etcd only the presence of a status is checked.
//!
//! Bytes that do decode are sent only to methods where any request is harmless
//! (reads, puts under random keys, lease grants...): a random MemberAdd, Alarm,
//! AuthEnable or DeleteRange that happened to decode would change the server under test
//! (a random range deleted the control client's key). On
//! the two streaming methods only undecodable bytes are sent: a decodable watch stays
//! open by design.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cairn_proto::etcdserverpb::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use prost::Message;

use crate::common::{target_kind, Kind, Server};
use crate::raw::Conn;
use crate::support::{call_bytes, code, Control};

/// One gRPC method: its path, whether bytes decode as its request, and whether any
/// decodable request is harmless to send.
struct Method {
    path: &'static str,
    decodes: fn(&[u8]) -> bool,
    any_request_is_harmless: bool,
}

fn decodes<M: Message + Default>(b: &[u8]) -> bool {
    M::decode(b).is_ok()
}

macro_rules! methods {
    ($($service:literal / $name:literal : $t:ty, $harmless:expr;)*) => {
        &[$(Method { path: concat!("/etcdserverpb.", $service, "/", $name), decodes: decodes::<$t>, any_request_is_harmless: $harmless },)*]
    };
}

const METHODS: &[Method] = methods! {
    "KV"/"Range": RangeRequest, true;
    "KV"/"Put": PutRequest, true;
    "KV"/"DeleteRange": DeleteRangeRequest, false;
    "KV"/"Txn": TxnRequest, false;
    "KV"/"Compact": CompactionRequest, false;
    "Watch"/"Watch": WatchRequest, false;
    "Lease"/"LeaseGrant": LeaseGrantRequest, true;
    "Lease"/"LeaseRevoke": LeaseRevokeRequest, true;
    "Lease"/"LeaseKeepAlive": LeaseKeepAliveRequest, false;
    "Lease"/"LeaseTimeToLive": LeaseTimeToLiveRequest, true;
    "Lease"/"LeaseLeases": LeaseLeasesRequest, true;
    "Cluster"/"MemberAdd": MemberAddRequest, false;
    "Cluster"/"MemberRemove": MemberRemoveRequest, false;
    "Cluster"/"MemberUpdate": MemberUpdateRequest, false;
    "Cluster"/"MemberList": MemberListRequest, true;
    "Cluster"/"MemberPromote": MemberPromoteRequest, false;
    "Maintenance"/"Alarm": AlarmRequest, false;
    "Maintenance"/"Status": StatusRequest, true;
    "Maintenance"/"Defragment": DefragmentRequest, false;
    "Maintenance"/"Hash": HashRequest, true;
    "Maintenance"/"HashKV": HashKvRequest, true;
    "Maintenance"/"Snapshot": SnapshotRequest, false;
    "Maintenance"/"MoveLeader": MoveLeaderRequest, false;
    "Maintenance"/"Downgrade": DowngradeRequest, false;
    "Auth"/"AuthEnable": AuthEnableRequest, false;
    "Auth"/"AuthDisable": AuthDisableRequest, false;
    "Auth"/"AuthStatus": AuthStatusRequest, true;
    "Auth"/"Authenticate": AuthenticateRequest, true;
    "Auth"/"UserAdd": AuthUserAddRequest, false;
    "Auth"/"UserGet": AuthUserGetRequest, true;
    "Auth"/"UserList": AuthUserListRequest, true;
    "Auth"/"UserDelete": AuthUserDeleteRequest, false;
    "Auth"/"UserChangePassword": AuthUserChangePasswordRequest, false;
    "Auth"/"UserGrantRole": AuthUserGrantRoleRequest, false;
    "Auth"/"UserRevokeRole": AuthUserRevokeRoleRequest, false;
    "Auth"/"RoleAdd": AuthRoleAddRequest, false;
    "Auth"/"RoleGet": AuthRoleGetRequest, true;
    "Auth"/"RoleList": AuthRoleListRequest, true;
    "Auth"/"RoleDelete": AuthRoleDeleteRequest, false;
    "Auth"/"RoleGrantPermission": AuthRoleGrantPermissionRequest, false;
    "Auth"/"RoleRevokePermission": AuthRoleRevokePermissionRequest, false;
};

/// Valid encodings to mutate: requests with every kind of field (strings, bytes,
/// varints, enums, nested and repeated messages, oneofs).
fn seeds() -> Vec<Vec<u8>> {
    let put = PutRequest { key: b"/k".to_vec(), value: b"value".to_vec(), lease: 7, prev_kv: true, ..Default::default() };
    let range = RangeRequest { key: b"/a".to_vec(), range_end: b"/z".to_vec(), limit: 10, sort_order: 1, sort_target: 2, ..Default::default() };
    let txn = TxnRequest {
        compare: vec![Compare {
            result: 1,
            target: 2,
            key: b"/k".to_vec(),
            target_union: Some(compare::TargetUnion::Version(3)),
            ..Default::default()
        }],
        success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put.clone())) }],
        failure: vec![RequestOp { request: Some(request_op::Request::RequestRange(range.clone())) }],
    };
    let watch = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"/w".to_vec(),
            filters: vec![1],
            start_revision: 5,
            ..Default::default()
        })),
    };
    let user = AuthUserAddRequest { name: "user".into(), password: "secret".into(), ..Default::default() };
    let member = MemberAddRequest { peer_ur_ls: vec!["http://127.0.0.1:1".into()], is_learner: true };
    let perm = AuthRoleGrantPermissionRequest {
        name: "role".into(),
        perm: Some(cairn_proto::authpb::Permission { perm_type: 2, key: b"/".to_vec(), range_end: b"0".to_vec() }),
    };
    vec![
        put.encode_to_vec(),
        range.encode_to_vec(),
        txn.encode_to_vec(),
        watch.encode_to_vec(),
        user.encode_to_vec(),
        member.encode_to_vec(),
        perm.encode_to_vec(),
        LeaseKeepAliveRequest { id: 42 }.encode_to_vec(),
    ]
}

/// A seed with one byte flipped (0), cut short (1) or with a byte inserted (2).
fn mutate(seed: &[u8], how: u8, at: usize, byte: u8) -> Vec<u8> {
    let mut b = seed.to_vec();
    let at = at % (b.len() + 1);
    match how % 3 {
        0 if at < b.len() => b[at] ^= byte | 1,
        1 => b.truncate(at),
        _ => b.insert(at, byte),
    }
    b
}

fn framed(body: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(5 + body.len());
    f.put_u8(0);
    f.put_u32(body.len() as u32);
    f.extend_from_slice(body);
    f.freeze()
}

#[test]
fn malformed_requests_to_every_method_are_answered_with_a_status() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    let kind = server.kind();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (conn, mut control) = rt.block_on(async { (Conn::connect(addr).await, Control::start(addr).await) });
    let seeds = seeds();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let input = (
        0..METHODS.len(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            (0..seeds.len(), any::<u8>(), any::<usize>(), any::<u8>()).prop_map(move |(s, how, at, byte)| mutate(&seeds[s], how, at, byte)),
        ],
    );
    let sent = [std::cell::Cell::new(0u64), std::cell::Cell::new(0u64)];
    let result = runner.run(&input, |(m, body)| {
        let method = &METHODS[m];
        let decodable = (method.decodes)(&body);
        if decodable && !method.any_request_is_harmless {
            return Ok(());
        }
        sent[usize::from(decodable)].set(sent[usize::from(decodable)].get() + 1);
        let ended = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), call_bytes(&conn, method.path, framed(&body), true)).await })
            .map_err(|_| TestCaseError::fail(format!("{}: no answer in 10 s to {body:02x?}", method.path)))?;
        let Some(status) = ended.code else {
            return Err(TestCaseError::fail(format!("{}: no grpc-status for {body:02x?}: {ended:?}", method.path)));
        };
        if !decodable && kind == Kind::Cairn {
            prop_assert_eq!(status, code::INTERNAL, "{}: {:02x?} answered {:?}", method.path, body, ended);
        }
        prop_assert_eq!(conn.ended(), None, "the connection ended");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let sent = [sent[0].get(), sent[1].get()];
    eprintln!("{kind:?}: {} undecodable and {} decodable requests answered with a status", sent[0], sent[1]);
    assert!(sent[0] > 100 && sent[1] > 100, "too few cases of each kind: {sent:?}");
    rt.block_on(async {
        control.wait_rounds(3).await;
        control.finish(1).await;
    });
}
