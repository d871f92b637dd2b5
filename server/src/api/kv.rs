//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Every request is first checked like etcd's gRPC layer checks it (`validate`), so malformed
//! requests never reach the write path. A linearizable read first waits on the proposer's
//! read barrier (a ReadIndex round: this member has applied everything committed before
//! the read began), a serializable one does not; both then read the local store, which
//! serves only committed, durable data. Writes go through the [`Proposer`] (Raft) and are
//! answered once applied here. Every top-level response header carries this member's
//! cluster ID, member ID and Raft term, and the revision storage returned.
//!
//! Reads that may return many keys (a Range, or a read-only Txn holding one, with no
//! limit or a limit over 1,000) run on the blocking pool, not on the runtime's threads.
//!
//! With auth on, a Range is checked here (read permission, at the current auth revision);
//! writes are proposed as their user and checked at apply (`cairn_storage::auth`), as
//! etcd checks them; Compact too is proposed as its user.

use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request as Command;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::request_op::Request as RequestKind;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_storage::{validate, ApplyResponse, Store};
use tonic::{Request, Response, Status};

use cairn_storage::auth::AuthInfo;

use crate::auth::{request_auth, AuthGate};
use crate::error::RequestError;
use crate::member::identity::Membership;
use crate::metrics::Metrics;
use crate::member::proposer::{request_kind, response_kind, Proposer};
use crate::api::status::rpc_error;

/// The KV service over a store and a write path.
pub struct KvService<P> {
    store: Arc<Store>,
    proposer: Arc<P>,
    membership: Arc<Membership>,
    max_txn_ops: usize,
    auth: AuthGate,
    /// Counts served ranges (`etcd_mvcc_range_total`).
    metrics: Arc<Metrics>,
}

impl<P: Proposer> KvService<P> {
    /// A KV service; `max_txn_ops` is `--max-txn-ops`.
    pub fn new(
        store: Arc<Store>,
        proposer: Arc<P>,
        membership: Arc<Membership>,
        max_txn_ops: usize,
    ) -> KvService<P> {
        KvService {
            store,
            proposer,
            membership,
            max_txn_ops,
            auth: AuthGate::default(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks requests through `auth`.
    pub fn with_auth(mut self, auth: AuthGate) -> Self {
        self.auth = auth;
        self
    }

    /// Runs `read` on the store: on the blocking pool if it may be `large`, else here.
    async fn read<T: Send + 'static>(
        &self,
        large: bool,
        read: impl FnOnce(&Store) -> cairn_storage::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        if !large {
            return read(&self.store).map_err(rpc_error);
        }
        let store = self.store.clone();
        // the task ends by returning, or not at all when the runtime shuts down
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|_| rpc_error(RequestError::Stopped))?
            .map_err(rpc_error)
    }

    /// Proposes `command` as `who`.
    async fn propose(&self, who: &Option<AuthInfo>, command: Command) -> Result<ApplyResponse, Status> {
        self.proposer.propose_as(command, request_auth(who)).await.map_err(rpc_error)
    }
}

/// The error for a response of the wrong kind (a storage bug), logged where it is built.
/// Ranges over more keys than this (or without a limit) are read on the blocking pool.
const INLINE_RANGE_LIMIT: i64 = 1000;

/// Whether a Range may read many keys: a key range with no limit, or a large one.
fn may_be_large(r: &RangeRequest) -> bool {
    !r.range_end.is_empty() && (r.limit <= 0 || r.limit > INLINE_RANGE_LIMIT)
}

/// Whether any Range of a Txn, nested Txns included, [`may_be_large`] (iterative: a Txn
/// nests up to `cairn_proto::nested::MAX_TXN_DEPTH` levels).
fn txn_may_be_large(t: &TxnRequest) -> bool {
    let mut stack = vec![t];
    while let Some(t) = stack.pop() {
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(RequestKind::RequestRange(r)) if may_be_large(r) => return true,
                Some(RequestKind::RequestTxn(nested)) => stack.push(nested),
                _ => {}
            }
        }
    }
    false
}

