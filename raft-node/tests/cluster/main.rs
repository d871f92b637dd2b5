//! Deterministic whole-cluster tests of the raft driver: in-process nodes on a seeded
//! simulated network, driven tick by tick (no sleeps, no wall clock).

mod harness;
mod membership;
mod nemesis;
mod reads;
mod store;

use cairn_raft_node::raft::StateRole;
use cairn_raft_node::sim::Faults;
use cairn_raft_node::RequestError;
use harness::Cluster;

#[test]
fn three_nodes_elect_one_leader() {
    let mut c = Cluster::new(3, 1);
    let leader = c.elect();
    let term = c.nodes[&leader].status().leader.term;
    for (id, n) in &c.nodes {
        let s = n.status();
        assert_eq!((s.leader.id, s.leader.term), (leader, term), "node {id}");
        assert_eq!(s.role == StateRole::Leader, *id == leader);
    }
    // the founding configuration was applied from the log everywhere
    for id in 1..=3 {
        assert_eq!(c.kv(id).conf.voters, vec![1, 2, 3]);
    }
}

#[test]
fn proposals_apply_in_the_same_order_everywhere_and_answer_by_id() {
    let mut c = Cluster::new(3, 2);
    c.elect();
    // through every member: followers forward to the leader
    let mut waiting = Vec::new();
    for i in 0..30 {
        let via = 1 + i % 3;
        waiting.push((format!("k{i}"), c.put(via, &format!("k{i}"), &format!("v{i}"))));
    }
    let leader = c.leader().unwrap();
    assert!(c.converge_on(leader));
    for (key, mut rx) in waiting {
        let index = c.wait(&mut rx, 50).unwrap().unwrap();
        // the answer is the apply of *this* request's entry
        let kv = c.kv(leader);
        let applied_key = kv.applies.iter().find(|(i, _)| *i == index).map(|(_, k)| k.clone());
        assert_eq!(applied_key, Some(key.into_bytes()));
    }
    let reference = c.kv(1).applies.clone();
    assert_eq!(reference.len(), 30);
    for id in 2..=3 {
        assert_eq!(c.kv(id).applies, reference, "node {id}");
        assert_eq!(c.kv(id).data, c.kv(1).data);
    }
}

#[test]
fn random_drops_delays_and_duplicates_keep_the_replicas_identical() {
    for seed in [3, 4, 5] {
        let mut c = Cluster::new(3, seed);
        c.elect();
        c.net.set_faults(Faults { drop_per_mille: 100, dup_per_mille: 100, min_delay: 0, max_delay: 3 });
        let mut waiting = Vec::new();
        for i in 0..40 {
            waiting.push(c.put(1 + i % 3, &format!("k{i}"), "v"));
            c.tick();
        }
        let mut acked = Vec::new();
        for (i, mut rx) in waiting.into_iter().enumerate() {
            if let Some(Ok(_)) = c.wait(&mut rx, 80) {
                acked.push(format!("k{i}").into_bytes());
            }
        }
        c.net.set_faults(Faults::default());
        let leader = c.elect();
        assert!(c.converge_on(leader), "seed {seed}");
        let reference = c.kv(leader).applies.clone();
        for id in 1..=3 {
            assert_eq!(c.kv(id).applies, reference, "seed {seed} node {id}");
        }
        for key in &acked {
            assert!(c.kv(leader).data.contains_key(key), "seed {seed}: acknowledged {key:?} lost");
        }
        assert!(acked.len() >= 20, "seed {seed}: only {} of 40 acknowledged", acked.len());
    }
}

#[test]
fn partitioned_follower_catches_up_by_log() {
    let mut c = Cluster::new(3, 6);
    let leader = c.elect();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.net.isolate(follower);
    for i in 0..20 {
        c.put_ok(leader, &format!("k{i}"), "v");
    }
    assert!(c.applied(follower) < c.applied(leader));
    c.net.heal();
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(follower).data, c.kv(leader).data);
    assert!(c.kv(follower).restores.is_empty(), "caught up by log, not snapshot");
    // pre-vote: the returning follower did not disturb the leader
    assert_eq!(c.leader(), Some(leader));
}

