//! Put, DeleteRange and Txn as the state machine applies them (etcd: `applierV3backend`
//! Put/DeleteRange/Txn in `apply.go`).
//!
//! A Txn is applied in three steps so that it is all-or-nothing: (1) evaluate every compare
//! on the chosen path, nested ones included, against the state *before* the Txn (etcd's
//! `compareToPath`); (2) check every put (lease exists; `ignore_*` needs the key) and then
//! every range (revision not compacted, not future) on that path — the only request errors
//! a Txn can have; (3) execute. An error in step 3 would leave a half-applied Txn, so it is
//! reported as corruption (fatal), never as a request error.
//!
//! A Txn without writes anywhere (etcd's `isTxnReadonly`) is evaluated the same way over a
//! committed revision instead of a write transaction ([`read_only`]): the server answers it
//! as a read, without the write path, as etcd does. Steps 1 and 2 read through
//! [`TxnView`], which both provide.

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::{
    request_op::Request, response_op::Response, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;

use crate::error::{Error, Result};
use crate::range::ReadCtx;
use crate::write_txn::WriteTxn;

/// The state a Txn's compares and ranges read: one revision of the store.
pub(crate) trait TxnView {
    /// The revision read (a write transaction's own once it wrote).
    fn rev(&self) -> i64;
    /// Revisions below this are compacted.
    fn compact_floor(&self) -> i64;
    /// A range at [`TxnView::rev`] (or the older revision it asks for).
    fn range(&self, r: &RangeRequest) -> Result<RangeResponse>;
    /// The values of a span at [`TxnView::rev`].
    fn kvs(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>>;
}

impl TxnView for WriteTxn<'_> {
    fn rev(&self) -> i64 {
        WriteTxn::rev(self)
    }
    fn compact_floor(&self) -> i64 {
        WriteTxn::compact_floor(self)
    }
    fn range(&self, r: &RangeRequest) -> Result<RangeResponse> {
        WriteTxn::range(self, r)
    }
    fn kvs(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>> {
        WriteTxn::kvs(self, key, range_end)
    }
}

/// A committed revision, for read-only Txns.
pub(crate) struct CommittedView<'a> {
    pub(crate) ctx: ReadCtx<'a>,
    pub(crate) rev: i64,
    pub(crate) floor: i64,
}

impl TxnView for CommittedView<'_> {
    fn rev(&self) -> i64 {
        self.rev
    }
    fn compact_floor(&self) -> i64 {
        self.floor
    }
    fn range(&self, r: &RangeRequest) -> Result<RangeResponse> {
        self.ctx.range(r, self.rev)
    }
    fn kvs(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>> {
        self.ctx.kvs(&crate::index::KeySpan::new(key, range_end), self.rev)
    }
}

/// Whether no branch of `t` (nested Txns included) writes (etcd's `isTxnReadonly`).
pub fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
        Some(Request::RequestTxn(nested)) => is_read_only(nested),
        Some(Request::RequestRange(_)) | None => true,
    })
}

/// Whether every range of a read-only `t` is serializable (etcd's `isTxnSerializable`).
pub fn is_serializable(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Request::RequestRange(r)) => r.serializable,
        Some(Request::RequestTxn(nested)) => is_serializable(nested),
        _ => true,
    })
}

/// A read-only Txn (see [`is_read_only`]) at `view`'s revision: the same compares, checks
/// and responses as [`txn`] would give, without a write transaction.
pub(crate) fn read_only(view: &impl TxnView, t: &TxnRequest) -> Result<TxnResponse> {
    let path = compare_path(view, t)?;
    walk_ops(t, &path, &mut |op| match op {
        Request::RequestRange(r) => check_range_rev(view, r),
        Request::RequestPut(_) | Request::RequestDeleteRange(_) => Err(Error::corrupt("txn", "a write in a read-only txn")),
        _ => Ok(()),
    })?;
    let mut resp = read_ops(view, t, &path)?;
    resp.header = header(view.rev());
    Ok(resp)
}

