//! etcd's request checks done before a request is proposed (etcd: `v3rpc/key.go`):
//! they depend on the request alone, never on the store's state.

use std::collections::HashSet;

use cairn_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::{Error, Result};

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Checks a Range: a key, and known sort options.
pub fn check_range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

/// Checks a Put: a key; no value with `ignore_value`, no lease with `ignore_lease`.
pub fn check_put(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange: a key.
pub fn check_delete_range(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// The deepest Txn nesting accepted: a Txn whose success or failure holds a Txn, and so
/// on, `MAX_TXN_DEPTH` Txns in all (the most cairn's gRPC and Raft decoders read, see
/// `cairn_proto::nested`).
///
/// etcd's only bound is `--max-txn-ops`: every level's ops count against its parent's
/// budget ([`check_txn`] does the same), so a chain of one-op Txns ends at 128 levels
/// with the default (129 if the innermost Txn is empty). This bound is far above that;
/// it exists so that every recursive walk over a Txn (these checks, apply, the read-only
/// path, auth, encoding, drop) is bounded: a Txn deeper than it is refused here with
/// etcd's error before any of them, whether it came over gRPC or was built in process.
pub const MAX_TXN_DEPTH: usize = cairn_proto::nested::MAX_TXN_DEPTH;

/// Checks a Txn: nesting depth, op counts, every nested request, and etcd's
/// duplicate-key rule.
pub fn check_txn(r: &TxnRequest, max_ops: usize) -> Result<()> {
    if txn_depth_exceeds(r, MAX_TXN_DEPTH) {
        return Err(Error::TooManyOps);
    }
    check_txn_ops(r, max_ops as i64)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// Whether `r` nests more than `limit` Txns deep (1: no Txn inside). Iterative, so any
/// depth is safe to ask about; it stops at the first level past `limit`.
fn txn_depth_exceeds(r: &TxnRequest, limit: usize) -> bool {
    let mut stack = vec![(r, 1usize)];
    while let Some((t, depth)) = stack.pop() {
        if depth > limit {
            return true;
        }
        for op in t.success.iter().chain(&t.failure) {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                stack.push((nested, depth + 1));
            }
        }
    }
    false
}

fn check_txn_ops(r: &TxnRequest, max_ops: i64) -> Result<()> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if opc > max_ops {
        return Err(Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_ops - opc)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_ops: i64) -> Result<()> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete_range(r),
        Some(Request::RequestTxn(r)) => check_txn_ops(r, max_ops),
        // etcd answers an empty op with "key not found"
        None => Err(Error::KeyNotFound),
    }
}

/// A deleted interval `[begin, end)` compared as bytes; `end == None` is the single key
/// `begin`. etcd compares the literal `range_end`, so a delete with `range_end == "\0"`
/// covers no put here, exactly as in etcd.
struct Del {
    begin: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Del {
    fn covers(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.begin.as_slice(),
            Some(e) => k >= self.begin.as_slice() && k < e.as_slice(),
        }
    }
}

