use prost::Message;

use super::*;
use crate::cairnpb::{internal_request, InternalRequest};
use crate::etcdserverpb::{
    compare, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, ResponseHeader,
};

fn put(k: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key: k.into(), value: b"v".to_vec(), ..Default::default() })) }
}

fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestTxn(t)) }
}

/// A Txn nested `depth` deep, one put at the bottom.
fn deep(depth: usize) -> TxnRequest {
    let mut t = TxnRequest { success: vec![put("k")], ..Default::default() };
    for _ in 1..depth {
        t = TxnRequest { success: vec![op_txn(t)], ..Default::default() };
    }
    t
}

/// A Txn with every field and op kind, nested in both branches.
fn sample() -> TxnRequest {
    let inner = TxnRequest {
        compare: vec![Compare { key: b"a".to_vec(), range_end: b"z".to_vec(), ..Default::default() }],
        success: vec![RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key: b"k".to_vec(), limit: 3, ..Default::default() })) }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest { key: b"d".to_vec(), ..Default::default() })),
        }],
    };
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"a".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(7)),
            range_end: b"z".to_vec(),
        }],
        success: vec![put("a"), op_txn(inner.clone()), RequestOp { request: None }],
        failure: vec![op_txn(TxnRequest { failure: vec![op_txn(inner)], ..Default::default() }), put("b")],
    }
}

#[test]
fn decodes_what_prost_decodes() {
    for t in [TxnRequest::default(), sample(), deep(2), deep(49)] {
        let bytes = t.encode_to_vec();
        assert_eq!(decode::<TxnRequest>(&bytes).unwrap(), t);
        assert_eq!(decode::<TxnRequest>(&bytes).unwrap(), TxnRequest::decode(bytes.as_slice()).unwrap());
    }
    let resp = TxnResponse {
        header: Some(ResponseHeader { revision: 9, ..Default::default() }),
        succeeded: true,
        responses: vec![
            ResponseOp { response: Some(response_op::Response::ResponseRange(RangeResponse { count: 2, ..Default::default() })) },
            ResponseOp {
                response: Some(response_op::Response::ResponseTxn(TxnResponse {
                    succeeded: false,
                    responses: vec![ResponseOp::default()],
                    ..Default::default()
                })),
            },
        ],
    };
    assert_eq!(decode::<TxnResponse>(&resp.encode_to_vec()).unwrap(), resp);
}

/// Repeated fields append and a repeated oneof Txn merges into the first, as in prost.
#[test]
fn merges_as_prost_merges() {
    let a = sample().encode_to_vec();
    let b = deep(3).encode_to_vec();
    let both = [a.as_slice(), b.as_slice()].concat();
    assert_eq!(decode::<TxnRequest>(&both).unwrap(), TxnRequest::decode(both.as_slice()).unwrap());
    // one op whose field 4 appears twice
    let op = [op_txn(deep(2)).encode_to_vec(), op_txn(sample()).encode_to_vec()].concat();
    let mut txn = vec![0x12];
    prost::encoding::encode_varint(op.len() as u64, &mut txn);
    txn.extend_from_slice(&op);
    assert_eq!(decode::<TxnRequest>(&txn).unwrap(), TxnRequest::decode(txn.as_slice()).unwrap());
}

/// prost's derived decoder stops at 50 levels; this one at [`MAX_TXN_DEPTH`], before
/// reading the level past it.
/// `depth` levels of nesting encoded in linear time (each level's length is known from the
/// inside out, the bytes are written from the outside in): TxnRequest field 2 holds a
/// RequestOp whose field 4 holds the next level; the innermost Txn is empty.
pub(crate) fn deep_bytes(depth: usize) -> Vec<u8> {
    let varint_len = |n: usize| prost::encoding::encoded_len_varint(n as u64);
    // txn[k]: the encoded length of the Txn k levels from the bottom (txn[0] is empty)
    let mut txn = vec![0usize; depth];
    for k in 1..depth {
        let op = 1 + varint_len(txn[k - 1]) + txn[k - 1];
        txn[k] = 1 + varint_len(op) + op;
    }
    let mut out = Vec::with_capacity(txn[depth - 1]);
    for k in (1..depth).rev() {
        out.push(0x12);
        prost::encoding::encode_varint((1 + varint_len(txn[k - 1]) + txn[k - 1]) as u64, &mut out);
        out.push(0x22);
        prost::encoding::encode_varint(txn[k - 1] as u64, &mut out);
    }
    out
}

