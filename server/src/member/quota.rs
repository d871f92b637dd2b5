//! The backend quota (`--quota-backend-bytes`), as etcd's `server/etcdserver/quota.go` and
//! `api/v3rpc/quota.go` enforce it.
//!
//! Before a request that adds data is proposed, its *cost* (etcd's estimate: 256 bytes
//! plus key and value for a put, the larger branch's puts for a Txn, 64 bytes for a
//! lease grant; 0 for anything else) is added to this member's backend size (the file
//! up to its last used page, as a bbolt file's size: `Backend::size_allocated`); if
//! the sum is not below the quota, the member raises the NOSPACE alarm through Raft (so
//! every member has it, see `cairn_storage::alarm`) and the request fails with
//! "etcdserver: mvcc: database space exceeded". Requests of cost 0 always pass.
//!
//! etcd also checks the quota while applying (each member against its own size, applying
//! the put yet answering NOSPACE); cairn does not: what an entry does and answers depends
//! only on the replicated state, never on one member's file size.
//!
//! Limits as etcd's: a negative quota disables the check, 0 means the default (2 GiB),
//! and a quota above 8 GiB works but is warned about at start.

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{PutRequest, RequestOp};
use tracing::{info, warn};

/// etcd's default quota: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Above this (8 GiB) etcd warns that the quota may degrade performance.
pub const MAX_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// etcd's estimate of a key's metadata in the backend.
const KV_OVERHEAD: u64 = 256;
/// etcd's estimate of a lease record in the backend.
const LEASE_OVERHEAD: u64 = 64;

/// The backend quota: `None` when disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    limit: Option<u64>,
}

impl Quota {
    /// The quota for `--quota-backend-bytes` (logged once, as etcd does).
    pub fn from_flag(bytes: i64) -> Quota {
        let quota = Quota::new(bytes);
        match quota.limit {
            None => info!(quota_size_bytes = bytes, "disabled backend quota"),
            Some(limit) if bytes == 0 => info!(quota_size_bytes = limit, "enabled backend quota with default value"),
            Some(limit) => {
                if limit > MAX_QUOTA_BYTES {
                    warn!(quota_size_bytes = limit, quota_maximum_size_bytes = MAX_QUOTA_BYTES, "quota exceeds the maximum value");
                }
                info!(quota_size_bytes = limit, "enabled backend quota");
            }
        }
        quota
    }

    /// The quota for `--quota-backend-bytes` without logging.
    pub fn new(bytes: i64) -> Quota {
        let limit = match u64::try_from(bytes) {
            Err(_) => None,
            Ok(0) => Some(DEFAULT_QUOTA_BYTES),
            Ok(b) => Some(b),
        };
        Quota { limit }
    }

    /// True when `request` fits in a backend of `db_size` bytes (etcd's `Available`).
    pub fn available(&self, db_size: u64, request: &Request) -> bool {
        let c = cost(request);
        match self.limit {
            None => true,
            Some(_) if c == 0 => true,
            Some(limit) => db_size.saturating_add(c) < limit,
        }
    }
}

impl Default for Quota {
    /// etcd's default: 2 GiB.
    fn default() -> Self {
        Quota::new(0)
    }
}

fn cost_put(p: &PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

fn cost_ops(ops: &[RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match &op.request {
            Some(Op::RequestPut(p)) => cost_put(p),
            _ => 0,
        })
        .sum()
}

/// etcd's cost estimate of a request (see the module docs).
pub fn cost(request: &Request) -> u64 {
    match request {
        Request::Put(p) => cost_put(p),
        Request::Txn(t) => cost_ops(&t.success).max(cost_ops(&t.failure)),
        Request::LeaseGrant(_) => LEASE_OVERHEAD,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest, TxnRequest};

    fn put(key: &str, value: usize) -> PutRequest {
        PutRequest { key: key.into(), value: vec![b'x'; value], ..Default::default() }
    }

    #[test]
    fn limits_as_etcd() {
        assert_eq!(Quota::new(0).limit, Some(DEFAULT_QUOTA_BYTES));
        assert_eq!(Quota::new(-1).limit, None);
        assert_eq!(Quota::new(4096).limit, Some(4096));
    }

    #[test]
    fn costs_and_availability() {
        assert_eq!(cost(&Request::Put(put("ab", 10))), 268);
        let op = |p: PutRequest| RequestOp { request: Some(Op::RequestPut(p)) };
        let txn = TxnRequest { success: vec![op(put("a", 1))], failure: vec![op(put("a", 5)), op(put("b", 0))], ..Default::default() };
        assert_eq!(cost(&Request::Txn(txn)), (256 + 1 + 5) + (256 + 1));
        assert_eq!(cost(&Request::LeaseGrant(LeaseGrantRequest::default())), 64);
        let delete = Request::DeleteRange(DeleteRangeRequest::default());
        assert_eq!(cost(&delete), 0);

        let q = Quota::new(1000);
        // size + cost must stay strictly below the quota
        assert!(q.available(1000 - 269, &Request::Put(put("ab", 10))));
        assert!(!q.available(1000 - 268, &Request::Put(put("ab", 10))));
        assert!(q.available(5000, &delete));
        assert!(Quota::new(-1).available(u64::MAX, &Request::Put(put("ab", 10))));
    }
}
