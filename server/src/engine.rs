//! The embedded engine: one cairn member inside a Rust process, without listeners.
//!
//! It is the same Raft member the `cairn` binary serves ([`crate::member::Member`]): the
//! same store, WAL, state machine, proposer and request ids, on the same data layout, so
//! the binary opens a folder the engine wrote and the reverse. It runs as a single voter
//! (etcd's default identity: name `default`, peer URL `http://localhost:2380`, token
//! `etcd-cluster`), so every write is proposed, made durable in the Raft log (one
//! fdatasync per batch of proposals) and applied before it is answered.
//!
//! A Rust control plane uses it through the Kubernetes-style storage interface,
//! [`Engine::local_storage`] (same semantics as the gRPC path, no network hop).

use std::path::Path;
use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_storage::kube::{LocalConfig, LocalStorage, ProposeError, WritePath};
use cairn_storage::watch::WatchHub;
use cairn_storage::{ApplyResponse, Store};

use crate::error::{RequestError, ServerError};
use crate::member::identity::{compute_member_id, InitialMember};
use crate::member::lessor::Lessor;
use crate::member::proposer::Proposer;
use crate::member::raft_proposer::RaftProposer;
use crate::member::{Member, MemberOptions, MemberSetup};

/// etcd's default member name, peer URL, client URL and cluster token.
const NAME: &str = "default";
const PEER_URL: &str = "http://localhost:2380";
const CLIENT_URL: &str = "http://localhost:2379";
const TOKEN: &str = "etcd-cluster";

/// A running embedded engine (see the module docs).
pub struct Engine {
    pub(crate) member: Member,
}

impl Engine {
    /// Opens (or creates) the member in `data_dir` and waits until it leads and serves.
    /// Must be called inside a tokio runtime.
    pub async fn open(data_dir: &Path, options: MemberOptions) -> Result<Engine, ServerError> {
        let peer_urls = vec![PEER_URL.to_owned()];
        let id = compute_member_id(&peer_urls, TOKEN);
        let setup = MemberSetup {
            data_dir: data_dir.to_path_buf(),
            name: NAME.to_owned(),
            client_urls: vec![CLIENT_URL.to_owned()],
            peer_urls: peer_urls.clone(),
            initial: vec![InitialMember { name: NAME.to_owned(), peer_urls, id }],
            token: TOKEN.to_owned(),
            join_existing: false,
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: 100_000,
            peer_tls: None,
            wal_dir: None,
            force_new_cluster: false,
            options,
        };
        let member = Member::open(setup).await?;
        member.joined().await;
        Ok(Engine { member })
    }

    /// The MVCC store.
    pub fn store(&self) -> &Arc<Store> {
        &self.member.store
    }

    /// The watch hub.
    pub fn hub(&self) -> &WatchHub {
        &self.member.hub
    }

    /// The Kubernetes-style storage interface over this engine.
    pub fn local_storage(&self, cfg: LocalConfig) -> LocalStorage<EngineWritePath> {
        let write = EngineWritePath { proposer: self.member.proposer.clone(), lessor: self.member.lessor.clone() };
        LocalStorage::local(self.member.store.clone(), self.member.hub.clone(), write, cfg)
    }

    /// Stops lease expiry, then the node (its log holds everything acknowledged).
    pub async fn shutdown(self) {
        self.member.shutdown().await;
    }
}

/// The engine's write path for [`LocalStorage`]: lease grants and revocations go through
/// the lessor (which chooses IDs and keeps deadlines), everything else through the
/// proposer.
pub struct EngineWritePath {
    proposer: Arc<RaftProposer>,
    lessor: Arc<Lessor<RaftProposer>>,
}

fn propose_error(e: RequestError) -> ProposeError {
    match e {
        RequestError::Storage(e) => ProposeError::Engine(e),
        other => ProposeError::Unavailable(Box::new(other)),
    }
}

impl WritePath for EngineWritePath {
    async fn propose(&self, request: Request) -> Result<ApplyResponse, ProposeError> {
        match request {
            Request::LeaseGrant(g) => self.lessor.grant(g).await.map(ApplyResponse::LeaseGrant).map_err(propose_error),
            Request::LeaseRevoke(r) => {
                self.lessor.revoke(r.id).await.map(ApplyResponse::LeaseRevoke).map_err(propose_error)
            }
            other => self.proposer.propose(other).await.map_err(propose_error),
        }
    }
}
