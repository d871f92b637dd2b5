//! Requests that only the leader can answer exactly, forwarded from a follower over the
//! leader's peer URL (where the Lease and Cluster services are mounted too), with the peer
//! TLS configuration.
//!
//! - Lease deadlines live only in the leader's lessor, so a follower cannot renew a lease
//!   or tell its remaining TTL. As etcd does, a follower forwards LeaseKeepAlive and
//!   LeaseTimeToLive.
//! - MemberAdd, MemberRemove and MemberPromote: their strict-reconfig check needs to know
//!   which voters are connected, and the promotion check how far the learner's log is,
//!   which only the leader knows (`reconfig.rs`; etcd forwards MemberPromote the same way).
//!
//! A forwarded request carries the `cairn-forwarded` metadata key. A forwarded lease
//! request reaching a member that is not (or no longer) the leader is answered with
//! `etcdserver: leader changed` instead of being forwarded again; the peer listener's
//! Cluster service never forwards. So no request travels in a loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, Member, MemberAddRequest, MemberPromoteRequest,
    MemberRemoveRequest,
};
use cairn_raft_node::NodeHandle;
use parking_lot::Mutex;
use cairn_raft_node::transport::{peer_endpoint, PeerTls};
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::error::RequestError;
use crate::member::table::Members;
use crate::member::machine::Output;
use crate::api::status::rpc_error;

/// The metadata key marking a forwarded request.
pub const FORWARDED: &str = "cairn-forwarded";
/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwards requests to the leader (see the module docs).
pub struct LeaderForwarder {
    me: u64,
    handle: NodeHandle<Output>,
    members: Arc<Members>,
    tls: Option<PeerTls>,
    /// Channels to peers by URL. Lock: guards the map only; never held across an await.
    channels: Mutex<HashMap<String, Channel>>,
}

impl LeaderForwarder {
    /// A forwarder for member `me`.
    pub fn new(me: u64, handle: NodeHandle<Output>, members: Arc<Members>, tls: Option<PeerTls>) -> Self {
        LeaderForwarder { me, handle, members, tls, channels: Mutex::new(HashMap::new()) }
    }

    /// Whether a request must be forwarded: this member is not the leader. `forwarded`
    /// requests are never forwarded again.
    pub fn must_forward(&self, forwarded: bool) -> Result<bool, Status> {
        let leader = self.handle.leader().id;
        if leader == self.me {
            return Ok(false);
        }
        if forwarded {
            return Err(rpc_error(RequestError::LeaderChanged));
        }
        if leader == 0 {
            return Err(rpc_error(RequestError::NoLeader));
        }
        Ok(true)
    }

    /// Whether this member leads now.
    pub fn leads(&self) -> bool {
        self.handle.leader().id == self.me
    }

    fn leader_client(&self) -> Result<LeaseClient<Channel>, Status> {
        Ok(LeaseClient::new(self.leader_channel()?))
    }

    fn leader_channel(&self) -> Result<Channel, Status> {
        let leader = self.handle.leader().id;
        let member = self.members.get(leader).ok_or_else(|| rpc_error(RequestError::NoLeader))?;
        let url = member.peer_urls.first().cloned().ok_or_else(|| rpc_error(RequestError::NoLeader))?;
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(&url) {
            return Ok(c.clone());
        }
        let (endpoint, dial) = peer_endpoint(&url, self.tls.as_ref())
            .map_err(|e| Status::unavailable(format!("cairn: leader peer URL {url}: {e}")))?;
        let endpoint = endpoint.connect_timeout(Duration::from_secs(1)).timeout(FORWARD_TIMEOUT);
        let channel = dial.connect_lazy(endpoint).map_err(|e| Status::unavailable(format!("cairn: peer TLS: {e}")))?;
        channels.insert(url, channel.clone());
        Ok(channel)
    }

    fn mark<T>(msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        req
    }

    /// Renews lease `id` on the leader; answers its TTL (0: no such lease).
    pub async fn renew(&self, id: i64) -> Result<i64, Status> {
        let mut client = self.leader_client()?;
        let once = futures::stream::iter([LeaseKeepAliveRequest { id }]);
        let mut responses = client.lease_keep_alive(Self::mark(once)).await?.into_inner();
        match tokio::time::timeout(FORWARD_TIMEOUT, responses.message()).await {
            Ok(Ok(Some(r))) => Ok(r.ttl),
            Ok(Ok(None)) => Err(rpc_error(RequestError::LeaderChanged)),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(rpc_error(RequestError::Timeout)),
        }
    }

    /// LeaseTimeToLive on the leader.
    pub async fn time_to_live(&self, req: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse, Status> {
        let mut client = self.leader_client()?;
        Ok(client.lease_time_to_live(Self::mark(req)).await?.into_inner())
    }
}

impl LeaderForwarder {
    /// MemberAdd on the leader; the member added and the leader's member list.
    pub async fn member_add(&self, req: MemberAddRequest) -> Result<(Option<Member>, Vec<Member>), Status> {
        let r = ClusterClient::new(self.leader_channel()?).member_add(Self::mark(req)).await?.into_inner();
        Ok((r.member, r.members))
    }

    /// MemberRemove on the leader; the leader's member list.
    pub async fn member_remove(&self, req: MemberRemoveRequest) -> Result<Vec<Member>, Status> {
        Ok(ClusterClient::new(self.leader_channel()?).member_remove(Self::mark(req)).await?.into_inner().members)
    }

    /// MemberPromote on the leader; the leader's member list.
    pub async fn member_promote(&self, req: MemberPromoteRequest) -> Result<Vec<Member>, Status> {
        Ok(ClusterClient::new(self.leader_channel()?).member_promote(Self::mark(req)).await?.into_inner().members)
    }
}

/// Whether `request` was forwarded by another member.
pub fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED)
}
