//! Who this member is: its ID, its cluster's ID, its URLs, and the response header they fill.
//!
//! IDs are derived exactly as etcd derives them at bootstrap (`computeMemberId` and `genID` in
//! etcd's `membership` package), so a client sees the IDs it would see from etcd started with
//! the same flags:
//! - member ID: the first 8 bytes, big-endian, of SHA-1 over the member's peer URLs sorted
//!   and concatenated (no separator), followed by `--initial-cluster-token`;
//! - cluster ID: the first 8 bytes, big-endian, of SHA-1 over the sorted member IDs, each as
//!   8 big-endian bytes.
//!
//! With the defaults (`http://localhost:2380`, token `etcd-cluster`) that gives member
//! `8e9e05c52164694d` and cluster `cdf818194e3a8c32`, as `etcd` prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn_proto::etcdserverpb::{Member, ResponseHeader};
use sha1::{Digest, Sha1};

use crate::startup::config::Config;
use crate::error::ConfigError;

/// The Raft term reported while cairn runs one node without Raft. etcd's single node reports
/// term 2 after its first election; cairn reports that consistently.
pub const SINGLE_NODE_RAFT_TERM: u64 = 2;

/// This member and its cluster, as reported in headers, Status and MemberList.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The cluster ID.
    pub cluster_id: u64,
    /// This member's ID.
    pub member_id: u64,
    /// This member's name (`--name`).
    pub name: String,
    /// This member's peer URLs (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// This member's client URLs (`--advertise-client-urls`).
    pub client_urls: Vec<String>,
    /// The Raft term to report (moves with elections when the member runs Raft).
    pub raft_term: RaftTerm,
}

/// The current Raft term, shared by everything that fills response headers.
#[derive(Debug, Clone, Default)]
pub struct RaftTerm(Arc<AtomicU64>);

impl RaftTerm {
    /// A term starting at `term`.
    pub fn new(term: u64) -> RaftTerm {
        RaftTerm(Arc::new(AtomicU64::new(term)))
    }
    /// The term now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Records a new term.
    pub fn set(&self, term: u64) {
        self.0.store(term, Ordering::Relaxed);
    }
}

impl PartialEq for RaftTerm {
    fn eq(&self, other: &RaftTerm) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RaftTerm {}

/// One member of `--initial-cluster`: its name, its peer URLs and the ID etcd derives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// The name.
    pub name: String,
    /// Its peer URLs, in flag order.
    pub peer_urls: Vec<String>,
    /// Its member ID.
    pub id: u64,
}

/// The members `--initial-cluster` lists (several URLs of one name are grouped), ordered by
/// first appearance, with their IDs derived from their URLs and `--initial-cluster-token`.
pub fn initial_members(config: &Config) -> Result<Vec<InitialMember>, ConfigError> {
    let mut out: Vec<InitialMember> = Vec::new();
    for (name, url) in parse_initial_cluster(&config.initial_cluster())? {
        match out.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url),
            None => out.push(InitialMember { name, peer_urls: vec![url], id: 0 }),
        }
    }
    for m in &mut out {
        m.id = compute_member_id(&m.peer_urls, &config.initial_cluster_token);
        if m.id == 0 {
            return Err(ConfigError::ZeroMemberId);
        }
    }
    Ok(out)
}

impl Membership {
    /// Derives this member from the configuration. As in etcd, `--initial-cluster` must name
    /// this member with the same peer URLs as `--initial-advertise-peer-urls`. Other members
    /// listed there are reported by the caller as ignored: this version runs one node.
    pub fn from_config(config: &Config) -> Result<Membership, ConfigError> {
        let initial = parse_initial_cluster(&config.initial_cluster())?;
        let mut own: Vec<String> = initial
            .iter()
            .filter(|(name, _)| name == &config.name)
            .map(|(_, url)| url.clone())
            .collect();
        if own.is_empty() {
            return Err(ConfigError::NotInInitialCluster(config.name.clone()));
        }
        let mut advertised = config.initial_advertise_peer_urls.clone();
        own.sort();
        advertised.sort();
        if own != advertised {
            return Err(ConfigError::PeerUrlsMismatch {
                initial_cluster: own.join(","),
                advertised: advertised.join(","),
            });
        }
        let member_id = compute_member_id(
            &config.initial_advertise_peer_urls,
            &config.initial_cluster_token,
        );
        if member_id == 0 {
            // etcd refuses 0 too: it is Raft's "no node".
            return Err(ConfigError::ZeroMemberId);
        }
        let all: Vec<u64> = initial_members(config)?.iter().map(|m| m.id).collect();
        Ok(Membership {
            cluster_id: compute_cluster_id(&all),
            member_id,
            name: config.name.clone(),
            peer_urls: config.initial_advertise_peer_urls.clone(),
            client_urls: config.advertise_client_urls.clone(),
            raft_term: RaftTerm::new(SINGLE_NODE_RAFT_TERM),
        })
    }

