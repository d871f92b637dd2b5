//! Requests at and past the server's limits: size (`--max-request-bytes`, gRPC's
//! allowance above it, a prefix declaring 4 GiB) and Txn width (`--max-txn-ops`; depth is
//! `nesting.rs`).

use bytes::{BufMut, BytesMut};
use cairn_proto::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest, TxnResponse};
use prost::Message;

use crate::common::{target_kind, Options, Server};
use crate::raw::Conn;
use crate::run;
use crate::support::{call, call_bytes, code, rss_bytes, Control};

const PUT: &str = "/etcdserverpb.KV/Put";
const TXN: &str = "/etcdserverpb.KV/Txn";

fn put(key: &str, value: Vec<u8>) -> PutRequest {
    PutRequest { key: key.as_bytes().to_vec(), value, ..Default::default() }
}

/// With `--max-request-bytes=65536`: a Put of 100 KiB is etcd's "request is too large"
/// (InvalidArgument); one beyond gRPC's 512 KiB allowance is refused while decoding with
/// grpc-go's RESOURCE_EXHAUSTED; a prefix declaring 4 GiB is refused the same way as
/// soon as it is read, on a unary call and on a Watch stream, without the server
/// allocating it. The control client is answered throughout.
#[test]
fn oversized_and_huge_declared_messages_are_refused_without_allocating_them() {
    let server = Server::start_with(target_kind(), Options { extra_args: vec!["--max-request-bytes=65536".into()], ..Default::default() });
    let addr = server.client_addr();
    let pid = server.pid().expect("server pid");
    run(async {
        let mut control = Control::start(addr).await;
        let conn = Conn::connect(addr).await;
        let ended = call(&conn, PUT, &put("/big", vec![b'x'; 100 << 10])).await;
        assert_eq!((ended.code, ended.message.as_str()), (Some(code::INVALID_ARGUMENT), "etcdserver: request is too large"));

        let over = put("/huge", vec![b'x'; 65536 + (512 << 10) + 1]);
        let len = over.encoded_len();
        let ended = call(&conn, PUT, &over).await;
        assert_eq!(ended.code, Some(code::RESOURCE_EXHAUSTED), "{ended:?}");
        assert_eq!(ended.message, format!("grpc: received message larger than max ({len} vs. {})", 65536 + (512 << 10)));

        let before = rss_bytes(pid);
        for path in [PUT, "/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"] {
            for _ in 0..20 {
                // the prefix says 4 GiB - 1; 16 KiB follow, and the stream stays open
                let mut body = BytesMut::new();
                body.put_u8(0);
                body.put_u32(u32::MAX);
                body.put_bytes(b'x', 16 << 10);
                let ended = call_bytes(&conn, path, body.freeze(), false).await;
                assert_eq!(ended.code, Some(code::RESOURCE_EXHAUSTED), "{path}: {ended:?}");
                assert_eq!(
                    ended.message,
                    format!("grpc: received message larger than max ({} vs. {})", u32::MAX, 65536 + (512 << 10)),
                    "{path}"
                );
            }
        }
        let after = rss_bytes(pid);
        assert!(after.saturating_sub(before) < 64 << 20, "RSS grew by {} MiB", (after - before) >> 20);
        assert_eq!(conn.ended(), None, "the connection stays up");
        control.wait_rounds(5).await;
        control.finish(1).await;
    });
}

/// A Txn putting `width` keys.
fn wide(width: usize) -> TxnRequest {
    let success = (0..width)
        .map(|i| RequestOp { request: Some(request_op::Request::RequestPut(put(&format!("/wide/{i}"), b"v".to_vec()))) })
        .collect();
    TxnRequest { success, ..Default::default() }
}

/// Width: `--max-txn-ops` (128) operations are applied, 129 are etcd's "too many
/// operations in txn request" (depth: `nesting.rs`). The server stays up.
#[test]
fn txns_at_and_over_the_width_limit() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    run(async {
        let mut control = Control::start(addr).await;
        let conn = Conn::connect(addr).await;
        let ended = call(&conn, TXN, &wide(128)).await;
        assert_eq!(ended.code, Some(code::OK), "{ended:?}");
        let resp = TxnResponse::decode(ended.messages[0].clone()).expect("txn response");
        assert!(resp.succeeded && resp.responses.len() == 128);
        let ended = call(&conn, TXN, &wide(129)).await;
        assert_eq!((ended.code, ended.message.as_str()), (Some(code::INVALID_ARGUMENT), "etcdserver: too many operations in txn request"));

        assert_eq!(conn.ended(), None);
        control.wait_rounds(5).await;
        control.finish(1).await;
    });
}