#[test]
fn depth_limit() {
    assert!(TxnRequest::decode(deep(51).encode_to_vec().as_slice()).is_err(), "prost's own limit moved");
    let at = decode::<TxnRequest>(&deep(MAX_TXN_DEPTH).encode_to_vec()).unwrap();
    assert_eq!(at, deep(MAX_TXN_DEPTH));
    assert!(matches!(decode::<TxnRequest>(&deep(MAX_TXN_DEPTH + 1).encode_to_vec()), Err(NestError::TooDeep)));
    let empty_at_bottom = |depth: usize| {
        let mut t = TxnRequest::default();
        for _ in 1..depth {
            t = TxnRequest { success: vec![op_txn(t)], ..Default::default() };
        }
        t
    };
    assert_eq!(deep_bytes(40), empty_at_bottom(40).encode_to_vec());
    assert_eq!(decode::<TxnRequest>(&deep_bytes(MAX_TXN_DEPTH)).unwrap(), empty_at_bottom(MAX_TXN_DEPTH));
    assert!(matches!(decode::<TxnRequest>(&deep_bytes(MAX_TXN_DEPTH + 1)), Err(NestError::TooDeep)));
    // 500,000 levels (2.6 MB) built by hand, as prost's encoder recurses too
    let inner = deep_bytes(500_000);
    assert!(matches!(decode::<TxnRequest>(&inner), Err(NestError::TooDeep)));
}

#[test]
fn internal_requests_carry_deep_txns() {
    let req = InternalRequest { id: 7, request: Some(internal_request::Request::Txn(deep(MAX_TXN_DEPTH))), ..Default::default() };
    assert_eq!(decode_internal_request(&req.encode_to_vec()).unwrap(), req);
    let req = InternalRequest { id: 8, request: Some(internal_request::Request::Put(PutRequest::default())), ..Default::default() };
    assert_eq!(decode_internal_request(&req.encode_to_vec()).unwrap(), req);
    let too_deep = InternalRequest { id: 9, request: Some(internal_request::Request::Txn(deep(MAX_TXN_DEPTH + 1))), ..Default::default() };
    assert!(matches!(decode_internal_request(&too_deep.encode_to_vec()), Err(NestError::TooDeep)));
}

/// Byte flips, cuts and insertions of valid encodings: decoded exactly when prost
/// decodes them, to the same message (a fixed-seed xorshift; no depth near prost's limit).
#[test]
fn agrees_with_prost_on_mangled_bytes() {
    let seeds = [sample().encode_to_vec(), deep(5).encode_to_vec(), TxnRequest { failure: vec![put("x"), put("y")], ..Default::default() }.encode_to_vec()];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ok, mut err) = (0, 0);
    for i in 0..30_000 {
        let mut b = seeds[i % seeds.len()].clone();
        let at = (next() as usize) % b.len();
        match next() % 3 {
            0 => b[at] = next() as u8,
            1 => b.truncate(at),
            _ => b.insert(at, next() as u8),
        }
        match (decode::<TxnRequest>(&b), TxnRequest::decode(b.as_slice())) {
            (Ok(ours), Ok(prost)) => {
                assert_eq!(ours, prost, "{b:02x?}");
                ok += 1;
            }
            (Err(_), Err(_)) => err += 1,
            (ours, prost) => panic!("{b:02x?}: ours {ours:?}, prost {prost:?}"),
        }
    }
    assert!(ok > 1000 && err > 1000, "{ok} decoded, {err} refused");
}