#[test]
fn isolated_leader_steps_down_and_no_committed_entry_is_lost() {
    let mut c = Cluster::new(3, 7);
    let old = c.elect();
    for i in 0..10 {
        c.put_ok(old, &format!("before{i}"), "v");
    }
    let old_term = c.nodes[&old].status().leader.term;
    c.net.isolate(old);
    // a write on the cut-off leader cannot commit
    let mut lost = c.put(old, "never", "v");
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    assert!(c.run_until(200, |c| {
        let s = c.nodes[&others[0]].status();
        s.leader.id != 0 && s.leader.id != old && s.leader.term > old_term
    }));
    // check-quorum: the old leader notices it lost its quorum
    assert!(c.run_until(100, |c| c.nodes[&old].status().role != StateRole::Leader));
    let new = c.nodes[&others[0]].status().leader.id;
    c.put_ok(new, "after", "v");
    assert_eq!(c.wait(&mut lost, 100), Some(Err(RequestError::Timeout)));
    c.net.heal();
    assert!(c.converge_on(new));
    for id in 1..=3 {
        let kv = c.kv(id);
        for i in 0..10 {
            assert!(kv.data.contains_key(format!("before{i}").as_bytes()), "node {id} lost before{i}");
        }
        assert!(kv.data.contains_key(&b"after"[..]));
        assert!(!kv.data.contains_key(&b"never"[..]), "an uncommitted entry was applied on {id}");
    }
}

#[test]
fn restarted_member_replays_its_wal_and_applies_nothing_twice() {
    let mut c = Cluster::new(3, 8);
    let leader = c.elect();
    for i in 0..10 {
        c.put_ok(leader, &format!("a{i}"), "v");
    }
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let before = c.nodes[&follower].status();
    c.crash(follower);
    // its state machine persisted nothing: everything comes back from its own WAL
    assert_eq!(c.kv(follower).applied, 0);
    for i in 0..10 {
        c.put_ok(leader, &format!("b{i}"), "v");
    }
    c.start(follower);
    // before it hears from anyone: term, vote and log come back from its WAL (the last
    // commit index may lag: it is written without a sync, and learned again from the leader)
    let st = c.nodes[&follower].status();
    assert_eq!((st.leader.term, st.log.1), (before.leader.term, before.log.1));
    assert!(st.commit >= 10, "commit {}", st.commit);
    // cut off, it applies what its own log says is committed
    c.nodes.get_mut(&follower).unwrap().poll().unwrap();
    assert_eq!(c.kv(follower).applied, st.commit, "replayed from the local WAL");
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(follower).data, c.kv(leader).data);
    assert_eq!(c.kv(follower).applies, c.kv(leader).applies);
    assert_eq!(c.leader(), Some(leader), "the restarted member did not disturb the leader");
}

#[test]
fn whole_cluster_restart_keeps_every_acknowledged_write() {
    let mut c = Cluster::with_snapshot_count(3, 9, 7);
    let leader = c.elect();
    for i in 0..25 {
        c.put_ok(leader, &format!("k{i}"), &format!("v{i}"));
    }
    let before = c.kv(leader).data.clone();
    for id in 1..=3 {
        // some state machines persisted part of it (every 7 entries), the rest is in the WAL
        c.crash(id);
    }
    for id in 1..=3 {
        c.start(id);
    }
    let leader = c.elect();
    c.put_ok(leader, "after", "restart");
    assert!(c.converge_on(leader));
    for id in 1..=3 {
        let kv = c.kv(id);
        for (k, v) in &before {
            assert_eq!(kv.data.get(k), Some(v), "node {id}");
        }
        let idx: Vec<u64> = kv.applies.iter().map(|(i, _)| *i).collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "node {id} applied out of order: {idx:?}");
    }
}

#[test]
fn lagging_member_gets_a_snapshot_after_compaction() {
    let mut c = Cluster::with_snapshot_count(3, 10, 10);
    let leader = c.elect();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.net.isolate(follower);
    for i in 0..50 {
        c.put_ok(leader, &format!("k{i}"), &format!("v{i}"));
    }
    let first = c.nodes[&leader].status().log.0;
    assert!(first > c.nodes[&follower].status().log.1 + 1, "the leader compacted past the follower's log");
    c.net.heal();
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(follower).restores.len(), 1, "restored from one snapshot");
    assert_eq!(c.kv(follower).data, c.kv(leader).data);
    assert_eq!(c.nodes[&follower].status().conf.voters, vec![1, 2, 3]);
    // and it goes on by log
    c.put_ok(leader, "later", "v");
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(follower).data.get(&b"later"[..]), Some(&b"v".to_vec()));
    // a crash right after, before its state machine persisted the snapshot: the snapshot
    // comes back from its file, then the entries after it from the WAL
    let snap_index = c.kv(follower).restores[0];
    c.crash(follower);
    assert!(c.kv(follower).applied < snap_index);
    c.net.isolate(follower);
    c.start(follower);
    assert_eq!(c.kv(follower).restores, vec![snap_index]);
    c.net.heal();
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(follower).data, c.kv(leader).data);
}

