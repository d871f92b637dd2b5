//! Txns nested as deep as etcd takes them, through every path a nested Txn travels.
//!
//! etcd bounds nesting only by its ops budget (`--max-txn-ops`: each level's op count
//! comes out of its parent's), so with the default a chain of one-op Txns ends at 128
//! levels, 129 if the innermost Txn is empty, and one level more is "too many operations
//! in txn request"; cairn answers the same. With a larger budget etcd goes deeper;
//! cairn stops at `cairn_proto::nested::MAX_TXN_DEPTH` (512) levels, where every walk
//! over the Txn (decode, checks, Raft encode and decode, apply, the read-only path, the
//! response's encoding, the watch of its writes, WAL replay at restart) is shown here to
//! run on the server's ordinary thread stacks.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    request_op, response_op, watch_request, PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest,
};
use cairn_proto::nested::MAX_TXN_DEPTH;

use crate::common::cluster::{MemberOptions, ProcCluster};
use crate::common::{target_kind, Kind, Server};
use crate::raw::Conn;
use crate::run;
use crate::support::{call, call_bytes, code, Control};

const TXN: &str = "/etcdserverpb.KV/Txn";
const TOO_MANY: (Option<u32>, &str) = (Some(code::INVALID_ARGUMENT), "etcdserver: too many operations in txn request");

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: key.into(), value: value.into(), ..Default::default() })) }
}

fn range_op(key: &str, serializable: bool) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: key.into(), serializable, ..Default::default() })) }
}

/// `depth` Txns, each the only op of its parent's success branch; the innermost holds
/// `bottom`.
fn chain(depth: usize, bottom: Vec<RequestOp>) -> TxnRequest {
    let mut txn = TxnRequest { success: bottom, ..Default::default() };
    for _ in 1..depth {
        txn = TxnRequest { success: vec![RequestOp { request: Some(request_op::Request::RequestTxn(txn)) }], ..Default::default() };
    }
    txn
}

/// How deep a response nests along its first ops, and the innermost Txn's first op.
fn innermost(resp: &TxnResponse) -> (usize, Option<&ResponseOp>) {
    let mut depth = 1;
    let mut at = resp;
    loop {
        assert!(at.succeeded, "level {depth} did not succeed");
        match at.responses.first() {
            Some(ResponseOp { response: Some(response_op::Response::ResponseTxn(next)) }) => {
                at = next;
                depth += 1;
            }
            other => return (depth, other),
        }
    }
}

/// The value the innermost Txn's Range read.
fn innermost_value(resp: &TxnResponse) -> (usize, Option<Vec<u8>>) {
    let (depth, op) = innermost(resp);
    let value = match op {
        Some(ResponseOp { response: Some(response_op::Response::ResponseRange(r)) }) => r.kvs.first().map(|kv| kv.value.to_vec()),
        other => panic!("innermost answer {other:?}"),
    };
    (depth, value)
}

/// `depth` levels with an empty innermost Txn, encoded in linear time and gRPC-framed
/// (prost's encoder recurses, and the deepest cases are far past anything it should be
/// asked to build): each level's length is known from the inside out, the bytes are
/// written from the outside in. TxnRequest field 2 (success) holds a RequestOp whose
/// field 4 (request_txn) holds the next level.
fn chain_bytes(depth: usize) -> Bytes {
    let varint_len = |n: usize| prost::encoding::encoded_len_varint(n as u64);
    let mut txn = vec![0usize; depth];
    for k in 1..depth {
        let op = 1 + varint_len(txn[k - 1]) + txn[k - 1];
        txn[k] = 1 + varint_len(op) + op;
    }
    let mut framed = BytesMut::with_capacity(5 + txn[depth - 1]);
    framed.put_u8(0);
    framed.put_u32(txn[depth - 1] as u32);
    for k in (1..depth).rev() {
        framed.put_u8(0x12);
        prost::encoding::encode_varint((1 + varint_len(txn[k - 1]) + txn[k - 1]) as u64, &mut framed);
        framed.put_u8(0x22);
        prost::encoding::encode_varint(txn[k - 1] as u64, &mut framed);
    }
    framed.freeze()
}

fn decode(ended: &crate::support::Ended) -> TxnResponse {
    assert_eq!(ended.code, Some(code::OK), "{ended:?}");
    cairn_proto::nested::decode(&ended.messages[0]).expect("txn response")
}

