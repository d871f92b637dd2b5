//! The Cluster service: MemberList, MemberAdd/Remove/Update/Promote, over a
//! [`ClusterControl`] (the Raft cluster, or the fixed single member).
//!
//! On a follower, MemberAdd, MemberRemove and MemberPromote go to the leader, whose checks
//! are exact (`member/leader_forward.rs`); the follower answers once its own member list
//! shows the change, so a client reading it from the same member sees what it did.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    Member, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::member::control::ClusterControl;
use crate::member::identity::Membership;
use crate::member::leader_forward::{is_forwarded, LeaderForwarder};
use crate::api::status::rpc_error;
use crate::auth::AuthGate;

/// The Cluster service.
pub struct ClusterService {
    membership: Arc<Membership>,
    control: Arc<dyn ClusterControl>,
    /// MemberAdd/Remove/Update/Promote are admin-only while auth is on (etcd's
    /// `checkMembershipOperationPermission`); none on the peer listener.
    auth: AuthGate,
    /// Sends membership changes to the leader from a follower (the client listeners;
    /// `None` on the peer listener, which receives them).
    forward: Option<Arc<LeaderForwarder>>,
}

/// How long a follower waits to apply a change the leader made for it.
const APPLY_WAIT: Duration = Duration::from_secs(3);

impl ClusterService {
    /// A Cluster service for this member over `control`.
    pub fn new(membership: Arc<Membership>, control: Arc<dyn ClusterControl>) -> ClusterService {
        ClusterService { membership, control, auth: AuthGate::default(), forward: None }
    }

    /// Forwards membership changes through `forward` while this member does not lead.
    pub fn with_forwarder(mut self, forward: Option<Arc<LeaderForwarder>>) -> ClusterService {
        self.forward = forward;
        self
    }

    /// The forwarder, when `request` must go to the leader: this member does not lead and
    /// the request was not forwarded to it.
    fn to_leader<T>(&self, request: &Request<T>) -> Option<&LeaderForwarder> {
        self.forward.as_deref().filter(|f| !f.leads() && !is_forwarded(request))
    }

    /// Waits (at most [`APPLY_WAIT`]) until this member's list has the members `want` has,
    /// as voters or learners as there; the list it has then.
    async fn applied(&self, want: &[Member]) -> Vec<Member> {
        let key = |ms: &[Member]| {
            let mut k: Vec<(u64, bool)> = ms.iter().map(|m| (m.id, m.is_learner)).collect();
            k.sort_unstable();
            k
        };
        let want = key(want);
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        loop {
            let now = self.control.members();
            if key(&now) == want || tokio::time::Instant::now() >= deadline {
                return now;
            }
            // the change is committed; this member applies it within a heartbeat or two
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Checks the membership changes through `auth`.
    pub fn with_auth(mut self, auth: AuthGate) -> ClusterService {
        self.auth = auth;
        self
    }

    /// etcd's cluster responses carry no revision (`ClusterServer.header()`).
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.membership.header(0))
    }
}

/// etcd refuses peer URLs that do not parse as URLs with a host and port.
fn check_urls(urls: &[String]) -> Result<(), Status> {
    let ok = !urls.is_empty()
        && urls.iter().all(|u| {
            let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
            rest.is_some_and(|r| {
                let host_port = r.trim_end_matches('/');
                host_port.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            })
        });
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument("etcdserver: given member URLs are invalid"))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse { header: self.header(), members: self.control.members() }))
    }

    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.auth.admin(&request)?;
        check_urls(&request.get_ref().peer_ur_ls)?;
        if let Some(leader) = self.to_leader(&request) {
            let (member, members) = leader.member_add(request.into_inner()).await?;
            let members = self.applied(&members).await;
            return Ok(Response::new(MemberAddResponse { header: self.header(), member, members }));
        }
        let req = request.into_inner();
        let member = self.control.add_member(req.peer_ur_ls, req.is_learner).await.map_err(rpc_error)?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members: self.control.members(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.auth.admin(&request)?;
        if let Some(leader) = self.to_leader(&request) {
            let members = leader.member_remove(request.into_inner()).await?;
            let members = self.applied(&members).await;
            return Ok(Response::new(MemberRemoveResponse { header: self.header(), members }));
        }
        self.control.remove_member(request.get_ref().id).await.map_err(rpc_error)?;
        Ok(Response::new(MemberRemoveResponse { header: self.header(), members: self.control.members() }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.auth.admin(&request)?;
        let req = request.into_inner();
        check_urls(&req.peer_ur_ls)?;
        self.control.update_member(req.id, req.peer_ur_ls).await.map_err(rpc_error)?;
        Ok(Response::new(MemberUpdateResponse { header: self.header(), members: self.control.members() }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.auth.admin(&request)?;
        if let Some(leader) = self.to_leader(&request) {
            let members = leader.member_promote(request.into_inner()).await?;
            let members = self.applied(&members).await;
            return Ok(Response::new(MemberPromoteResponse { header: self.header(), members }));
        }
        self.control.promote_member(request.get_ref().id).await.map_err(rpc_error)?;
        Ok(Response::new(MemberPromoteResponse { header: self.header(), members: self.control.members() }))
    }
}

#[cfg(test)]
mod tests {
    use super::check_urls;

    #[test]
    fn member_urls_need_scheme_host_and_port() {
        assert!(check_urls(&["http://127.0.0.1:2380".into()]).is_ok());
        assert!(check_urls(&["https://a:1".into(), "http://b:2/".into()]).is_ok());
        for bad in ["127.0.0.1:2380", "http://a", "http://:1", "ftp://a:1", "http://a:x"] {
            let e = check_urls(&[bad.into()]).unwrap_err();
            assert_eq!(e.message(), "etcdserver: given member URLs are invalid", "{bad}");
        }
        assert!(check_urls(&[]).is_err());
    }
}
