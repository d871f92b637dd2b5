//! A deterministic in-process cluster over `SimNet`, and a small key-value state machine
//! that records every apply so tests can check order and that nothing is applied twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::PutRequest;
use cairn_raft_node::raft::eraftpb::ConfState;
use cairn_raft_node::raft::StateRole;
use cairn_raft_node::sim::{SimNet, SimTransport};
use cairn_raft_node::{AppliedConfChange, NodeConfig, NodeHandle, ProposeResult, RaftNode, SnapshotSource, StateMachine, StateMachineError};
use tokio::sync::oneshot;

/// The key-value state. `durable` is what survives a crash (set by `persist`).
#[derive(Clone, Debug, Default)]
pub struct KvState {
    pub applied: u64,
    pub data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Every normal entry applied, in order: (index, key).
    pub applies: Vec<(u64, Vec<u8>)>,
    /// Snapshot indexes restored.
    pub restores: Vec<u64>,
    pub conf: ConfState,
    pub durable: Option<Box<KvState>>,
}

impl KvState {
    /// What a crash leaves: the last persisted state.
    pub fn after_crash(&self) -> KvState {
        let mut s = self.durable.as_deref().cloned().unwrap_or_default();
        s.durable = Some(Box::new(s.clone()));
        s
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KvError(String);

/// The state machine over a shared `KvState` (the test keeps a clone to look inside).
#[derive(Clone, Default)]
pub struct Kv(pub Arc<Mutex<KvState>>);

impl Kv {
    pub fn lock(&self) -> MutexGuard<'_, KvState> {
        self.0.lock().unwrap()
    }
}

fn encode(s: &KvState) -> Vec<u8> {
    let mut out = s.applied.to_le_bytes().to_vec();
    for (k, v) in &s.data {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

type Snapshot = (u64, BTreeMap<Vec<u8>, Vec<u8>>);

fn decode(mut b: &[u8]) -> Result<Snapshot, KvError> {
    let bad = || KvError("short snapshot".into());
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (h, t) = (b.get(..n)?, b.get(n..)?);
        *b = t;
        Some(h)
    }
    let applied = u64::from_le_bytes(take(&mut b, 8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let mut data = BTreeMap::new();
    while !b.is_empty() {
        let mut field = || -> Option<Vec<u8>> {
            let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
            Some(take(&mut b, n)?.to_vec())
        };
        let k = field().ok_or_else(bad)?;
        let v = field().ok_or_else(bad)?;
        data.insert(k, v);
    }
    Ok((applied, data))
}

struct KvSource(Arc<Mutex<KvState>>);

impl SnapshotSource for KvSource {
    fn snapshot(&self) -> Result<(u64, Vec<u8>), StateMachineError> {
        let s = self.0.lock().map_err(|_| StateMachineError::new(KvError("poisoned".into())))?;
        Ok((s.applied, encode(&s)))
    }
}

impl StateMachine for Kv {
    type Output = u64;

    fn applied_index(&self) -> u64 {
        self.lock().applied
    }

    fn apply(&mut self, index: u64, req: &InternalRequest) -> Result<u64, StateMachineError> {
        let mut s = self.lock();
        assert!(index > s.applied, "entry {index} applied twice (applied {})", s.applied);
        let Some(Request::Put(p)) = &req.request else {
            return Err(StateMachineError::new(KvError(format!("unexpected request at {index}"))));
        };
        s.data.insert(p.key.clone(), p.value.clone());
        s.applies.push((index, p.key.clone()));
        s.applied = index;
        Ok(index)
    }

    fn apply_conf_change(&mut self, index: u64, conf: &ConfState, _change: &AppliedConfChange) -> Result<(), StateMachineError> {
        let mut s = self.lock();
        assert!(index > s.applied, "conf change {index} applied twice");
        s.conf = conf.clone();
        s.applied = index;
        Ok(())
    }

    fn persist(&mut self) -> Result<u64, StateMachineError> {
        let mut s = self.lock();
        s.durable = None;
        let copy = Box::new(s.clone());
        s.durable = Some(copy);
        Ok(s.applied)
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateMachineError> {
        let (applied, map) = decode(data).map_err(StateMachineError::new)?;
        assert_eq!(applied, index, "snapshot data and metadata disagree");
        let mut s = self.lock();
        s.data = map;
        s.applied = index;
        s.restores.push(index);
        Ok(())
    }

    fn snapshot_source(&self) -> Box<dyn SnapshotSource> {
        Box::new(KvSource(self.0.clone()))
    }
}

pub fn put_request(key: &str, value: &str) -> InternalRequest {
    InternalRequest {
        id: 0,
        request: Some(Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })),
        auth: None,
    }
}

pub type Node = RaftNode<Kv, SimTransport>;

/// A cluster of `RaftNode`s on one `SimNet`; every step is driven by the test.
pub struct Cluster {
    pub net: SimNet,
    pub nodes: BTreeMap<u64, Node>,
    pub kvs: BTreeMap<u64, Kv>,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    pub snapshot_count: u64,
    voters: Vec<u64>,
}

impl Cluster {
    /// Founding members `1..=n`.
    pub fn new(n: u64, seed: u64) -> Cluster {
        Cluster::with_snapshot_count(n, seed, 1_000_000)
    }

    pub fn with_snapshot_count(n: u64, seed: u64, snapshot_count: u64) -> Cluster {
        let mut c = Cluster {
            net: SimNet::new(seed),
            nodes: BTreeMap::new(),
            kvs: BTreeMap::new(),
            dirs: BTreeMap::new(),
            snapshot_count,
            voters: (1..=n).collect(),
        };
        for id in 1..=n {
            c.start(id);
        }
        c
    }

    pub fn config(&self, id: u64) -> NodeConfig {
        let mut cfg = NodeConfig::new(id);
        // distinct, fixed election timeouts: deterministic elections
        cfg.min_election_tick = 10 + 3 * (id as usize % 7);
        cfg.max_election_tick = cfg.min_election_tick + 1;
        cfg.request_timeout_ticks = 60;
        cfg.snapshot_count = self.snapshot_count;
        cfg.catchup_entries = 0;
        cfg.wal.segment_size = 64 << 10;
        cfg.request_id_clock_ms = self.dirs.len() as u64 * 1000 + id;
        cfg
    }

    /// Starts (or restarts, from its directory) member `id`; a member not founding the
    /// cluster starts empty and waits for the leader.
    pub fn start(&mut self, id: u64) {
        let dir = self.dirs.entry(id).or_insert_with(|| tempfile::tempdir().unwrap()).path().to_path_buf();
        let kv = self.kvs.entry(id).or_default().clone();
        let bootstrap = self.voters.contains(&id).then_some(self.voters.as_slice());
        let node = RaftNode::open(self.config(id), &dir, kv, self.net.transport(), bootstrap).unwrap();
        self.net.register(id, node.mailbox());
        self.nodes.insert(id, node);
    }

    /// Kills member `id`: its node is dropped and its state machine falls back to what it
    /// had persisted; its WAL directory stays.
    pub fn crash(&mut self, id: u64) {
        self.nodes.remove(&id);
        self.net.unregister(id);
        let kv = &self.kvs[&id];
        let after = kv.lock().after_crash();
        *kv.lock() = after;
    }

    pub fn handle(&self, id: u64) -> NodeHandle<u64> {
        self.nodes[&id].handle()
    }

    pub fn kv(&self, id: u64) -> MutexGuard<'_, KvState> {
        self.kvs[&id].lock()
    }

    /// Polls every node and routes until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for node in self.nodes.values_mut() {
                moved |= node.poll().unwrap();
            }
            moved |= self.net.route() > 0;
            if !moved {
                return;
            }
        }
        panic!("the cluster does not settle");
    }

    /// One tick everywhere, then settle.
    pub fn tick(&mut self) {
        self.net.advance();
        for node in self.nodes.values_mut() {
            node.tick();
        }
        self.settle();
    }

    /// Ticks until `pred` holds; false if it did not within `max` ticks.
    pub fn run_until(&mut self, max: u64, mut pred: impl FnMut(&Cluster) -> bool) -> bool {
        self.settle();
        for _ in 0..max {
            if pred(self) {
                return true;
            }
            self.tick();
        }
        pred(self)
    }

    /// The leader of the highest term among running nodes, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .map(|n| n.status())
            .filter(|s| s.role == StateRole::Leader)
            .max_by_key(|s| s.leader.term)
            .map(|s| s.id)
    }

    /// Ticks until a leader is elected and known to every running node.
    pub fn elect(&mut self) -> u64 {
        assert!(
            self.run_until(200, |c| {
                c.leader().is_some_and(|l| c.nodes.values().all(|n| n.status().leader.id == l))
            }),
            "no leader elected"
        );
        self.leader().unwrap()
    }

    /// Ticks until the receiver has an answer.
    pub fn wait<T>(&mut self, rx: &mut oneshot::Receiver<T>, max: u64) -> Option<T> {
        self.settle();
        for _ in 0..=max {
            match rx.try_recv() {
                Ok(v) => return Some(v),
                Err(oneshot::error::TryRecvError::Closed) => panic!("the node dropped the request"),
                Err(oneshot::error::TryRecvError::Empty) => self.tick(),
            }
        }
        None
    }

    /// Proposes a put through `via`.
    pub fn put(&mut self, via: u64, key: &str, value: &str) -> oneshot::Receiver<ProposeResult<u64>> {
        let rx = self.handle(via).propose(put_request(key, value));
        self.settle();
        rx
    }

    /// Puts through `via` and waits for the answer: the applied index.
    pub fn put_ok(&mut self, via: u64, key: &str, value: &str) -> u64 {
        let mut rx = self.put(via, key, value);
        self.wait(&mut rx, 100).expect("no answer").expect("put failed")
    }

    /// WAL segment files of member `id`.
    pub fn wal_segments(&self, id: u64) -> usize {
        let dir = self.dirs[&id].path().join("wal");
        std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".wal")).count()
    }

    pub fn applied(&self, id: u64) -> u64 {
        self.nodes[&id].status().applied
    }

    /// Ticks until every running node has applied as far as `id`.
    pub fn converge_on(&mut self, id: u64) -> bool {
        self.run_until(300, |c| {
            let target = c.applied(id);
            c.nodes.keys().all(|&n| c.applied(n) == target)
        })
    }
}

impl Cluster {
    /// Ticks until `ids[0]` knows a leader that really leads; returns it.
    pub fn elect_among(&mut self, ids: &[u64]) -> u64 {
        let probe = ids[0];
        assert!(
            self.run_until(200, |c| {
                let l = c.nodes[&probe].status().leader.id;
                l != 0 && c.nodes.get(&l).is_some_and(|n| n.status().role == StateRole::Leader)
            }),
            "no leader seen by {probe}"
        );
        self.nodes[&probe].status().leader.id
    }
}
