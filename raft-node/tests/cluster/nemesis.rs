//! Seeded runs mixing writes with partitions, lossy links, crashes and restarts, then a
//! check: replicas identical, every acknowledged write present, nothing applied twice
//! (the state machine asserts that on every apply).

use cairn_raft_node::sim::{Faults, SimRng};
use cairn_raft_node::ProposeResult;
use tokio::sync::oneshot;

use crate::harness::Cluster;

/// Returns how many snapshots were installed and how many crashes there were.
fn run(seed: u64) -> (usize, usize) {
    let mut c = Cluster::with_snapshot_count(3, seed, 15);
    let mut rng = SimRng::new(seed ^ 0x5eed);
    let mut down: Vec<(u64, u64)> = Vec::new(); // (node, restart at tick)
    let mut waiting: Vec<(String, String, oneshot::Receiver<ProposeResult<u64>>)> = Vec::new();
    let mut acked = Vec::new();
    let mut crashes = 0;
    for t in 0..400u64 {
        if t % 3 == 0 {
            let via = rng.range(1, 3);
            if c.nodes.contains_key(&via) {
                let (k, v) = (format!("k{t}"), format!("v{t}"));
                let rx = c.put(via, &k, &v);
                waiting.push((k, v, rx));
            }
        }
        if t % 40 == 20 {
            match rng.range(0, 4) {
                0 => c.net.isolate(rng.range(1, 3)),
                1 => c.net.set_faults(Faults { drop_per_mille: 200, dup_per_mille: 20, min_delay: 0, max_delay: 3 }),
                2 if down.is_empty() => {
                    let id = rng.range(1, 3);
                    c.crash(id);
                    crashes += 1;
                    down.push((id, t + rng.range(5, 60)));
                }
                _ => {
                    c.net.heal();
                    c.net.set_faults(Faults::default());
                }
            }
        }
        down.retain(|&(id, at)| {
            if at <= t {
                c.start(id);
                false
            } else {
                true
            }
        });
        c.tick();
        waiting.retain_mut(|(k, v, rx)| match rx.try_recv() {
            Ok(Ok(_)) => {
                acked.push((k.clone(), v.clone(), t));
                false
            }
            Ok(Err(_)) => false,
            Err(_) => !rx.is_terminated(),
        });
    }
    for (id, _) in down {
        c.start(id);
    }
    c.net.heal();
    c.net.set_faults(Faults::default());
    let leader = c.elect();
    c.put_ok(leader, "final", "write");
    assert!(c.converge_on(leader), "seed {seed}: no convergence");
    let reference = c.kv(leader).data.clone();
    for id in 1..=3 {
        assert_eq!(c.kv(id).data, reference, "seed {seed}: node {id} differs");
    }
    for (k, v, _) in &acked {
        assert_eq!(reference.get(k.as_bytes()), Some(&v.clone().into_bytes()), "seed {seed}: acknowledged {k} lost");
    }
    assert!(acked.len() > 30, "seed {seed}: only {} writes acknowledged", acked.len());
    let restores = (1..=3).map(|id| c.kv(id).restores.len()).sum();
    (restores, crashes)
}

#[test]
fn seeded_fault_runs_keep_replicas_identical_and_acknowledged_writes() {
    let (mut restores, mut crashes) = (0, 0);
    for seed in 100..106 {
        let (r, c) = run(seed);
        restores += r;
        crashes += c;
    }
    // the runs did exercise the recovery paths
    assert!(restores > 0 && crashes > 0, "restores {restores}, crashes {crashes}");
}
