//! ReadIndex: batched, answered only once the apply caught up, refused without a quorum.

use cairn_raft_node::raft::eraftpb::MessageType;
use cairn_raft_node::{ConfChangeRequest, RequestError};

use crate::harness::Cluster;

#[test]
fn read_index_waits_for_the_apply_and_batches() {
    let mut c = Cluster::new(3, 20);
    let leader = c.elect();
    c.put_ok(leader, "k0", "v");
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    // the follower hears heartbeats but gets no entries
    c.net.hold(follower, MessageType::MsgAppend);
    for i in 1..=5 {
        c.put_ok(leader, &format!("k{i}"), "v");
    }
    let before = c.net.sent(follower, MessageType::MsgReadIndex);
    let h = c.handle(follower);
    let mut reads: Vec<_> = (0..5).map(|_| h.read_index()).collect();
    for _ in 0..15 {
        c.tick();
    }
    for rx in &mut reads {
        assert!(rx.try_recv().is_err(), "a read completed before the follower applied the writes");
    }
    assert!(!c.kv(follower).data.contains_key(&b"k5"[..]));
    c.net.release();
    let mut indexes = Vec::new();
    for mut rx in reads {
        indexes.push(c.wait(&mut rx, 20).unwrap().unwrap());
    }
    // one round answered all five
    assert!(indexes.windows(2).all(|w| w[0] == w[1]), "{indexes:?}");
    assert!(c.applied(follower) >= indexes[0]);
    assert!(c.kv(follower).data.contains_key(&b"k5"[..]), "the read sees every write acknowledged before it");
    let rounds = c.net.sent(follower, MessageType::MsgReadIndex) - before;
    // the round may be re-sent while the follower is stuck, but the five reads share it
    assert!((1..=4).contains(&rounds), "{rounds} ReadIndex messages");
    // a leader answers reads too
    let mut rx = c.handle(leader).read_index();
    assert_eq!(c.wait(&mut rx, 10).unwrap(), Ok(c.applied(leader)));
}

#[test]
fn read_index_fails_without_a_quorum() {
    let mut c = Cluster::new(3, 21);
    let leader = c.elect();
    c.put_ok(leader, "k", "v");
    c.net.isolate(leader);
    let mut on_leader = c.handle(leader).read_index();
    let r = c.wait(&mut on_leader, 100).expect("answered within the request timeout");
    assert!(matches!(r, Err(RequestError::NoLeader | RequestError::Timeout)), "{r:?}");
    // the cut-off member refuses at once once it knows there is no leader
    let mut again = c.handle(leader).read_index();
    c.run_until(100, |c| c.nodes[&leader].status().leader.id == 0);
    let r = c.wait(&mut again, 100).unwrap();
    assert!(matches!(r, Err(RequestError::NoLeader | RequestError::Timeout)), "{r:?}");
    // the majority side still serves linearizable reads
    let other = (1..=3).find(|&i| i != leader).unwrap();
    let new = c.elect_among(&[other]);
    let mut ok = c.handle(new).read_index();
    assert!(c.wait(&mut ok, 50).unwrap().is_ok());
}

#[test]
fn a_sole_voter_leader_reads_without_a_round_until_a_second_voter_joins() {
    let mut c = Cluster::new(1, 22);
    let h = c.handle(1);
    assert!(!h.is_sole_leader(), "not before it is elected and has committed in its term");
    let leader = c.elect();
    c.put_ok(leader, "k", "v");
    assert!(h.is_sole_leader());
    // a learner does not vote: the leader is still the only voter once it is applied
    c.start(2);
    let mut rx = h.conf_change(ConfChangeRequest::AddLearner(2));
    let cs = c.wait(&mut rx, 50).unwrap().unwrap();
    assert_eq!((cs.voters.clone(), cs.learners.clone()), (vec![1], vec![2]));
    assert!(h.is_sole_leader());
    assert!(!c.handle(2).is_sole_leader(), "a learner never reads locally");
    // a second voter: every read takes a ReadIndex round again
    let mut rx = h.conf_change(ConfChangeRequest::Promote(2));
    let cs = c.wait(&mut rx, 50).unwrap().unwrap();
    assert_eq!(cs.voters, vec![1, 2]);
    assert!(!h.is_sole_leader());
    assert!(c.converge_on(leader));
    assert!(!c.handle(2).is_sole_leader());
    // back to one voter
    let mut rx = h.conf_change(ConfChangeRequest::Remove(2));
    let cs = c.wait(&mut rx, 50).unwrap().unwrap();
    assert_eq!(cs.voters, vec![1]);
    c.put_ok(leader, "k2", "v");
    assert!(h.is_sole_leader());
    // after a restart, only once the new term's entry is committed and applied
    c.crash(1);
    c.start(1);
    let h = c.handle(1);
    assert!(!h.is_sole_leader());
    c.elect();
    assert!(c.run_until(20, |c| c.handle(1).is_sole_leader()));
    assert!(c.kv(1).data.contains_key(&b"k2"[..]));
}

#[test]
fn leaders_of_larger_clusters_never_skip_the_round() {
    let mut c = Cluster::new(3, 23);
    let leader = c.elect();
    c.put_ok(leader, "k", "v");
    for id in 1..=3 {
        assert!(!c.handle(id).is_sole_leader(), "member {id}");
    }
}