/// With the default `--max-txn-ops` (128): 128 one-op levels are applied (a put at the
/// bottom) and read (a Range at the bottom, a read-only Txn), 129 are etcd's "too many
/// operations"; with an empty innermost Txn 129 levels pass and 130 do not; 1,000 and
/// 100,000 levels (1.1 MB, built by hand: an attempt on the decoder's stack) are refused
/// the same way. Same answers from etcd. The server stays up and the control client is
/// answered.
#[test]
fn txns_nest_as_deep_as_the_ops_budget_allows() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    run(async {
        let mut control = Control::start(addr).await;
        let conn = Conn::connect(addr).await;
        let resp = decode(&call(&conn, TXN, &chain(128, vec![put_op("/deep/a", "128")])).await);
        assert!(matches!(innermost(&resp), (128, Some(ResponseOp { response: Some(response_op::Response::ResponsePut(_)) }))));
        for serializable in [false, true] {
            let resp = decode(&call(&conn, TXN, &chain(128, vec![range_op("/deep/a", serializable)])).await);
            assert_eq!(innermost_value(&resp), (128, Some(b"128".to_vec())));
        }
        let ended = call(&conn, TXN, &chain(129, vec![put_op("/deep/a", "129")])).await;
        assert_eq!((ended.code, ended.message.as_str()), TOO_MANY);
        let ended = call(&conn, TXN, &chain(129, vec![range_op("/deep/a", false)])).await;
        assert_eq!((ended.code, ended.message.as_str()), TOO_MANY);
        let resp = decode(&call(&conn, TXN, &chain(129, vec![])).await);
        assert_eq!(innermost(&resp), (129, None));
        let ended = call(&conn, TXN, &chain(130, vec![])).await;
        assert_eq!((ended.code, ended.message.as_str()), TOO_MANY);
        for depth in [129, 130, 1_000, 100_000] {
            let ended = call_bytes(&conn, TXN, chain_bytes(depth), true).await;
            if depth == 129 {
                assert_eq!(ended.code, Some(code::OK), "{ended:?}");
            } else {
                assert_eq!((ended.code, ended.message.as_str()), TOO_MANY, "depth {depth}");
            }
        }
        assert_eq!(conn.ended(), None);
        control.wait_rounds(5).await;
        control.finish(1).await;
    });
}

/// With `--max-txn-ops=2048`, on three members: a Txn `MAX_TXN_DEPTH` deep with a put at
/// the bottom is proposed, replicated, applied on every member and seen by a watch on
/// another member; read-only Txns that deep read it on every member (linearizable on one,
/// serializable on all); one level more is refused with etcd's error (etcd itself, whose
/// bound is only the budget, applies it). Then every member is killed -9 and restarted,
/// which replays the log holding the deep entry, and every member reads the value again.
#[test]
fn the_deepest_txn_goes_through_raft_apply_watch_and_wal_replay() {
    let kind = target_kind();
    let opts = MemberOptions { extra_args: vec!["--max-txn-ops=2048".into()], ..Default::default() };
    let mut cluster = ProcCluster::start_with(kind, 3, &[(0, opts.clone()), (1, opts.clone()), (2, opts)]);
    let endpoints = cluster.endpoints();
    run(async {
        let mut watch = WatchClient::connect(endpoints[2].clone()).await.expect("connect");
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"/deep/".to_vec(),
                range_end: b"/deep0".to_vec(),
                ..Default::default()
            })),
        };
        // the request stream stays open after the create
        let requests = futures::StreamExt::chain(futures::stream::iter([create]), futures::stream::pending());
        let mut events = watch.watch(requests).await.expect("watch").into_inner();
        let created = events.message().await.expect("created").expect("created");
        assert!(created.created);

        let mut kv = KvClient::connect(endpoints[0].clone()).await.expect("connect");
        let resp = kv.txn(chain(MAX_TXN_DEPTH, vec![put_op("/deep/w", "deepest")])).await.expect("deepest txn").into_inner();
        assert!(matches!(innermost(&resp), (d, Some(ResponseOp { response: Some(response_op::Response::ResponsePut(_)) })) if d == MAX_TXN_DEPTH));
        let event = tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("the watch event in 10 s");
        let event = event.expect("watch").expect("watch");
        assert_eq!(event.events.first().and_then(|e| e.kv.as_ref()).map(|kv| kv.value.as_ref()), Some(&b"deepest"[..]));

        let over = kv.txn(chain(MAX_TXN_DEPTH + 1, vec![put_op("/deep/over", "x")])).await;
        match kind {
            Kind::Cairn => {
                let status = over.expect_err("one level past the limit");
                assert_eq!((status.code(), status.message()), (tonic::Code::InvalidArgument, TOO_MANY.1));
            }
            // etcd applies it and answers one level more than, which this client (cairn's codec)
            // refuses to decode
            Kind::Etcd => {
                let status = over.expect_err("an answer past the client's limit");
                assert_eq!((status.code(), status.message()), (tonic::Code::Internal, format!("Txn nested more than {MAX_TXN_DEPTH} levels").as_str()));
            }
        }
        read_everywhere(&endpoints).await;
    });
    cluster.kill9_all_and_restart();
    run(read_everywhere(&endpoints));
}

/// A read-only Txn `MAX_TXN_DEPTH` deep reads "deepest" on every member: linearizable
/// through each, then serializable (that member's own applied state: it has applied the
/// put once its linearizable read was answered).
async fn read_everywhere(endpoints: &[String]) {
    for (i, endpoint) in endpoints.iter().enumerate() {
        let mut kv = KvClient::connect(endpoint.clone()).await.expect("connect");
        for serializable in [false, true] {
            let resp = kv.txn(chain(MAX_TXN_DEPTH, vec![range_op("/deep/w", serializable)])).await.expect("read-only txn").into_inner();
            assert_eq!(innermost_value(&resp), (MAX_TXN_DEPTH, Some(b"deepest".to_vec())), "member {i}, serializable {serializable}");
        }
    }
}
