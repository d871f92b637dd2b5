//! The Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive (a bidirectional stream),
//! LeaseTimeToLive and LeaseLeases, answered as etcd answers them (etcd: `v3rpc/lease.go`).
//!
//! LeaseKeepAlive reads its requests in a task of its own, ahead of their answers, into a
//! queue of [`KEEPALIVE_READ_AHEAD`] requests: HTTP/2 frames nobody has read yet are held
//! by h2, which closes the whole connection when too many small ones pile up (see
//! `net/serve.rs`), so they are taken off h2 promptly. When the queue is full (the client
//! sends faster than its renewals are answered, or does not read its answers) the task
//! stops reading and HTTP/2 flow control holds the client back.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use cairn_storage::{Error as StorageError, Store};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{request_auth, AuthGate};
use crate::error::RequestError;
use crate::member::leader_forward::{is_forwarded, LeaderForwarder};
use crate::member::lessor::Lessor;
use crate::member::identity::Membership;
use crate::member::proposer::Proposer;
use crate::member::role::Role;
use crate::api::status::rpc_error;

/// Keep-alive requests read ahead of their answers on one LeaseKeepAlive call.
const KEEPALIVE_READ_AHEAD: usize = 1024;

/// Reads `incoming` into a queue of [`KEEPALIVE_READ_AHEAD`] requests (see the module docs)
/// until the client ends its side, the call fails, or the answers are no longer wanted.
fn read_ahead<T: Send + 'static>(mut incoming: Streaming<T>) -> impl Stream<Item = Result<T, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_READ_AHEAD);
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = incoming.message() => message,
                // the call's answers were dropped: nobody needs the rest
                () = tx.closed() => break,
            };
            let (item, last) = match message {
                Ok(Some(request)) => (Ok(request), false),
                Ok(None) => break,
                Err(status) => (Err(status), true),
            };
            if tx.send(item).await.is_err() || last {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The Lease service over the leader's lessor.
pub struct LeaseService<P> {
    store: Arc<Store>,
    lessor: Arc<Lessor<P>>,
    membership: Arc<Membership>,
    /// A Raft member's way to the leader for what only the leader answers.
    forward: Option<Arc<LeaderForwarder>>,
    /// The member's role: a learner refuses lease calls, as etcd's does.
    role: Option<Role>,
    /// Access control (LeaseRevoke runs as its user); none on the peer listener.
    auth: AuthGate,
}

impl<P: Proposer> LeaseService<P> {
    /// A Lease service.
    pub fn new(store: Arc<Store>, lessor: Arc<Lessor<P>>, membership: Arc<Membership>) -> Self {
        LeaseService { store, lessor, membership, forward: None, role: None, auth: AuthGate::default() }
    }

    /// Proposes revocations as the caller's user, checked through `auth`.
    pub fn with_auth(mut self, auth: AuthGate) -> Self {
        self.auth = auth;
        self
    }

    /// Refuses calls on a learner (grants and revocations already fail in the proposer).
    pub fn with_role(mut self, role: Option<Role>) -> Self {
        self.role = role;
        self
    }

    fn refuse_learner(&self) -> Result<(), Status> {
        match &self.role {
            Some(role) => role.refuse_learner().map_err(rpc_error),
            None => Ok(()),
        }
    }

    /// Forwards keep-alives and time-to-live requests to the leader when this member is
    /// not it (a Raft member).
    pub fn with_forwarder(mut self, forward: Option<Arc<LeaderForwarder>>) -> Self {
        self.forward = forward;
        self
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<P: Proposer> Lease for LeaseService<P> {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut resp = self.lessor.grant(request.into_inner()).await.map_err(rpc_error)?;
        self.membership.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = self.auth.who(&request)?;
        let mut resp = self.lessor.revoke_as(request.into_inner().id, request_auth(&who)).await.map_err(rpc_error)?;
        self.membership.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.refuse_learner()?;
        let lessor = self.lessor.clone();
        let membership = self.membership.clone();
        let store = self.store.clone();
        let forward = self.forward.clone();
        let forwarded = is_forwarded(&request);
        let incoming = read_ahead(request.into_inner());
        // one response per request, in order; a lease that does not exist answers TTL 0
        let out = incoming.then(move |req| {
            let (lessor, membership, store, forward) = (lessor.clone(), membership.clone(), store.clone(), forward.clone());
            async move {
                let req = req?;
                if let Some(f) = &forward {
                    if f.must_forward(forwarded)? {
                        let ttl = f.renew(req.id).await?;
                        return Ok(LeaseKeepAliveResponse { header: Some(membership.header(store.revision())), id: req.id, ttl });
                    }
                }
                let ttl = match lessor.renew(req.id).await {
                    Ok(ttl) => ttl,
                    Err(RequestError::Storage(StorageError::LeaseNotFound)) => 0,
                    Err(e) => return Err(rpc_error(e)),
                };
                Ok(LeaseKeepAliveResponse { header: Some(membership.header(store.revision())), id: req.id, ttl })
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.refuse_learner()?;
        if let Some(f) = &self.forward {
            if f.must_forward(is_forwarded(&request))? {
                let mut resp = f.time_to_live(request.into_inner()).await?;
                self.membership.fill(&mut resp.header);
                return Ok(Response::new(resp));
            }
        }
        let req = request.into_inner();
        let header = Some(self.membership.header(self.store.revision()));
        let resp = match self.lessor.time_to_live(req.id, req.keys) {
            Some(t) => LeaseTimeToLiveResponse { header, id: req.id, ttl: t.remaining, granted_ttl: t.granted, keys: t.keys },
            // etcd answers an unknown lease with TTL -1, not an error
            None => LeaseTimeToLiveResponse { header, id: req.id, ttl: -1, granted_ttl: 0, keys: vec![] },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(&self, _request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.refuse_learner()?;
        let leases = self.store.lease_ids().into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(Response::new(LeaseLeasesResponse { header: Some(self.membership.header(self.store.revision())), leases }))
    }
}