/// etcd's `checkIntervals`: within one branch, no key is put twice and no put falls in a
/// deleted range, counting nested txns (whose then/else may put the same key, being
/// mutually exclusive). Returns this level's puts and deletes for the parent's check.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Del>)> {
    let mut dels: Vec<Del> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Del {
                begin: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let covered = |dels: &[Del], k: &[u8]| dels.iter().any(|d| d.covers(k));

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || covered(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || covered(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else { continue };
        if puts.contains(&p.key) || covered(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: k.into(), ..Default::default() })) }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }
    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp { request: Some(Request::RequestTxn(t)) }
    }

    /// A Txn nested `depth` deep, one put at the bottom.
    fn deep(depth: usize) -> TxnRequest {
        let mut t = txn(vec![put("k")], vec![]);
        for _ in 1..depth {
            t = txn(vec![nested(t)], vec![]);
        }
        t
    }

    #[test]
    fn nesting_past_the_depth_limit_is_too_many_ops() {
        // the depth bound, with a budget that would allow more
        assert!(check_txn(&deep(MAX_TXN_DEPTH), MAX_TXN_DEPTH * 2).is_ok());
        assert!(!txn_depth_exceeds(&deep(MAX_TXN_DEPTH), MAX_TXN_DEPTH));
        assert!(txn_depth_exceeds(&deep(MAX_TXN_DEPTH + 1), MAX_TXN_DEPTH));
        assert!(matches!(check_txn(&deep(MAX_TXN_DEPTH + 1), MAX_TXN_DEPTH * 2), Err(Error::TooManyOps)));
        // the deepest branch counts, in success or failure
        let t = txn(vec![put("a")], vec![nested(deep(MAX_TXN_DEPTH))]);
        assert!(matches!(check_txn(&t, MAX_TXN_DEPTH * 2), Err(Error::TooManyOps)));
    }

    /// etcd's budget: each level's op count comes out of its parent's, so one-op levels
    /// end at `max_ops` deep, one more with an empty innermost Txn.
    #[test]
    fn nesting_within_the_ops_budget() {
        assert!(check_txn(&deep(128), 128).is_ok());
        assert!(matches!(check_txn(&deep(129), 128), Err(Error::TooManyOps)));
        let empty_at_bottom = |depth: usize| {
            let mut t = txn(vec![], vec![]);
            for _ in 1..depth {
                t = txn(vec![nested(t)], vec![]);
            }
            t
        };
        assert!(check_txn(&empty_at_bottom(129), 128).is_ok());
        assert!(matches!(check_txn(&empty_at_bottom(130), 128), Err(Error::TooManyOps)));
        // two ops a level use the budget twice as fast
        let mut wide = txn(vec![put("k")], vec![]);
        for i in 1..64 {
            wide = txn(vec![nested(wide), put(&format!("p{i}"))], vec![]);
        }
        assert!(check_txn(&wide, 128).is_ok());
        let wider = txn(vec![nested(wide), put("q")], vec![]);
        assert!(matches!(check_txn(&wider, 128), Err(Error::TooManyOps)));
    }

    #[test]
    fn duplicate_rules() {
        let ok = |t: TxnRequest| check_txn(&t, 128).is_ok();
        assert!(!ok(txn(vec![put("a"), put("a")], vec![])));
        assert!(ok(txn(vec![put("a")], vec![put("a")])), "then and else are separate");
        assert!(!ok(txn(vec![put("b"), del("a", "c")], vec![])));
        assert!(ok(txn(vec![put("c"), del("a", "c")], vec![])), "end is exclusive");
        assert!(ok(txn(vec![del("a", "c"), del("b", "d")], vec![])), "deletes may overlap");
        assert!(ok(txn(vec![put("a"), del("a", "\0")], vec![])), "etcd compares \\0 literally");
        assert!(ok(txn(vec![nested(txn(vec![put("a")], vec![put("a")]))], vec![])));
        assert!(!ok(txn(vec![nested(txn(vec![put("a")], vec![])), put("a")], vec![])));
        assert!(!ok(txn(vec![nested(txn(vec![del("a", "")], vec![])), put("a")], vec![])));
        assert!(!ok(txn(vec![nested(txn(vec![], vec![put("x")])), nested(txn(vec![put("x")], vec![]))], vec![])));
    }

    #[test]
    fn op_limits_and_empty_ops() {
        let many: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert!(matches!(check_txn(&txn(many.clone(), vec![]), 128), Err(Error::TooManyOps)));
        assert!(check_txn(&txn(many[..128].to_vec(), vec![]), 128).is_ok());
        let empty = TxnRequest { success: vec![RequestOp { request: None }], ..Default::default() };
        assert!(matches!(check_txn(&empty, 128), Err(Error::KeyNotFound)));
        assert!(matches!(check_txn(&txn(vec![put("")], vec![]), 128), Err(Error::EmptyKey)));
    }

    #[test]
    fn put_and_range_checks() {
        let p = PutRequest { key: b"k".to_vec(), ignore_value: true, value: b"v".to_vec(), ..Default::default() };
        assert!(matches!(check_put(&p), Err(Error::ValueProvided)));
        let p = PutRequest { key: b"k".to_vec(), ignore_lease: true, lease: 5, ..Default::default() };
        assert!(matches!(check_put(&p), Err(Error::LeaseProvided)));
        let r = RangeRequest { key: b"k".to_vec(), sort_order: 9, ..Default::default() };
        assert!(matches!(check_range(&r), Err(Error::InvalidSortOption)));
        assert!(matches!(check_range(&RangeRequest::default()), Err(Error::EmptyKey)));
    }
}
