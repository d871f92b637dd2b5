//! The Cluster service: MemberList shows this one member; membership changes need Raft.

use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::membership::Membership;

/// The Cluster service.
pub struct ClusterService {
    membership: Arc<Membership>,
}

impl ClusterService {
    /// A Cluster service reporting `membership`.
    pub fn new(membership: Arc<Membership>) -> ClusterService {
        ClusterService { membership }
    }

    /// etcd's cluster responses carry no revision (`ClusterServer.header()`).
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.membership.header(0))
    }
}

fn single_node(method: &str) -> Status {
    Status::unimplemented(format!(
        "cairn: {method} is not implemented yet: this version runs a single member"
    ))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: vec![self.membership.member()],
        }))
    }

    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(single_node("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(single_node("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(single_node("MemberUpdate"))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(single_node("MemberPromote"))
    }
}
