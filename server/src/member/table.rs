//! The replicated member table of a Raft cluster: who the members are, their URLs, which
//! are learners, and which IDs were removed.
//!
//! The table is state-machine state: it changes only when a committed entry is applied
//! (a membership conf change, or a `MemberAttrRequest`), every member applies the same
//! changes in the same order, and the store keeps its encoding (`MemberTable`, prost) with
//! the applied index, so snapshots carry it and a restart finds it. Until the first change
//! is applied, a founding member uses the table `--initial-cluster` describes (every founder
//! derives the same one).
//!
//! Readers (MemberList, the transport's address book, Status) take a copy; the table is
//! small (one record per member).

use cairn_proto::cairnpb::{MemberAttrRequest, MemberRecord, MemberTable};
use cairn_proto::etcdserverpb::Member;
use cairn_raft_node::ConfChangeRequest;
use parking_lot::RwLock;

use crate::member::identity::InitialMember;

/// The member table (see the module docs).
#[derive(Debug, Default)]
pub struct Members {
    /// Lock: guards the table only; a leaf lock, held for copies and single updates.
    table: RwLock<MemberTable>,
}

impl Members {
    /// The table of a new cluster from `--initial-cluster`.
    pub fn initial(cluster_id: u64, members: &[InitialMember]) -> MemberTable {
        let mut table = MemberTable { cluster_id, members: Vec::new(), removed: Vec::new() };
        for m in members {
            table.members.push(MemberRecord {
                id: m.id,
                name: String::new(),
                peer_urls: m.peer_urls.clone(),
                client_urls: Vec::new(),
                is_learner: false,
            });
        }
        table.members.sort_by_key(|m| m.id);
        table
    }

    /// A table holding `table`.
    pub fn new(table: MemberTable) -> Members {
        Members { table: RwLock::new(table) }
    }

    /// A copy of the table.
    pub fn table(&self) -> MemberTable {
        self.table.read().clone()
    }

    /// Replaces the table (a snapshot was installed).
    pub fn replace(&self, table: MemberTable) {
        *self.table.write() = table;
    }

    /// The cluster ID.
    pub fn cluster_id(&self) -> u64 {
        self.table.read().cluster_id
    }

    /// One member.
    pub fn get(&self, id: u64) -> Option<MemberRecord> {
        self.table.read().members.iter().find(|m| m.id == id).cloned()
    }

    /// Whether `id` was removed from the cluster.
    pub fn was_removed(&self, id: u64) -> bool {
        self.table.read().removed.contains(&id)
    }

    /// Every member as MemberList shows them, ordered by ID.
    pub fn list(&self) -> Vec<Member> {
        self.table.read().members.iter().map(to_member).collect()
    }

    /// The member holding any of `urls` as a peer URL.
    pub fn with_peer_url(&self, urls: &[String]) -> Option<MemberRecord> {
        self.table.read().members.iter().find(|m| m.peer_urls.iter().any(|u| urls.contains(u))).cloned()
    }

    /// Applies a committed membership change; returns the new encoded table.
    pub fn apply_conf_change(&self, change: ConfChangeRequest, added: Option<MemberRecord>) -> MemberTable {
        let mut t = self.table.write();
        match change {
            ConfChangeRequest::AddVoter(id) | ConfChangeRequest::Promote(id) | ConfChangeRequest::AddLearner(id) => {
                let learner = matches!(change, ConfChangeRequest::AddLearner(_));
                match t.members.iter_mut().find(|m| m.id == id) {
                    // promotion (or a repeated add): keep what the member published
                    Some(m) => m.is_learner = learner,
                    None => {
                        let mut rec = added.unwrap_or_else(|| MemberRecord { id, ..Default::default() });
                        rec.id = id;
                        rec.is_learner = learner;
                        t.members.push(rec);
                        t.members.sort_by_key(|m| m.id);
                    }
                }
            }
            ConfChangeRequest::Remove(id) => {
                t.members.retain(|m| m.id != id);
                if !t.removed.contains(&id) {
                    t.removed.push(id);
                }
            }
        }
        t.clone()
    }

    /// Applies a member's attribute update; `None` when the member is unknown (removed
    /// meanwhile: the update is ignored, deterministically on every member).
    pub fn apply_attr(&self, attr: &MemberAttrRequest) -> Option<MemberTable> {
        let mut t = self.table.write();
        let m = t.members.iter_mut().find(|m| m.id == attr.id)?;
        if !attr.name.is_empty() {
            m.name = attr.name.clone();
        }
        if !attr.client_urls.is_empty() {
            m.client_urls = attr.client_urls.clone();
        }
        if !attr.peer_urls.is_empty() {
            m.peer_urls = attr.peer_urls.clone();
        }
        Some(t.clone())
    }
}

/// A member record as the etcd API shows it.
pub fn to_member(m: &MemberRecord) -> Member {
    Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial() -> Members {
        let ms = [
            InitialMember { name: "a".into(), peer_urls: vec!["http://a:2380".into()], id: 30 },
            InitialMember { name: "b".into(), peer_urls: vec!["http://b:2380".into()], id: 10 },
        ];
        Members::new(Members::initial(7, &ms))
    }

    #[test]
    fn initial_table_is_sorted_and_nameless_until_published() {
        let m = initial();
        let ids: Vec<u64> = m.list().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![10, 30]);
        assert!(m.list().iter().all(|m| m.name.is_empty() && m.client_ur_ls.is_empty()));
        let t = m.apply_attr(&MemberAttrRequest { id: 30, name: "a".into(), client_urls: vec!["http://a:2379".into()], peer_urls: vec![] });
        assert_eq!(t.unwrap().members[1].name, "a");
        assert_eq!(m.get(30).unwrap().peer_urls, vec!["http://a:2380"], "empty fields keep the stored value");
        assert!(m.apply_attr(&MemberAttrRequest { id: 99, ..Default::default() }).is_none());
    }

    #[test]
    fn add_promote_remove() {
        let m = initial();
        let rec = MemberRecord { id: 20, peer_urls: vec!["http://c:2380".into()], ..Default::default() };
        m.apply_conf_change(ConfChangeRequest::AddLearner(20), Some(rec));
        assert!(m.get(20).unwrap().is_learner);
        assert_eq!(m.with_peer_url(&["http://c:2380".into()]).map(|r| r.id), Some(20));
        m.apply_conf_change(ConfChangeRequest::AddVoter(20), None);
        let c = m.get(20).unwrap();
        assert!(!c.is_learner);
        assert_eq!(c.peer_urls, vec!["http://c:2380"], "promotion keeps the URLs");
        let t = m.apply_conf_change(ConfChangeRequest::Remove(10), None);
        assert_eq!(t.members.len(), 2);
        assert!(m.was_removed(10) && !m.was_removed(20));
    }
}