fn read_ops(view: &impl TxnView, t: &TxnRequest, path: &Path) -> Result<TxnResponse> {
    let ops = if path.succeeded { &t.success } else { &t.failure };
    let mut children = path.children.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Some(Response::ResponseRange(view.range(r)?)),
            Some(Request::RequestTxn(nested)) => {
                let child = children.next().ok_or_else(|| Error::corrupt("txn", "path shorter than ops"))?;
                Some(Response::ResponseTxn(read_ops(view, nested, child)?))
            }
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => {
                return Err(Error::corrupt("txn", "a write in a read-only txn"))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse { header: Some(ResponseHeader::default()), succeeded: path.succeeded, responses })
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

/// A top-level Put: its checks, then the write.
pub(crate) fn put(tx: &mut WriteTxn<'_>, p: &PutRequest) -> Result<PutResponse> {
    check_put(tx, p)?;
    put_unchecked(tx, p)
}

fn check_put(tx: &WriteTxn<'_>, p: &PutRequest) -> Result<()> {
    if p.lease != 0 && !tx.lessor.exists(p.lease) {
        return Err(Error::LeaseNotFound);
    }
    if (p.ignore_value || p.ignore_lease) && tx.kvs(&p.key, &[])?.is_empty() {
        return Err(Error::KeyNotFound);
    }
    Ok(())
}

fn put_unchecked(tx: &mut WriteTxn<'_>, p: &PutRequest) -> Result<PutResponse> {
    let prev: Option<KeyValue> = if p.ignore_value || p.ignore_lease || p.prev_kv {
        tx.kvs(&p.key, &[])?.into_iter().next()
    } else {
        None
    };
    let (value, lease) = match &prev {
        Some(kv) => (
            if p.ignore_value { kv.value.clone() } else { p.value.clone().into() },
            if p.ignore_lease { kv.lease } else { p.lease },
        ),
        None if p.ignore_value || p.ignore_lease => return Err(Error::KeyNotFound),
        None => (p.value.clone().into(), p.lease),
    };
    let rev = tx.put(&p.key, value, lease)?;
    Ok(PutResponse { header: header(rev), prev_kv: if p.prev_kv { prev } else { None } })
}

/// A DeleteRange (top level or inside a Txn: it has no request errors of its own).
pub(crate) fn delete_range(tx: &mut WriteTxn<'_>, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
    let prev_kvs = if d.prev_kv { tx.kvs(&d.key, &d.range_end)? } else { Vec::new() };
    let deleted = tx.delete_range(&d.key, &d.range_end)?;
    Ok(DeleteRangeResponse { header: header(tx.rev()), deleted, prev_kvs })
}

/// The branch each Txn on the executed path takes, nested Txns in op order.
struct Path {
    succeeded: bool,
    children: Vec<Path>,
}

/// A Txn: compares, checks, then execution (see the module docs).
pub(crate) fn txn(tx: &mut WriteTxn<'_>, t: &TxnRequest) -> Result<TxnResponse> {
    let path = compare_path(tx, t)?;
    walk_ops(t, &path, &mut |op| match op {
        Request::RequestPut(p) => check_put(tx, p),
        _ => Ok(()),
    })?;
    walk_ops(t, &path, &mut |op| match op {
        Request::RequestRange(r) => check_range_rev(tx, r),
        _ => Ok(()),
    })?;
    let mut resp = execute(tx, t, &path).map_err(|e| match e {
        e if e.is_fatal() => e,
        e => Error::corrupt("txn", format!("request error after changes began: {e}")),
    })?;
    resp.header = header(tx.rev());
    Ok(resp)
}

fn compare_path(tx: &impl TxnView, t: &TxnRequest) -> Result<Path> {
    let mut succeeded = true;
    for c in &t.compare {
        if !compare(tx, c)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { &t.success } else { &t.failure };
    let mut children = Vec::new();
    for op in ops {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            children.push(compare_path(tx, nested)?);
        }
    }
    Ok(Path { succeeded, children })
}

fn walk_ops(t: &TxnRequest, path: &Path, f: &mut dyn FnMut(&Request) -> Result<()>) -> Result<()> {
    let ops = if path.succeeded { &t.success } else { &t.failure };
    let mut children = path.children.iter();
    for op in ops {
        match &op.request {
            Some(Request::RequestTxn(nested)) => {
                let child = children.next().ok_or_else(|| Error::corrupt("txn", "path shorter than ops"))?;
                walk_ops(nested, child, f)?;
            }
            Some(r) => f(r)?,
            None => {}
        }
    }
    Ok(())
}

fn check_range_rev(tx: &impl TxnView, r: &RangeRequest) -> Result<()> {
    match r.revision {
        0 => Ok(()),
        x if x > tx.rev() => Err(Error::FutureRev),
        x if x < tx.compact_floor() => Err(Error::Compacted),
        _ => Ok(()),
    }
}

fn execute(tx: &mut WriteTxn<'_>, t: &TxnRequest, path: &Path) -> Result<TxnResponse> {
    let ops = if path.succeeded { &t.success } else { &t.failure };
    let mut children = path.children.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Some(Response::ResponseRange(tx.range(r)?)),
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(put_unchecked(tx, p)?)),
            Some(Request::RequestDeleteRange(d)) => Some(Response::ResponseDeleteRange(delete_range(tx, d)?)),
            Some(Request::RequestTxn(nested)) => {
                let child = children.next().ok_or_else(|| Error::corrupt("txn", "path shorter than ops"))?;
                Some(Response::ResponseTxn(execute(tx, nested, child)?))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse { header: Some(ResponseHeader::default()), succeeded: path.succeeded, responses })
}

/// One compare over every key of its span (etcd's `applyCompare`): all must satisfy it;
/// with no key, a value compare fails and the others compare against zero.
fn compare(tx: &impl TxnView, c: &Compare) -> Result<bool> {
    let kvs = tx.kvs(&c.key, &c.range_end)?;
    if kvs.is_empty() {
        if c.target == CompareTarget::Value as i32 {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let int = |x: Option<i64>| x.unwrap_or(0);
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value[..].cmp(want)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int(match c.target_union {
            Some(TargetUnion::CreateRevision(x)) => Some(x),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int(match c.target_union {
            Some(TargetUnion::ModRevision(x)) => Some(x),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int(match c.target_union {
            Some(TargetUnion::Version(x)) => Some(x),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int(match c.target_union {
            Some(TargetUnion::Lease(x)) => Some(x),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}
