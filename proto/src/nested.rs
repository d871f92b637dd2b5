//! Decoding nested Txns without recursion.
//!
//! A `TxnRequest` holds `RequestOp`s, and a `RequestOp` may hold a `TxnRequest` (as a
//! `TxnResponse` holds `ResponseOp`s that may hold a `TxnResponse`): the only recursive
//! messages cairn decodes. prost's derived decoder recurses once per message level and
//! refuses anything nested more than 100 levels (its guard against stack exhaustion),
//! which is 50 Txns, while etcd accepts a Txn nested as deep as `--max-txn-ops` allows
//! (128 levels with the default budget).
//!
//! [`decode`] walks the Txn/op nesting with a heap stack of frames instead, and hands
//! every other field to prost's own `merge_field` (compares, ranges, puts, headers and
//! unknown fields: none of them recursive), so what it accepts and refuses is prost's,
//! field for field, up to [`MAX_TXN_DEPTH`] Txn levels; past that it stops with
//! [`NestError::TooDeep`] as soon as the next level begins, before reading it.
//!
//! Every later walk over a decoded Txn (validation, apply, the read-only path, auth,
//! encoding, drop) recurses once per level; [`MAX_TXN_DEPTH`] bounds them all, and
//! `cairn_storage::validate` refuses a deeper Txn built in process (tests in
//! `tests/abuse/limits.rs` run the deepest Txn through every path).
//!
//! Worked example: `Txn{success: [Op{txn: Txn{success: [Op{put}]}}]}` is, on the wire,
//! `12 L1 (22 L2 (12 L3 (12 ..put..)))`: the outer Txn (ending at the end of the buffer)
//! reads tag 2 and opens an op ending L1 bytes on; the op reads tag 4, so the outer Txn
//! and its open op go on the parents stack and the inner Txn (ending L2 on, depth 2)
//! becomes current; it reads tag 2 and opens an op whose tag 2 (a put) is prost's to
//! merge. At its end an op is appended to its Txn's branch; at a Txn's end, the Txn goes
//! into the op on top of the parents stack and that parent is current again.

use std::fmt;

use prost::encoding::{check_wire_type, decode_key, decode_varint, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::etcdserverpb::{request_op, response_op, RequestOp, ResponseOp, TxnRequest, TxnResponse};

/// The deepest Txn nesting cairn decodes: a Txn whose op holds a Txn, and so on,
/// `MAX_TXN_DEPTH` Txns in all. etcd's own bound is its ops budget (`--max-txn-ops`, 128
/// by default: every level's op count comes out of its parent's budget, so a chain of
/// one-op Txns ends at 128 levels, 129 if the innermost is empty); this is far above it,
/// and low enough that every recursive walk over a Txn this deep stays well inside a
/// 2 MiB thread stack (measured in `tests/abuse/limits.rs`).
pub const MAX_TXN_DEPTH: usize = 512;

/// Why nested bytes did not decode.
#[derive(Debug)]
pub enum NestError {
    /// Txns nested past [`MAX_TXN_DEPTH`].
    TooDeep,
    /// Bytes that are not the message (prost's error).
    Decode(DecodeError),
}

impl fmt::Display for NestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NestError::TooDeep => write!(f, "Txn nested more than {MAX_TXN_DEPTH} levels"),
            NestError::Decode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for NestError {}

impl From<DecodeError> for NestError {
    fn from(e: DecodeError) -> NestError {
        NestError::Decode(e)
    }
}

/// The field of a `RequestOp` / `ResponseOp` that holds a nested Txn.
const OP_TXN_FIELD: u32 = 4;

/// A recursive Txn message: `TxnRequest` or `TxnResponse`.
pub trait Nested: Message + Default + Sized + 'static {
    /// Its op: `RequestOp` or `ResponseOp`.
    type Op: Message + Default;
    /// Whether field `tag` of the Txn is a repeated op.
    fn is_op_field(tag: u32) -> bool;
    /// Appends an op decoded from field `tag`.
    fn push_op(&mut self, tag: u32, op: Self::Op);
    /// The op's nested Txn, if that is what it holds (a repeated field 4 merges into it,
    /// as prost merges a oneof).
    fn take_txn(op: &mut Self::Op) -> Option<Self>;
    /// Makes the op hold `txn`.
    fn set_txn(op: &mut Self::Op, txn: Self);
}

impl Nested for TxnRequest {
    type Op = RequestOp;
    fn is_op_field(tag: u32) -> bool {
        tag == 2 || tag == 3
    }
    fn push_op(&mut self, tag: u32, op: RequestOp) {
        if tag == 2 { self.success.push(op) } else { self.failure.push(op) }
    }
    fn take_txn(op: &mut RequestOp) -> Option<TxnRequest> {
        match op.request.take() {
            Some(request_op::Request::RequestTxn(t)) => Some(t),
            other => {
                op.request = other;
                None
            }
        }
    }
    fn set_txn(op: &mut RequestOp, txn: TxnRequest) {
        op.request = Some(request_op::Request::RequestTxn(txn));
    }
}

impl Nested for TxnResponse {
    type Op = ResponseOp;
    fn is_op_field(tag: u32) -> bool {
        tag == 3
    }
    fn push_op(&mut self, _tag: u32, op: ResponseOp) {
        self.responses.push(op);
    }
    fn take_txn(op: &mut ResponseOp) -> Option<TxnResponse> {
        match op.response.take() {
            Some(response_op::Response::ResponseTxn(t)) => Some(t),
            other => {
                op.response = other;
                None
            }
        }
    }
    fn set_txn(op: &mut ResponseOp, txn: TxnResponse) {
        op.response = Some(response_op::Response::ResponseTxn(txn));
    }
}

