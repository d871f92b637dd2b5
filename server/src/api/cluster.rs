//! The Cluster service: MemberList, MemberAdd/Remove/Update/Promote, over a
//! [`ClusterControl`] (the Raft cluster, or the fixed single member).

use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::member::control::ClusterControl;
use crate::member::identity::Membership;
use crate::api::status::rpc_error;
use crate::auth::AuthGate;

/// The Cluster service.
pub struct ClusterService {
    membership: Arc<Membership>,
    control: Arc<dyn ClusterControl>,
    /// MemberAdd/Remove/Update/Promote are admin-only while auth is on (etcd's
    /// `checkMembershipOperationPermission`); none on the peer listener.
    auth: AuthGate,
}

impl ClusterService {
    /// A Cluster service for this member over `control`.
    pub fn new(membership: Arc<Membership>, control: Arc<dyn ClusterControl>) -> ClusterService {
        ClusterService { membership, control, auth: AuthGate::default() }
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
        let req = request.into_inner();
        check_urls(&req.peer_ur_ls)?;
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
