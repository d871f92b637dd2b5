//! Bootstrap of a member: its identity file, and what a joining member learns from the
//! running cluster.
//!
//! ```text
//!  <data-dir>/member/identity  "member_id cluster_id\n" in hex, written once (fsynced,
//!                              through a temporary file and a rename)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_proto::cairnpb::MemberTable;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::MemberListRequest;
use cairn_raft_node::transport::peer_endpoint;

use super::MemberSetup;
use crate::error::ServerError;

/// The identity of a member, fixed when it first starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
}

fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("identity")
}

pub(super) fn read_identity(data_dir: &Path) -> Result<Option<Identity>, ServerError> {
    let path = identity_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ServerError::Identity(format!("{}: {e}", path.display()))),
    };
    let mut parts = text.split_whitespace().map(|p| u64::from_str_radix(p, 16));
    match (parts.next(), parts.next()) {
        (Some(Ok(member_id)), Some(Ok(cluster_id))) if member_id != 0 => Ok(Some(Identity { member_id, cluster_id })),
        _ => Err(ServerError::Identity(format!("{} is malformed: {text:?}", path.display()))),
    }
}

pub(super) fn write_identity(data_dir: &Path, id: Identity) -> Result<(), ServerError> {
    let path = identity_path(data_dir);
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| ServerError::Identity(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    writeln!(f, "{:016x} {:016x}", id.member_id, id.cluster_id).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Asks the members of `--initial-cluster` (their peer URLs serve the Cluster service) for
/// the cluster this member was added to; retries for a while (they may be starting).
pub(super) async fn fetch_cluster(setup: &MemberSetup) -> Result<(Identity, MemberTable), ServerError> {
    let urls: Vec<String> = setup
        .initial
        .iter()
        .filter(|m| m.name != setup.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let mut last_err = String::from("no other member in --initial-cluster");
    for _attempt in 0..50 {
        for url in &urls {
            let (endpoint, dial) = match peer_endpoint(url, setup.peer_tls.as_ref()) {
                Ok((e, dial)) => (e.connect_timeout(Duration::from_secs(1)).timeout(Duration::from_secs(3)), dial),
                Err(e) => {
                    last_err = format!("{url}: {e}");
                    continue;
                }
            };
            let channel = match dial.connect(endpoint).await {
                Ok(c) => c,
                Err(e) => {
                    last_err = format!("{url}: {e}");
                    continue;
                }
            };
            match ClusterClient::new(channel).member_list(MemberListRequest { linearizable: true }).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let cluster_id = resp.header.map_or(0, |h| h.cluster_id);
                    let me = resp.members.iter().find(|m| m.peer_ur_ls.iter().any(|u| setup.peer_urls.contains(u)));
                    let Some(me) = me else {
                        return Err(ServerError::Identity(format!(
                            "the cluster at {url} has no member with peer URLs {:?}: add it with MemberAdd first",
                            setup.peer_urls
                        )));
                    };
                    let table = MemberTable {
                        cluster_id,
                        members: resp
                            .members
                            .iter()
                            .map(|m| cairn_proto::cairnpb::MemberRecord {
                                id: m.id,
                                name: m.name.clone(),
                                peer_urls: m.peer_ur_ls.clone(),
                                client_urls: m.client_ur_ls.clone(),
                                is_learner: m.is_learner,
                            })
                            .collect(),
                        removed: Vec::new(),
                    };
                    return Ok((Identity { member_id: me.id, cluster_id }, table));
                }
                Err(e) => last_err = format!("{url}: {}", e.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ServerError::Identity(format!("cannot reach the existing cluster: {last_err}")))
}