    /// A response header for `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term.get(),
        }
    }

    /// Completes a header storage filled (it sets the revision only).
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(revision));
    }

    /// This member as MemberList shows it.
    pub fn member(&self) -> Member {
        Member {
            id: self.member_id,
            name: self.name.clone(),
            peer_ur_ls: self.peer_urls.clone(),
            client_ur_ls: self.client_urls.clone(),
            is_learner: false,
        }
    }
}

/// Parses `name=url,name=url,...` into (name, url) pairs, keeping their order.
pub fn parse_initial_cluster(s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    s.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| match part.trim().split_once('=') {
            Some((name, url)) if !name.is_empty() && !url.is_empty() => {
                Ok((name.to_owned(), url.to_owned()))
            }
            _ => Err(ConfigError::InitialCluster(part.to_owned())),
        })
        .collect()
}

/// etcd's bootstrap member ID (`computeMemberId` with no timestamp).
pub fn compute_member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hasher = Sha1::new();
    for url in urls {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

/// etcd's cluster ID (`RaftCluster.genID`) for the given member IDs.
pub fn compute_cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        crate::startup::config::parse_for_test(args)
    }

    #[test]
    fn default_ids_match_etcd() {
        // Values printed by etcd 3.4/3.5 started with default flags.
        let id = compute_member_id(&["http://localhost:2380".to_owned()], "etcd-cluster");
        assert_eq!(id, 0x8e9e05c52164694d);
        assert_eq!(compute_cluster_id(&[id]), 0xcdf818194e3a8c32);
    }

    #[test]
    fn member_id_sorts_urls_and_cluster_id_sorts_members() {
        let a = compute_member_id(&["http://b:2380".into(), "http://a:2380".into()], "t");
        let b = compute_member_id(&["http://a:2380".into(), "http://b:2380".into()], "t");
        assert_eq!(a, b);
        assert_ne!(
            a,
            compute_member_id(&["http://a:2380".into(), "http://b:2380".into()], "u")
        );
        assert_eq!(
            compute_cluster_id(&[1, 2, 3]),
            compute_cluster_id(&[3, 1, 2])
        );
    }

    #[test]
    fn membership_from_default_config() {
        let m = Membership::from_config(&config(&[])).unwrap();
        assert_eq!(m.member_id, 0x8e9e05c52164694d);
        assert_eq!(m.cluster_id, 0xcdf818194e3a8c32);
        let h = m.header(7);
        assert_eq!(
            (h.cluster_id, h.member_id, h.revision, h.raft_term),
            (m.cluster_id, m.member_id, 7, 2)
        );
        let mut header = Some(ResponseHeader {
            revision: 9,
            ..Default::default()
        });
        m.fill(&mut header);
        assert_eq!(header, Some(m.header(9)));
        let member = m.member();
        assert_eq!(member.peer_ur_ls, vec!["http://localhost:2380"]);
        assert_eq!(member.client_ur_ls, vec!["http://localhost:2379"]);
    }

    #[test]
    fn initial_cluster_must_name_this_member() {
        let c = config(&["--name=x", "--initial-cluster=y=http://localhost:2380"]);
        assert!(matches!(
            Membership::from_config(&c),
            Err(ConfigError::NotInInitialCluster(_))
        ));
        let c = config(&["--name=x", "--initial-cluster=x=http://other:2380"]);
        assert!(matches!(
            Membership::from_config(&c),
            Err(ConfigError::PeerUrlsMismatch { .. })
        ));
        let c = config(&["--initial-cluster=bogus"]);
        assert!(matches!(
            Membership::from_config(&c),
            Err(ConfigError::InitialCluster(_))
        ));
    }
}
