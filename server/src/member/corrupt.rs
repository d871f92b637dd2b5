//! Corruption checks: members compare their HashKV (`api/hash_kv.rs`), as etcd 3.4/3.5's
//! `etcdserver/corrupt.go` does.
//!
//! * **Initial check** (`--experimental-initial-corrupt-check`): a member restarting on an
//!   existing data folder, before its node starts and before it serves peers or clients,
//!   hashes its store at its current revision R and asks every other member for HashKV
//!   at R. A peer with the same compacted revision and another hash is a mismatch (logged
//!   with the peer's ID): the member refuses to start with etcd's error
//!   "`<id>` found data inconsistency with peers". Peers that cannot be compared are
//!   skipped as etcd skips them: behind R (future revision), compacted past R (this member
//!   is behind), another compacted revision, unreachable.
//! * **Periodic check** (`--experimental-corrupt-check-time`, 0: off): every interval the
//!   leader hashes its store (H1 at R1, compacted C1), asks every other member for HashKV
//!   at R1, waits for a linearizable read barrier, hashes again (H2 at R2, C2) and judges
//!   by etcd's rules ([`periodic_suspects`]):
//!   - H2 ≠ H1 with R2 = R1 and C2 = C1: the leader's own store changed under it;
//!   - a member whose current revision is above R2, or whose compacted revision is above
//!     C2 (after the barrier, no member can have applied more than the leader);
//!   - a member compacted at C1 whose hash at R1 is not H1;
//!   - and one rule of etcd 3.6's: when a majority of the cluster (followers agreeing
//!     among themselves) holds one hash other than H1, the leader is the member that
//!     differs and is named first (etcd 3.4/3.5 would name the first follower).
//!
//!   The first member found raises the CORRUPT alarm through Raft (`ACTIVATE` with its
//!   member ID), so every member lists it; every finding is logged with the member's ID.
//!   What the alarm does (writes refused with "etcdserver: corrupt cluster") is the
//!   store's (`cairn_storage::alarm`); `etcdctl alarm disarm` clears it.
//!
//! Peers are asked on their peer URLs (`cairnpb.PeerHash`, with the peer TLS
//! configuration), each URL in turn until one answers, within etcd's request timeout.
//! The judging functions are pure, so the rules are tested without a cluster; the periodic
//! loop sleeps on tokio's clock (which tests can pause and advance).

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::peer_hash_client::PeerHashClient;
use cairn_proto::cairnpb::MemberTable;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvRequest, HashKvResponse};
use cairn_raft_node::transport::{peer_endpoint, PeerTls};
use cairn_storage::{Error as StorageError, Store};
use tokio::sync::watch;
use tonic::{Code, Status};
use tracing::{info, warn};

use crate::api::hash_kv::hash_kv;
use crate::error::{RequestError, ServerError};
use crate::member::proposer::Proposer;
use crate::member::raft_proposer::RaftProposer;
use crate::member::table::Members;

/// A store's hash: HashKV at `revision` with the store compacted at `compact`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalHash {
    /// The hash.
    pub hash: u32,
    /// The revision hashed (the store's current one).
    pub revision: i64,
    /// The store's compacted revision.
    pub compact: i64,
}

/// Why a peer gave no hash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerHashError {
    /// The peer has not reached the revision asked (it is behind).
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// The peer compacted past the revision asked (the asking member is behind).
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// Unreachable, timed out, or another error.
    #[error("{0}")]
    Failed(String),
}

/// One peer's answer to a HashKV request.
#[derive(Clone, Debug)]
pub struct PeerAnswer {
    /// The peer's member ID.
    pub id: u64,
    /// The peer URLs asked.
    pub urls: Vec<String>,
    /// Its HashKV, or why there is none.
    pub result: Result<HashKvResponse, PeerHashError>,
}