/// `release_log` (what Defragment sends) compacts at the applied index (the harness keeps
/// no catch-up entries) and deletes every older WAL segment; the leader crashes right
/// after and comes back with everything; the member cut off meanwhile gets a snapshot.
#[test]
fn release_log_deletes_old_segments_and_a_lagging_member_gets_a_snapshot() {
    let mut c = Cluster::new(3, 12);
    let leader = c.elect();
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    c.net.isolate(lagging);
    let value = "v".repeat(300);
    for i in 0..400 {
        c.put_ok(leader, &format!("k{i:03}"), &value);
    }
    let before = c.wal_segments(leader);
    assert!(before >= 2, "{before} segments of 64 KiB");
    let mut rx = c.handle(leader).release_log();
    let done = c.wait(&mut rx, 10).expect("answered");
    assert_eq!(done.segments_removed, before);
    assert_eq!(done.compacted_to, c.applied(leader));
    assert_eq!(c.wal_segments(leader), 1);
    assert_eq!(c.nodes[&leader].status().log.0, done.compacted_to + 1);
    let data = c.kv(leader).data.clone();
    c.crash(leader);
    c.start(leader);
    assert_eq!(c.kv(leader).data, data, "the state machine persisted before the log went");
    let others: Vec<u64> = (1..=3).filter(|&i| i != lagging).collect();
    let leader = c.elect_among(&others);
    c.put_ok(leader, "after", "release");
    c.net.heal();
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(lagging).restores.len(), 1, "restored from one snapshot");
    let data = c.kv(leader).data.clone();
    assert_eq!(data.len(), 401);
    for id in 1..=3 {
        assert_eq!(c.kv(id).data, data, "node {id}");
    }
}

#[test]
fn leadership_transfer_moves_the_leader() {
    let mut c = Cluster::new(3, 11);
    let leader = c.elect();
    c.put_ok(leader, "k", "v");
    let target = (1..=3).find(|&i| i != leader).unwrap();
    c.handle(leader).transfer_leader(target);
    assert!(c.run_until(50, |c| c.leader() == Some(target)));
    let h = c.handle(1);
    assert!(c.run_until(20, |_| h.leader().id == target), "the leader is observable through handles");
    c.put_ok(target, "k2", "v");
}

#[test]
fn a_seed_replays_the_same_run() {
    let run = |seed: u64| {
        let mut c = Cluster::new(3, seed);
        c.net.set_faults(Faults { drop_per_mille: 150, dup_per_mille: 50, min_delay: 0, max_delay: 4 });
        let mut answers = Vec::new();
        for i in 0..60 {
            answers.push(c.put(1 + i % 3, &format!("k{i}"), "v"));
            c.tick();
        }
        for _ in 0..100 {
            c.tick();
        }
        let outcome: Vec<String> = answers.iter_mut().map(|rx| format!("{:?}", rx.try_recv())).collect();
        let applies: Vec<_> = (1..=3).map(|id| c.kv(id).applies.clone()).collect();
        (outcome, applies, c.net.stats(), c.leader())
    };
    assert_eq!(run(77), run(77));
    assert_ne!(run(77).2, run(78).2, "different seeds, different runs");
}

/// The async run loop with an injected ticker: one member, ticked by the test.
#[test]
fn run_loop_serves_requests() {
    struct NoPeers;
    impl cairn_raft_node::Transport for NoPeers {
        fn send(&mut self, _: Vec<cairn_raft_node::raft::eraftpb::Message>) {}
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cairn_raft_node::NodeConfig::new(1);
        cfg.min_election_tick = 10;
        cfg.max_election_tick = 11;
        let node = cairn_raft_node::RaftNode::open(cfg, dir.path(), harness::Kv::default(), NoPeers, Some(&[1])).unwrap();
        let handle = node.handle();
        let (ticks, ticker) = cairn_raft_node::node::ManualTicker::new();
        let task = tokio::spawn(node.run(ticker));
        let leader = handle.leader_watch();
        while leader.borrow().id != 1 {
            ticks.send(()).unwrap();
            tokio::task::yield_now().await;
        }
        let index = handle.propose(harness::put_request("k", "v")).await.unwrap().unwrap();
        assert_eq!(handle.read_index().await.unwrap(), Ok(index));
        assert_eq!(handle.status().await.unwrap().applied, index);
        handle.stop();
        let node = task.await.unwrap().unwrap();
        assert_eq!(node.state_machine().lock().data.get(&b"k"[..]), Some(&b"v".to_vec()));
    });
}