/// The Txn being read, the offset its bytes end at, and the op inside it being read.
struct Level<T: Nested> {
    txn: T,
    end: usize,
    op: Option<OpFrame<T>>,
}

/// An op being read: the op, the Txn field it came from, the offset its bytes end at.
struct OpFrame<T: Nested> {
    op: T::Op,
    tag: u32,
    end: usize,
}

/// Decodes a `T` from `buf` (all of it), with prost's rules and without recursion.
pub fn decode<T: Nested>(buf: &[u8]) -> Result<T, NestError> {
    merge(T::default(), buf)
}

/// Merges `buf` into `txn` (as prost's `merge`: repeated fields append, the rest is
/// overwritten).
pub fn merge<T: Nested>(txn: T, buf: &[u8]) -> Result<T, NestError> {
    let mut cur = Level { txn, end: buf.len(), op: None };
    // the enclosing Txns, each with the op that holds the next one in
    let mut parents: Vec<(T, usize, OpFrame<T>)> = Vec::new();
    let mut pos = 0;
    loop {
        let end = cur.op.as_ref().map_or(cur.end, |o| o.end);
        if pos == end {
            if let Some(o) = cur.op.take() {
                cur.txn.push_op(o.tag, o.op);
                continue;
            }
            let Some((txn, end, mut holder)) = parents.pop() else { return Ok(cur.txn) };
            T::set_txn(&mut holder.op, cur.txn);
            cur = Level { txn, end, op: Some(holder) };
            continue;
        }
        let mut rest = &buf[pos..end];
        let (tag, wire_type) = decode_key(&mut rest)?;
        let opens = match &mut cur.op {
            None => T::is_op_field(tag),
            Some(_) => tag == OP_TXN_FIELD,
        };
        if !opens {
            match &mut cur.op {
                None => cur.txn.merge_field(tag, wire_type, &mut rest, DecodeContext::default())?,
                Some(o) => o.op.merge_field(tag, wire_type, &mut rest, DecodeContext::default())?,
            }
            pos = end - rest.len();
            continue;
        }
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        let len = delimited_len(&mut rest)?;
        pos = end - rest.len();
        match cur.op.take() {
            None => cur.op = Some(OpFrame { op: T::Op::default(), tag, end: pos + len }),
            Some(mut holder) => {
                if parents.len() + 1 >= MAX_TXN_DEPTH {
                    return Err(NestError::TooDeep);
                }
                let inner = T::take_txn(&mut holder.op).unwrap_or_default();
                let outer = std::mem::replace(&mut cur, Level { txn: inner, end: pos + len, op: None });
                parents.push((outer.txn, outer.end, holder));
            }
        }
    }
}

/// A length prefix, checked against what is left (prost's own check and error).
fn delimited_len(rest: &mut &[u8]) -> Result<usize, DecodeError> {
    let mut probe = *rest;
    // skipping the field checks the length against the bytes left, with prost's error
    prost::encoding::skip_field(WireType::LengthDelimited, OP_TXN_FIELD, &mut probe, DecodeContext::default())?;
    let len = decode_varint(rest)?;
    Ok(len as usize)
}

/// Decodes a message `M` whose field `field` is a `TxnRequest` (cairn's
/// `InternalRequest`, etcd's `InternalRaftRequest`), that field by [`merge`], the others
/// by prost. `take` gives the Txn the field already holds, `set` stores it.
pub fn decode_with_txn<M: Message + Default>(
    buf: &[u8],
    field: u32,
    take: fn(&mut M) -> Option<TxnRequest>,
    set: fn(&mut M, TxnRequest),
) -> Result<M, NestError> {
    let mut msg = M::default();
    let mut rest = buf;
    while !rest.is_empty() {
        let (tag, wire_type) = decode_key(&mut rest)?;
        if tag != field {
            msg.merge_field(tag, wire_type, &mut rest, DecodeContext::default())?;
            continue;
        }
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        let len = delimited_len(&mut rest)?;
        let (inner, after) = rest.split_at(len);
        let txn = merge(take(&mut msg).unwrap_or_default(), inner)?;
        set(&mut msg, txn);
        rest = after;
    }
    Ok(msg)
}

/// Decodes cairn's Raft command, its Txn by [`merge`].
pub fn decode_internal_request(buf: &[u8]) -> Result<crate::cairnpb::InternalRequest, NestError> {
    use crate::cairnpb::internal_request::Request;
    decode_with_txn(
        buf,
        4,
        |m: &mut crate::cairnpb::InternalRequest| match m.request.take() {
            Some(Request::Txn(t)) => Some(t),
            other => {
                m.request = other;
                None
            }
        },
        |m, t| m.request = Some(Request::Txn(t)),
    )
}

/// Decodes etcd's Raft command (read to import an etcd data folder), its Txn by [`merge`].
pub fn decode_internal_raft_request(buf: &[u8]) -> Result<crate::etcdserverpb::InternalRaftRequest, NestError> {
    decode_with_txn(buf, 6, |m: &mut crate::etcdserverpb::InternalRaftRequest| m.txn.take(), |m, t| m.txn = Some(t))
}

#[cfg(test)]
#[path = "nested_tests.rs"]
mod tests;