/// Why one periodic check could not be made (logged; the next interval tries again).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Hashing the local store failed.
    #[error("hashing the local store: {0}")]
    Hash(#[from] StorageError),
    /// The hashing task failed.
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The read barrier or the alarm's proposal failed.
    #[error(transparent)]
    Request(#[from] RequestError),
}

fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// HashKV of the store at its current revision, on a blocking thread.
pub async fn local_hash(store: Arc<Store>) -> Result<LocalHash, CheckError> {
    let (hash, compact, revision) = tokio::task::spawn_blocking(move || hash_kv(&store, 0)).await??;
    Ok(LocalHash { hash, revision, compact })
}

/// Asks peers for their HashKV over their peer URLs.
pub struct PeerHashes {
    me: u64,
    tls: Option<PeerTls>,
    timeout: Duration,
}

impl PeerHashes {
    /// Asks as member `me`, with the peer TLS configuration, each call within `timeout`.
    pub fn new(me: u64, tls: Option<PeerTls>, timeout: Duration) -> Self {
        PeerHashes { me, tls, timeout }
    }

    /// The HashKV at `revision` of every member of `table` but this one, asked at once.
    pub async fn fetch(&self, table: &MemberTable, revision: i64) -> Vec<PeerAnswer> {
        let peers = table.members.iter().filter(|m| m.id != self.me && !m.peer_urls.is_empty() && !table.removed.contains(&m.id));
        futures::future::join_all(peers.map(|m| async move {
            PeerAnswer { id: m.id, urls: m.peer_urls.clone(), result: self.fetch_one(&m.peer_urls, revision).await }
        }))
        .await
    }

    async fn fetch_one(&self, urls: &[String], revision: i64) -> Result<HashKvResponse, PeerHashError> {
        let mut last = PeerHashError::Failed("no peer URL".to_owned());
        for url in urls {
            match self.ask(url, revision).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    warn!(
                        local_member_id = %hex(self.me),
                        requested_revision = revision,
                        remote_peer_endpoint = %url,
                        error = %e,
                        "failed hash kv request"
                    );
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn ask(&self, url: &str, revision: i64) -> Result<HashKvResponse, PeerHashError> {
        let failed = |e: &dyn std::fmt::Display| PeerHashError::Failed(e.to_string());
        let (endpoint, dial) = peer_endpoint(url, self.tls.as_ref()).map_err(|e| failed(&e))?;
        let endpoint = endpoint.connect_timeout(self.timeout).timeout(self.timeout);
        let channel = dial.connect_lazy(endpoint).map_err(|e| failed(&e))?;
        let mut client = PeerHashClient::new(channel);
        match tokio::time::timeout(self.timeout, client.hash_kv(HashKvRequest { revision })).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(PeerHashError::Failed(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// The peer's error as the checks tell them apart (etcd matches the messages too).
fn classify(status: &Status) -> PeerHashError {
    match status.code() {
        Code::OutOfRange if status.message().contains("compacted") => PeerHashError::Compacted,
        Code::OutOfRange if status.message().contains("future revision") => PeerHashError::FutureRev,
        code => PeerHashError::Failed(format!("{code:?}: {}", status.message())),
    }
}

fn revision_of(r: &HashKvResponse) -> i64 {
    r.header.as_ref().map_or(0, |h| h.revision)
}

/// The initial check's verdict: the peers whose hash differs at the same compacted
/// revision (each logged, as etcd logs them); the other answers are logged and skipped.
pub fn initial_mismatches(me: u64, local: LocalHash, answers: &[PeerAnswer]) -> Vec<u64> {
    let mut mismatched = Vec::new();
    for a in answers {
        let (msg, resp, error) = match &a.result {
            Ok(r) if r.hash == local.hash => continue,
            Ok(r) if r.compact_revision == local.compact => {
                mismatched.push(a.id);
                ("found different hash values from remote peer", Some(r), None)
            }
            Ok(r) => ("found different compact revision values from remote peer", Some(r), None),
            Err(e @ PeerHashError::FutureRev) => ("cannot fetch hash from slow remote peer", None, Some(e)),
            Err(e @ PeerHashError::Compacted) => ("cannot fetch hash from remote peer; local member is behind", None, Some(e)),
            // already logged as "failed hash kv request"
            Err(PeerHashError::Failed(_)) => continue,
        };
        warn!(
            local_member_id = %hex(me),
            local_member_revision = local.revision,
            local_member_compact_revision = local.compact,
            local_member_hash = local.hash,
            remote_peer_id = %hex(a.id),
            remote_peer_endpoints = ?a.urls,
            remote_peer_revision = resp.map(revision_of),
            remote_peer_compact_revision = resp.map(|r| r.compact_revision),
            remote_peer_hash = resp.map(|r| r.hash),
            error = error.map(tracing::field::display),
            "{msg}"
        );
    }
    mismatched
}

/// The initial check (module docs): `Ok` when no peer at this member's revision and
/// compacted revision reports another hash.
pub async fn initial_check(me: u64, store: Arc<Store>, table: &MemberTable, peers: &PeerHashes) -> Result<(), ServerError> {
    info!(local_member_id = %hex(me), timeout = ?peers.timeout, "starting initial corruption check");
    let local = local_hash(store).await.map_err(|e| ServerError::LocalHash { member: me, reason: e.to_string() })?;
    let answers = peers.fetch(table, local.revision).await;
    if !initial_mismatches(me, local, &answers).is_empty() {
        return Err(ServerError::DataInconsistency(me));
    }
    info!(local_member_id = %hex(me), "initial corruption checking passed; no corruption");
    Ok(())
}

/// The periodic check's verdict (module docs), in the order found, each finding logged:
/// the leader `me` of a `cluster_size`-member cluster hashed `first` before asking the
/// peers and `second` after the barrier. The first one is the member the alarm names.
pub fn periodic_suspects(me: u64, cluster_size: usize, first: LocalHash, second: LocalHash, answers: &[PeerAnswer]) -> Vec<u64> {
    let mut found = Vec::new();
    if second.hash != first.hash && second.revision == first.revision && second.compact == first.compact {
        warn!(
            revision_1 = first.revision,
            compact_revision_1 = first.compact,
            hash_1 = first.hash,
            revision_2 = second.revision,
            compact_revision_2 = second.compact,
            hash_2 = second.hash,
            "found hash mismatch"
        );
        found.push(me);
    }
    for a in answers {
        let Ok(r) = &a.result else { continue };
        let id = hex(a.id);
        if revision_of(r) > second.revision {
            warn!(
                leader_revision = second.revision,
                follower_revision = revision_of(r),
                follower_peer_id = %id,
                "revision from follower must be less than or equal to leader's"
            );
            found.push(a.id);
        }
        if r.compact_revision > second.compact {
            warn!(
                leader_compact_revision = second.compact,
                follower_compact_revision = r.compact_revision,
                follower_peer_id = %id,
                "compact revision from follower must be less than or equal to leader's"
            );
            found.push(a.id);
        }
        if r.compact_revision == first.compact && r.hash != first.hash {
            warn!(
                leader_compact_revision = first.compact,
                leader_hash = first.hash,
                follower_compact_revision = r.compact_revision,
                follower_hash = r.hash,
                follower_peer_id = %id,
                "same compact revision then hashes must match"
            );
            found.push(a.id);
        }
    }
    if leader_outvoted(me, cluster_size, first, answers) && found.first() != Some(&me) {
        found.insert(0, me);
    }
    found
}

/// True when a majority of the cluster, the leader not counted, agrees on one hash other
/// than the leader's at its revision and compacted revision: then the leader is the member
/// that differs (etcd 3.4/3.5 name the first follower instead; etcd 3.6 votes like this).
fn leader_outvoted(me: u64, cluster_size: usize, first: LocalHash, answers: &[PeerAnswer]) -> bool {
    let differing: Vec<u32> = answers
        .iter()
        .filter_map(|a| a.result.as_ref().ok())
        .filter(|r| r.compact_revision == first.compact && r.hash != first.hash)
        .map(|r| r.hash)
        .collect();
    let Some((hash, agreeing)) = differing.iter().map(|h| (*h, differing.iter().filter(|x| *x == h).count())).max_by_key(|&(_, n)| n) else {
        return false;
    };
    let outvoted = agreeing * 2 > cluster_size;
    if outvoted {
        warn!(
            local_member_id = %hex(me),
            leader_hash = first.hash,
            majority_hash = hash,
            agreeing_members = agreeing,
            cluster_size,
            "a majority of members agree on another hash: the leader differs"
        );
    }
    outvoted
}

/// The periodic check (module docs), run by every member, acting while it leads.
pub struct CorruptionMonitor {
    me: u64,
    store: Arc<Store>,
    members: Arc<Members>,
    proposer: Arc<RaftProposer>,
    peers: PeerHashes,
    interval: Duration,
}

impl CorruptionMonitor {
    /// A monitor checking every `interval` (non-zero).
    pub fn new(me: u64, store: Arc<Store>, members: Arc<Members>, proposer: Arc<RaftProposer>, peers: PeerHashes, interval: Duration) -> Self {
        CorruptionMonitor { me, store, members, proposer, peers, interval }
    }

    /// Checks every interval while this member leads, until `stop` changes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        info!(local_member_id = %hex(self.me), interval = ?self.interval, "enabled corruption checking");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => return,
            }
            if self.proposer.handle().leader().id != self.me {
                continue;
            }
            if let Err(e) = self.check().await {
                warn!(error = %e, "failed to check hash KV");
            }
        }
    }

    async fn check(&self) -> Result<(), CheckError> {
        let first = local_hash(self.store.clone()).await?;
        let table = self.members.table();
        let answers = self.peers.fetch(&table, first.revision).await;
        self.proposer.read_barrier().await?;
        let second = local_hash(self.store.clone()).await?;
        if let Some(&id) = periodic_suspects(self.me, table.members.len(), first, second, &answers).first() {
            let alarm = AlarmRequest { action: AlarmAction::Activate as i32, member_id: id, alarm: AlarmType::Corrupt as i32 };
            self.proposer.propose(Request::Alarm(alarm)).await?;
        }
        let checked = answers.iter().filter(|a| a.result.is_ok()).count();
        info!(number_of_peers_checked = checked, "finished peer corruption check");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::ResponseHeader;

    const ME: u64 = 1;

    fn local(hash: u32, revision: i64, compact: i64) -> LocalHash {
        LocalHash { hash, revision, compact }
    }

    fn answer(id: u64, hash: u32, revision: i64, compact: i64) -> PeerAnswer {
        let header = Some(ResponseHeader { member_id: id, revision, ..Default::default() });
        PeerAnswer { id, urls: vec![format!("http://m{id}")], result: Ok(HashKvResponse { header, hash, compact_revision: compact, hash_revision: 0 }) }
    }

    fn failed(id: u64, e: PeerHashError) -> PeerAnswer {
        PeerAnswer { id, urls: Vec::new(), result: Err(e) }
    }

    #[test]
    fn initial_check_refuses_only_a_different_hash_at_the_same_compaction() {
        let me = local(7, 10, 2);
        let peers = [
            answer(2, 7, 12, 2),                  // same hash: fine (a peer ahead answers at 10)
            answer(3, 9, 10, 5),                  // other compaction: skipped
            failed(4, PeerHashError::FutureRev),  // behind: skipped
            failed(5, PeerHashError::Compacted),  // compacted past 10: skipped
            failed(6, PeerHashError::Failed("connection refused".into())),
        ];
        assert!(initial_mismatches(ME, me, &peers).is_empty());
        let with_bad = [answer(2, 7, 10, 2), answer(3, 8, 10, 2), answer(4, 6, 11, 2)];
        assert_eq!(initial_mismatches(ME, me, &with_bad), vec![3, 4]);
    }

    #[test]
    fn periodic_check_follows_etcds_rules() {
        let h = local(7, 10, 2);
        // everyone agrees; a behind or unreachable member is not judged
        let ok = [answer(2, 7, 10, 2), failed(3, PeerHashError::FutureRev), answer(4, 99, 9, 1)];
        assert!(periodic_suspects(ME, 5, h, local(8, 11, 2), &ok).is_empty(), "a member at an older compaction is not compared");
        // a different hash at the same compaction names that member
        assert_eq!(periodic_suspects(ME, 5, h, h, &[answer(2, 7, 10, 2), answer(3, 5, 10, 2)]), vec![3]);
        // ahead of the leader after the barrier: revision or compaction
        assert_eq!(periodic_suspects(ME, 5, h, local(8, 11, 2), &[answer(2, 7, 12, 2)]), vec![2]);
        assert_eq!(periodic_suspects(ME, 5, h, h, &[answer(2, 3, 10, 4)]), vec![2]);
        // the leader's own hash moved at the same revision: the leader first
        assert_eq!(periodic_suspects(ME, 5, h, local(8, 10, 2), &[answer(2, 8, 10, 2)]), vec![ME, 2]);
        // a write in between (new revision) is not a mismatch
        assert!(periodic_suspects(ME, 5, h, local(8, 11, 2), &[]).is_empty());
    }

    #[test]
    fn a_leader_outvoted_by_a_majority_is_the_one_named() {
        let h = local(7, 10, 2);
        let two_agree = [answer(2, 5, 10, 2), answer(3, 5, 10, 2)];
        // three members: both followers agree against the leader
        assert_eq!(periodic_suspects(ME, 3, h, h, &two_agree), vec![ME, 2, 3]);
        // five members: two of five are no majority, etcd's rule names a follower
        assert_eq!(periodic_suspects(ME, 5, h, h, &two_agree), vec![2, 3]);
        let three_agree = [answer(2, 5, 10, 2), answer(3, 5, 10, 2), answer(4, 5, 10, 2), answer(5, 7, 10, 2)];
        assert_eq!(periodic_suspects(ME, 5, h, h, &three_agree)[0], ME);
        // followers that differ from the leader and from each other outvote no one
        assert_eq!(periodic_suspects(ME, 3, h, h, &[answer(2, 5, 10, 2), answer(3, 6, 10, 2)]), vec![2, 3]);
        // one follower (the other down) cannot outvote the leader
        assert_eq!(periodic_suspects(ME, 3, h, h, &[answer(2, 5, 10, 2), failed(3, PeerHashError::FutureRev)]), vec![2]);
    }

    #[test]
    fn peer_errors_are_told_apart_by_etcds_messages() {
        let compacted = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        let future = Status::out_of_range("etcdserver: mvcc: required revision is a future revision");
        assert_eq!(classify(&compacted), PeerHashError::Compacted);
        assert_eq!(classify(&future), PeerHashError::FutureRev);
        assert!(matches!(classify(&Status::unavailable("down")), PeerHashError::Failed(_)));
    }

    #[tokio::test]
    async fn an_unreachable_peer_is_skipped() {
        let table = MemberTable {
            cluster_id: 9,
            members: vec![
                cairn_proto::cairnpb::MemberRecord { id: ME, peer_urls: vec!["http://127.0.0.1:1".into()], ..Default::default() },
                cairn_proto::cairnpb::MemberRecord { id: 2, peer_urls: vec!["http://127.0.0.1:1".into()], ..Default::default() },
                cairn_proto::cairnpb::MemberRecord { id: 3, peer_urls: vec!["http://127.0.0.1:1".into()], ..Default::default() },
            ],
            removed: vec![3],
        };
        let answers = PeerHashes::new(ME, None, Duration::from_secs(2)).fetch(&table, 5).await;
        assert_eq!(answers.len(), 1, "neither this member nor a removed one is asked");
        assert_eq!(answers[0].id, 2);
        assert!(matches!(answers[0].result, Err(PeerHashError::Failed(_))));
        assert!(initial_mismatches(ME, local(1, 5, 0), &answers).is_empty());
    }
}
