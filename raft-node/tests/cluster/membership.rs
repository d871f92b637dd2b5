//! Membership: a learner joins (by log, or by snapshot after compaction), is promoted,
//! and a member is removed.

use cairn_raft_node::ConfChangeRequest;

use crate::harness::Cluster;

#[test]
fn learner_joins_by_log_is_promoted_and_a_member_is_removed() {
    let mut c = Cluster::new(3, 30);
    let leader = c.elect();
    for i in 0..5 {
        c.put_ok(leader, &format!("k{i}"), "v");
    }
    c.start(4); // empty: not a founding member
    let mut rx = c.handle(leader).conf_change(ConfChangeRequest::AddLearner(4));
    let cs = c.wait(&mut rx, 50).unwrap().unwrap();
    assert_eq!((cs.voters.clone(), cs.learners.clone()), (vec![1, 2, 3], vec![4]));
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(4).data, c.kv(leader).data);
    // it learned the founding configuration from the log, then its own addition
    assert_eq!(c.kv(4).conf, cs);
    assert!(c.kv(4).restores.is_empty());

    let mut rx = c.handle(leader).conf_change(ConfChangeRequest::Promote(4));
    let cs = c.wait(&mut rx, 50).unwrap().unwrap();
    assert_eq!((cs.voters.clone(), cs.learners.clone()), (vec![1, 2, 3, 4], vec![]));
    assert!(c.converge_on(leader));
    assert_eq!(c.nodes[&4].status().conf.voters, vec![1, 2, 3, 4]);

    let removed = (1..=3).find(|&i| i != leader).unwrap();
    let mut rx = c.handle(leader).conf_change(ConfChangeRequest::Remove(removed));
    let cs = c.wait(&mut rx, 50).unwrap().unwrap();
    assert!(!cs.voters.contains(&removed) && cs.voters.len() == 3);
    c.crash(removed);
    // three voters left; one more may fail and writes still commit
    let third = cs.voters.iter().copied().find(|&i| i != leader && i != 4).unwrap();
    c.net.isolate(third);
    c.put_ok(leader, "after", "v");
    assert!(c.run_until(20, |c| c.kv(4).data.contains_key(&b"after"[..])));
}

#[test]
fn member_added_after_compaction_joins_by_snapshot() {
    let mut c = Cluster::with_snapshot_count(3, 31, 10);
    let leader = c.elect();
    for i in 0..30 {
        c.put_ok(leader, &format!("k{i}"), "v");
    }
    assert!(c.nodes[&leader].status().log.0 > 1, "compacted");
    c.start(4);
    let mut rx = c.handle(leader).conf_change(ConfChangeRequest::AddLearner(4));
    c.wait(&mut rx, 50).unwrap().unwrap();
    assert!(c.converge_on(leader));
    assert_eq!(c.kv(4).restores.len(), 1);
    assert_eq!(c.kv(4).data, c.kv(leader).data);
    let conf = c.nodes[&4].status().conf;
    assert_eq!((conf.voters, conf.learners), (vec![1, 2, 3], vec![4]));
}