pub(crate) fn mismatch(request: &'static str, got: &ApplyResponse) -> Status {
    let err = RequestError::ResponseMismatch {
        request,
        got: response_kind(got),
    };
    tracing::error!(error = %err, "storage returned the wrong response kind");
    rpc_error(err)
}

#[tonic::async_trait]
impl<P: Proposer> Kv for KvService<P> {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        validate::check_range(request.get_ref()).map_err(rpc_error)?;
        let who = self.auth.who(&request)?;
        let request = request.into_inner();
        if !request.serializable {
            // a Raft member waits for a ReadIndex round; one node has nothing to wait for
            self.proposer.read_barrier().await.map_err(rpc_error)?;
        }
        self.auth.check_range(&who, &request.key, &request.range_end)?;
        // A key, or a range with a small limit, is read inline, not on spawn_blocking: the
        // index is in memory and values come from the backend's cache, so the read is
        // shorter than a thread handoff. Measured with cairn-bench (release, 1-key range,
        // this 2-core machine): inline 7.6k-8.0k req/s with 1 client and 25k-27k with 100
        // clients; spawn_blocking 4.2k-7.8k and 16k-26k.
        // A range that may be large goes to the blocking pool: read inline, three Ranges
        // over 200,000 keys held both runtime threads for seconds and every other client
        // of the member waited (tests/abuse `scale`: the control client's slowest round
        // went from 1.0 s, 4.7 s with another process busy on one core, to 0.1-0.6 s, once
        // 1.9 s on the shared machine; what is left is the two cores themselves and
        // encoding the 27 MB answers, which tonic does on the runtime).
        self.metrics.ranges.inc();
        let large = may_be_large(&request);
        let mut response = self.read(large, move |store| store.range(&request)).await?;
        self.membership.fill(&mut response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        validate::check_put(request.get_ref()).map_err(rpc_error)?;
        let who = self.auth.who(&request)?;
        let request = request.into_inner();
        let command = Command::Put(request);
        let kind = request_kind(&command);
        match self.propose(&who, command).await? {
            ApplyResponse::Put(mut response) => {
                self.membership.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(mismatch(kind, &other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        validate::check_delete_range(request.get_ref()).map_err(rpc_error)?;
        let who = self.auth.who(&request)?;
        let request = request.into_inner();
        let command = Command::DeleteRange(request);
        let kind = request_kind(&command);
        match self.propose(&who, command).await? {
            ApplyResponse::DeleteRange(mut response) => {
                self.membership.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(mismatch(kind, &other)),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        validate::check_txn(request.get_ref(), self.max_txn_ops).map_err(rpc_error)?;
        let who = self.auth.who(&request)?;
        let request = request.into_inner();
        if cairn_storage::txn::is_read_only(&request) {
            // as etcd: a Txn that writes nothing is a read (a ReadIndex round unless every
            // range in it is serializable), answered from one committed revision
            if !cairn_storage::txn::is_serializable(&request) {
                self.proposer.read_barrier().await.map_err(rpc_error)?;
            }
            self.auth.check_txn(&who, &request)?;
            // on the blocking pool when it may read many keys, as a Range (see `range`)
            let large = txn_may_be_large(&request);
            let mut response = self.read(large, move |store| store.read_txn(&request)).await?;
            self.metrics.count_txn(&response);
            self.membership.fill(&mut response.header);
            return Ok(Response::new(response));
        }
        let command = Command::Txn(request);
        let kind = request_kind(&command);
        match self.propose(&who, command).await? {
            ApplyResponse::Txn(mut response) => {
                self.membership.fill(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(mismatch(kind, &other)),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let who = self.auth.who(&request)?;
        let request = request.into_inner();
        let (revision, physical) = (request.revision, request.physical);
        let command = Command::Compaction(request);
        let kind = request_kind(&command);
        let mut response = match self.propose(&who, command).await? {
            ApplyResponse::Compaction(response) => response,
            other => return Err(mismatch(kind, &other)),
        };
        if physical {
            // etcd answers a physical compaction only once it is on disk.
            self.store
                .wait_compacted(revision)
                .await
                .map_err(rpc_error)?;
        }
        self.membership.fill(&mut response.header);
        Ok(Response::new(response))
    }
}
