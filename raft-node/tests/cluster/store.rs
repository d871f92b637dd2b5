//! The real `cairn_storage::Store` as the state machine of three members.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_raft_node::raft::eraftpb::ConfState;
use cairn_raft_node::sim::{SimNet, SimTransport};
use cairn_raft_node::{AppliedConfChange, NodeConfig, RaftNode, SnapshotSource, StateMachine, StateMachineError};
use cairn_storage::{ApplyResponse, Store, StoreConfig};

use crate::harness::put_request;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unsupported(&'static str);

struct StoreMachine(Arc<Store>);

struct NoSnapshots;

impl SnapshotSource for NoSnapshots {
    fn snapshot(&self) -> Result<(u64, Vec<u8>), StateMachineError> {
        Err(StateMachineError::new(Unsupported("store snapshots are streamed separately (not in this test)")))
    }
}

impl StateMachine for StoreMachine {
    /// The store's answer, or its deterministic refusal of the request.
    type Output = Result<ApplyResponse, String>;

    fn applied_index(&self) -> u64 {
        self.0.applied_index()
    }

    fn apply(&mut self, index: u64, req: &InternalRequest) -> Result<Self::Output, StateMachineError> {
        match self.0.apply(index, req) {
            Ok(r) => Ok(Ok(r)),
            Err(e) if e.is_fatal() => Err(StateMachineError::new(e)),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    fn apply_conf_change(&mut self, _index: u64, _conf: &ConfState, _change: &AppliedConfChange) -> Result<(), StateMachineError> {
        // membership is not kept in the store yet; the next data entry moves its index
        Ok(())
    }

    fn publish(&mut self) -> Result<(), StateMachineError> {
        self.0.publish().map(|_| ()).map_err(StateMachineError::new)
    }

    fn persist(&mut self) -> Result<u64, StateMachineError> {
        self.0.sync_backend().map_err(StateMachineError::new)
    }

    fn restore(&mut self, _index: u64, _data: &[u8]) -> Result<(), StateMachineError> {
        Err(StateMachineError::new(Unsupported("store restore is not wired yet")))
    }

    fn snapshot_source(&self) -> Box<dyn SnapshotSource> {
        Box::new(NoSnapshots)
    }
}

#[test]
fn three_stores_replicate_puts() {
    let mut net = SimNet::new(40);
    let mut dirs = Vec::new();
    let mut stores = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        let mut cfg = NodeConfig::new(id);
        cfg.min_election_tick = 10 + 3 * id as usize;
        cfg.max_election_tick = cfg.min_election_tick + 1;
        let node = RaftNode::open(cfg, &dir.path().join("raft"), StoreMachine(store.clone()), net.transport(), Some(&[1, 2, 3]))
            .unwrap();
        net.register(id, node.mailbox());
        nodes.insert(id, node);
        stores.insert(id, store);
        dirs.push(dir);
    }
    let step = |nodes: &mut BTreeMap<u64, RaftNode<StoreMachine, SimTransport>>, net: &mut SimNet, tick: bool| {
        if tick {
            net.advance();
            nodes.values_mut().for_each(|n| n.tick());
        }
        loop {
            let mut moved = net.route() > 0;
            for n in nodes.values_mut() {
                moved |= n.poll().unwrap();
            }
            if !moved {
                break;
            }
        }
    };
    let mut leader = 0;
    for _ in 0..100 {
        step(&mut nodes, &mut net, true);
        leader = nodes[&1].status().leader.id;
        if leader != 0 {
            break;
        }
    }
    assert_ne!(leader, 0, "no leader");
    // through a follower: forwarded to the leader, answered by id
    let follower = if leader == 1 { 2 } else { 1 };
    let mut answers = Vec::new();
    for i in 0..10 {
        answers.push(nodes[&follower].handle().propose(put_request(&format!("key{i}"), &format!("value{i}"))));
    }
    for _ in 0..20 {
        step(&mut nodes, &mut net, true);
    }
    let mut revisions = Vec::new();
    for mut rx in answers {
        match rx.try_recv().expect("answered").expect("committed") {
            Ok(ApplyResponse::Put(p)) => revisions.push(p.header.unwrap_or_default().revision),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // revisions 2..=11 in proposal order: the answers match their requests
    assert_eq!(revisions, (2..=11).collect::<Vec<i64>>());
    for (id, store) in &stores {
        for i in 0..10 {
            let r = store.range(&RangeRequest { key: format!("key{i}").into(), ..Default::default() }).unwrap();
            assert_eq!(r.kvs.len(), 1, "node {id} key{i}");
            assert_eq!(r.kvs[0].value, format!("value{i}").into_bytes());
        }
        assert_eq!(store.revision(), 11, "node {id}");
        assert_eq!(store.applied_index(), stores[&leader].applied_index());
    }
}
