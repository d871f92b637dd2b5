//! Every message cairn decodes from a client or a peer, on arbitrary bytes: the etcd v3
//! API's requests (as tonic decodes them, with prost) and the peer/Raft messages
//! (`cairnpb`). Never a panic; a decoded message re-encodes to bytes that decode to the
//! same message; KV requests then go through etcd's request checks
//! (`cairn_storage::validate`), as the KV service does next.
#![no_main]

use cairn_proto::cairnpb::{InternalRequest, PeerBatch, SnapshotChunk};
use cairn_proto::etcdserverpb::*;
use cairn_storage::validate;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, m);
    Some(m)
}

macro_rules! each {
    ($data:expr, $($t:ty),* $(,)?) => { $( let _ = roundtrip::<$t>($data); )* };
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = roundtrip::<RangeRequest>(data) {
        let _ = validate::check_range(&r);
    }
    if let Some(r) = roundtrip::<PutRequest>(data) {
        let _ = validate::check_put(&r);
    }
    if let Some(r) = roundtrip::<DeleteRangeRequest>(data) {
        let _ = validate::check_delete_range(&r);
    }
    if let Some(r) = roundtrip::<TxnRequest>(data) {
        let _ = validate::check_txn(&r, validate::DEFAULT_MAX_TXN_OPS);
    }
    each!(
        data,
        CompactionRequest, HashRequest, HashKvRequest, SnapshotRequest, WatchRequest,
        LeaseGrantRequest, LeaseRevokeRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest,
        LeaseLeasesRequest, MemberAddRequest, MemberRemoveRequest, MemberUpdateRequest,
        MemberListRequest, MemberPromoteRequest, DefragmentRequest, MoveLeaderRequest,
        AlarmRequest, DowngradeRequest, StatusRequest, AuthEnableRequest, AuthDisableRequest,
        AuthStatusRequest, AuthenticateRequest, AuthUserAddRequest, AuthUserGetRequest,
        AuthUserDeleteRequest, AuthUserChangePasswordRequest, AuthUserGrantRoleRequest,
        AuthUserRevokeRoleRequest, AuthRoleAddRequest, AuthRoleGetRequest, AuthUserListRequest,
        AuthRoleListRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
        AuthRoleRevokePermissionRequest, InternalRequest, PeerBatch, SnapshotChunk,
    );
});
