//! Unit tests of the linearizability checker (included by `linearizability.rs`).
use super::model::{Problem, State};
use super::*;
use crate::support::rng::Rng;

const MS: u64 = 1_000_000;

/// Builds single-key histories tersely; times in milliseconds, `None` = no answer.
#[derive(Default)]
struct H {
    ops: Vec<Operation>,
}

fn kv(v: Option<(&str, Rev)>) -> Option<Kv> {
    v.map(|(v, r)| Kv {
        value: v.into(),
        mod_revision: r,
    })
}

impl H {
    fn push(
        &mut self,
        client: usize,
        key: &str,
        call: u64,
        ret: Option<u64>,
        input: Input,
        output: Output,
    ) -> &mut Self {
        let output = if ret.is_none() {
            Output::Unknown
        } else {
            output
        };
        self.ops.push(Operation {
            client,
            key: key.into(),
            call: call * MS,
            ret: ret.map(|r| r * MS),
            input,
            output,
        });
        self
    }
    fn get(&mut self, c: usize, call: u64, ret: u64, seen: Option<(&str, Rev)>) -> &mut Self {
        let rev = seen.map_or(1, |s| s.1);
        self.push(
            c,
            "k",
            call,
            Some(ret),
            Input::Get,
            Output::Get {
                kv: kv(seen),
                header_revision: rev,
            },
        )
    }
    fn put(&mut self, c: usize, call: u64, ret: Option<u64>, v: &str, rev: Rev) -> &mut Self {
        self.push(
            c,
            "k",
            call,
            ret,
            Input::Put { value: v.into() },
            Output::Put { revision: rev },
        )
    }
    fn delete(
        &mut self,
        c: usize,
        call: u64,
        ret: Option<u64>,
        deleted: bool,
        rev: Rev,
    ) -> &mut Self {
        self.push(
            c,
            "k",
            call,
            ret,
            Input::Delete,
            Output::Delete {
                deleted,
                header_revision: rev,
            },
        )
    }
    /// `outcome`: `Ok(rev)` succeeded; `Err(seen)` failed (Else Get saw `seen` when `else_get`).
    #[allow(clippy::too_many_arguments)]
    fn txn(
        &mut self,
        c: usize,
        call: u64,
        ret: Option<u64>,
        compare: Compare,
        then: Then,
        else_get: bool,
        outcome: Result<Rev, Option<(&str, Rev)>>,
    ) -> &mut Self {
        let output = match outcome {
            Ok(rev) => Output::Txn {
                succeeded: true,
                header_revision: rev,
                else_kv: None,
            },
            Err(seen) => Output::Txn {
                succeeded: false,
                header_revision: 99,
                else_kv: else_get.then(|| kv(seen)),
            },
        };
        self.push(
            c,
            "k",
            call,
            ret,
            Input::Txn {
                compare,
                then,
                else_get,
            },
            output,
        )
    }
    fn cas(
        &mut self,
        c: usize,
        call: u64,
        ret: Option<u64>,
        expect: Rev,
        v: &str,
        outcome: Result<Rev, ()>,
    ) -> &mut Self {
        let then = Then::Put { value: v.into() };
        self.txn(
            c,
            call,
            ret,
            Compare::ModRevision(expect),
            then,
            false,
            outcome.map_err(|_| None),
        )
    }
    /// kube-apiserver's update: If(mod==expect) Then(Put v) Else(Get).
    fn update(
        &mut self,
        c: usize,
        call: u64,
        ret: Option<u64>,
        expect: Rev,
        v: &str,
        outcome: Result<Rev, Option<(&str, Rev)>>,
    ) -> &mut Self {
        let then = Then::Put { value: v.into() };
        self.txn(
            c,
            call,
            ret,
            Compare::ModRevision(expect),
            then,
            true,
            outcome,
        )
    }
    fn check(&self) -> Report {
        check(&self.ops, &CheckOptions::default())
    }
    fn verdict(&self) -> Verdict {
        self.check().verdict()
    }
}

#[test]
fn sequential_history_is_linearizable() {
    let mut h = H::default();
    h.get(0, 0, 1, None)
        .put(0, 2, Some(3), "a", 2)
        .get(1, 4, 5, Some(("a", 2)))
        .cas(1, 6, Some(7), 2, "b", Ok(3))
        .cas(0, 8, Some(9), 2, "c", Err(()))
        .get(0, 10, 11, Some(("b", 3)))
        .delete(1, 12, Some(13), true, 4)
        .delete(1, 14, Some(15), false, 4)
        .get(0, 16, 17, None);
    let r = h.check();
    assert_eq!(r.verdict(), Verdict::Linearizable, "{}", r.problems());
    assert_eq!(
        r.keys[0].linearization,
        (0..h.ops.len()).collect::<Vec<_>>()
    );
}

#[test]
fn overlapping_operations_may_take_effect_in_either_order() {
    let mut h = H::default();
    // the put spans both reads: absent before it takes effect, "a" after
    h.put(0, 0, Some(10), "a", 2)
        .get(1, 1, 2, None)
        .get(1, 3, 4, Some(("a", 2)));
    assert_eq!(h.verdict(), Verdict::Linearizable);
    // operations that touch at one instant are concurrent
    let mut h = H::default();
    h.put(0, 0, Some(5), "a", 2).get(1, 5, 6, None);
    assert_eq!(h.verdict(), Verdict::Linearizable);
}

#[test]
fn stale_read_is_not_linearizable() {
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .put(0, 2, Some(3), "b", 3)
        .get(1, 4, 5, Some(("a", 2)));
    let r = h.check();
    assert_eq!(r.verdict(), Verdict::NotLinearizable);
    assert!(
        r.keys[0].detail.contains("#2 client 1"),
        "names the stale read:\n{}",
        r.keys[0].detail
    );
}

#[test]
fn read_going_back_after_a_newer_read_is_not_linearizable() {
    let mut h = H::default();
    // the put is still running, but once a read saw "b" no later read may see "a"
    h.put(0, 0, Some(1), "a", 2)
        .put(0, 2, Some(20), "b", 3)
        .get(1, 3, 4, Some(("b", 3)))
        .get(2, 5, 6, Some(("a", 2)));
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
}

#[test]
fn lost_write_is_not_linearizable() {
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2).get(1, 2, 3, None);
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
}

#[test]
fn cas_that_succeeded_twice_is_not_linearizable() {
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .cas(1, 2, Some(5), 2, "b", Ok(3))
        .cas(2, 2, Some(5), 2, "c", Ok(4));
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
    // by value too
    let mut h = H::default();
    let by_value = |v: &str| Then::Put { value: v.into() };
    h.put(0, 0, Some(1), "a", 2)
        .txn(
            1,
            2,
            Some(5),
            Compare::Value("a".into()),
            by_value("b"),
            false,
            Ok(3),
        )
        .txn(
            2,
            2,
            Some(5),
            Compare::Value("a".into()),
            by_value("c"),
            false,
            Ok(4),
        );
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
    // one winner, one loser: fine
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .cas(1, 2, Some(5), 2, "b", Ok(3))
        .cas(2, 2, Some(5), 2, "c", Err(()));
    assert_eq!(h.verdict(), Verdict::Linearizable);
}

#[test]
fn compare_on_absent_key_follows_etcd() {
    // mod == 0 holds on an absent key; value == x never does
    let mut h = H::default();
    h.cas(0, 0, Some(1), 0, "a", Ok(2))
        .delete(0, 2, Some(3), true, 3)
        .txn(
            0,
            4,
            Some(5),
            Compare::Value("a".into()),
            Then::Delete,
            false,
            Ok(4),
        );
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
}

#[test]
fn kube_update_shapes() {
    let mut h = H::default();
    let put = |v: &str| Then::Put { value: v.into() };
    h.txn(
        0,
        0,
        Some(1),
        Compare::ModRevision(0),
        put("a"),
        true,
        Ok(2),
    ) // create
    .update(0, 2, Some(3), 2, "b", Ok(3))
    .update(1, 4, Some(5), 2, "c", Err(Some(("b", 3)))) // conflict: Else shows current
    .update(1, 6, Some(7), 3, "d", Ok(4))
    .txn(
        0,
        8,
        Some(9),
        Compare::ModRevision(4),
        Then::Delete,
        true,
        Ok(5),
    ) // delete
    .txn(
        1,
        10,
        Some(11),
        Compare::ModRevision(0),
        put("e"),
        true,
        Ok(6),
    ); // re-create
    assert_eq!(h.verdict(), Verdict::Linearizable);
    // an Else(Get) showing an older state than a completed update is a stale read
    let mut h = H::default();
    h.txn(
        0,
        0,
        Some(1),
        Compare::ModRevision(0),
        put("a"),
        true,
        Ok(2),
    )
    .update(0, 2, Some(3), 2, "b", Ok(3))
    .update(1, 4, Some(5), 7, "c", Err(Some(("a", 2))));
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
    // a conflict reported while the compare held
    let mut h = H::default();
    h.txn(
        0,
        0,
        Some(1),
        Compare::ModRevision(0),
        put("a"),
        true,
        Ok(2),
    )
    .update(1, 4, Some(5), 2, "c", Err(Some(("a", 2))));
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
}

#[test]
fn delete_count_is_checked() {
    let mut h = H::default();
    h.delete(0, 0, Some(1), true, 2);
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
}

#[test]
fn unknown_write_may_or_may_not_take_effect() {
    // never observed: fine either way
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .put(1, 2, None, "b", 0)
        .get(0, 3, 4, Some(("a", 2)))
        .get(0, 50, 51, Some(("a", 2)));
    assert_eq!(h.verdict(), Verdict::Linearizable);
    // observed long after the client gave up: it took effect late
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .put(1, 2, None, "b", 0)
        .get(0, 3, 4, Some(("a", 2)))
        .get(0, 50, 51, Some(("b", 3)));
    assert_eq!(h.verdict(), Verdict::Linearizable);
    // an unknown CAS that must have applied, and one that must not have
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .cas(1, 2, None, 2, "b", Ok(0))
        .get(0, 3, 4, Some(("b", 3)));
    assert_eq!(h.verdict(), Verdict::Linearizable);
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .cas(1, 2, None, 2, "b", Ok(0))
        .put(0, 3, Some(4), "c", 4)
        .get(0, 5, 6, Some(("c", 4)));
    assert_eq!(h.verdict(), Verdict::Linearizable);
    // an unknown delete
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .delete(1, 2, None, false, 0)
        .get(0, 3, 4, None)
        .get(0, 5, 6, None);
    assert_eq!(h.verdict(), Verdict::Linearizable);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call() {
    let mut h = H::default();
    h.get(0, 0, 1, Some(("b", 3))).put(1, 10, None, "b", 0);
    assert_eq!(h.verdict(), Verdict::NotLinearizable);
}

#[test]
fn unknown_write_seen_then_lost_is_not_linearizable() {
    // what a kill -9 that loses an applied-but-unsynced write looks like
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2)
        .put(1, 2, None, "b", 0)
        .get(2, 3, 4, Some(("b", 3)))
        .get(2, 5, 6, Some(("a", 2)));
    let r = h.check();
    assert_eq!(r.verdict(), Verdict::NotLinearizable);
    assert_eq!(r.keys[0].unknown_ops, 1);
}

#[test]
fn value_seen_with_two_revisions_is_reported_without_search() {
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2).get(1, 2, 3, Some(("a", 5)));
    let r = h.check();
    assert_eq!(r.verdict(), Verdict::NotLinearizable);
    assert!(
        r.keys[0].detail.contains("two mod revisions"),
        "{}",
        r.keys[0].detail
    );
    assert_eq!(r.keys[0].steps, 0);
}

#[test]
fn keys_are_checked_separately() {
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 2).get(1, 2, 3, Some(("a", 2)));
    h.push(
        0,
        "other",
        0,
        Some(1),
        Input::Put { value: "x".into() },
        Output::Put { revision: 3 },
    );
    h.push(
        1,
        "other",
        2,
        Some(3),
        Input::Get,
        Output::Get {
            kv: None,
            header_revision: 3,
        },
    );
    let r = h.check();
    assert_eq!(r.verdict(), Verdict::NotLinearizable);
    let bad: Vec<_> = r
        .keys
        .iter()
        .filter(|k| k.verdict != Verdict::Linearizable)
        .map(|k| k.key.as_str())
        .collect();
    assert_eq!(bad, ["other"]);
    assert_eq!(r.ops(), 4);
}

#[test]
fn gives_up_with_unknown_instead_of_hanging() {
    // 40 unknown writes then a read of a value nobody wrote: 2^40 orders to rule out
    let mut h = H::default();
    for i in 0..40 {
        h.put(i, 0, None, &format!("v{i}"), 0);
    }
    h.get(99, 1, 2, Some(("nobody", 7)));
    let opts = CheckOptions {
        step_budget: 20_000,
        ..Default::default()
    };
    let start = Instant::now();
    let r = check(&h.ops, &opts);
    assert_eq!(r.verdict(), Verdict::Unknown, "{}", r.problems());
    assert!(r.keys[0].detail.contains("gave up"));
    assert!(start.elapsed() < Duration::from_secs(5));
    let opts = CheckOptions {
        step_budget: u64::MAX,
        time_budget: Duration::from_millis(200),
        ..Default::default()
    };
    let start = Instant::now();
    assert_eq!(check(&h.ops, &opts).verdict(), Verdict::Unknown);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn counter_example_is_shrunk_to_the_anomaly() {
    // 300 clean operations by 3 clients, then one stale read, then more clean operations
    let mut h = H::default();
    let mut t = 0;
    let mut rev = 1;
    for i in 0..100 {
        rev += 1;
        let v = format!("v{i}");
        h.put(0, t, Some(t + 2), &v, rev)
            .get(1, t + 1, t + 3, Some((&v, rev)))
            .get(2, t + 3, t + 4, Some((&v, rev)));
        t += 5;
    }
    let stale = h.ops.len();
    h.get(1, t, t + 1, Some(("v50", 52)));
    for i in 100..150 {
        rev += 1;
        h.put(
            0,
            t + 2 + 2 * (i - 100),
            Some(t + 3 + 2 * (i - 100)),
            &format!("v{i}"),
            rev,
        );
    }
    let r = h.check();
    assert_eq!(r.verdict(), Verdict::NotLinearizable);
    let detail = &r.keys[0].detail;
    assert!(detail.contains(&format!("#{stale} client 1")), "{detail}");
    // the 250 reads other than the stale one and everything after it are gone
    let size: usize = detail
        .split("sub-history of ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(size <= 102, "shrunk to {size} operations:\n{detail}");
}

#[test]
fn revision_order_across_keys() {
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 5);
    h.push(
        1,
        "other",
        2,
        Some(3),
        Input::Put { value: "x".into() },
        Output::Put { revision: 4 },
    );
    let v = check_revision_order(&h.ops, 10);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("went back"));
    let mut h = H::default();
    h.put(0, 0, Some(1), "a", 5);
    h.push(
        1,
        "other",
        0,
        Some(3),
        Input::Put { value: "x".into() },
        Output::Put { revision: 5 },
    );
    assert!(check_revision_order(&h.ops, 10)[0].contains("two acknowledged writes"));
    // concurrent operations may come back in any order; a read may share a revision
    let mut h = H::default();
    h.put(0, 0, Some(3), "a", 5)
        .get(1, 1, 2, None)
        .get(1, 4, 5, Some(("a", 5)));
    h.push(
        1,
        "other",
        2,
        Some(3),
        Input::Put { value: "x".into() },
        Output::Put { revision: 4 },
    );
    assert_eq!(check_revision_order(&h.ops, 10), Vec::<String>::new());
}

/// Reference: tries every order that respects real time.
fn brute_force(p: &Problem) -> bool {
    fn go(p: &Problem, done: &mut Vec<bool>, state: State) -> bool {
        if done.iter().all(|&d| d) {
            return true;
        }
        for i in 0..p.len() {
            if done[i] {
                continue;
            }
            // i may go next only if no pending op returned before i was called
            if (0..p.len()).any(|j| !done[j] && j != i && p.ret[j] < p.call[i]) {
                continue;
            }
            if let Some(next) = p.steps[i].apply(state) {
                done[i] = true;
                if go(p, done, next) {
                    return true;
                }
                done[i] = false;
            }
        }
        false
    }
    go(p, &mut vec![false; p.len()], None)
}

/// Random small histories: produced by a real register (linearizable) and then often
/// corrupted; the search must agree with the brute force on every one.
#[test]
fn agrees_with_brute_force_on_random_histories() {
    let mut rng = Rng::new(7);
    let (mut legal, mut illegal, mut skipped) = (0, 0, 0);
    for case in 0..1500 {
        let n = rng.range(1, 7) as usize;
        // intervals, and a linearization point inside each (unknown: maybe never)
        let mut plan: Vec<(u64, Option<u64>, u64, bool)> = Vec::new();
        for _ in 0..n {
            let call = rng.below(20);
            let unknown = rng.percent(15);
            let ret = call + rng.range(0, 8);
            let point = if unknown {
                call + rng.below(30)
            } else {
                rng.range(call, ret)
            };
            let applies = !unknown || rng.percent(50);
            plan.push((call, (!unknown).then_some(ret), point, applies));
        }
        let mut by_point: Vec<usize> = (0..n).collect();
        by_point.sort_by_key(|&i| (plan[i].2, i));
        let mut state: Option<(String, Rev)> = None;
        let mut rev = 1;
        let mut seen_states = vec![None];
        let mut ops: Vec<Option<Operation>> = vec![None; n];
        for (w, &i) in by_point.iter().enumerate() {
            let (call, ret, _, applies) = plan[i];
            let value = format!("v{w}");
            let cur_kv = state.as_ref().map(|(v, r)| Kv {
                value: v.clone(),
                mod_revision: *r,
            });
            let (input, output) = match rng.below(5) {
                0 => (
                    Input::Get,
                    Output::Get {
                        kv: cur_kv,
                        header_revision: rev,
                    },
                ),
                1 => {
                    if applies {
                        rev += 1;
                        state = Some((value.clone(), rev));
                    }
                    (Input::Put { value }, Output::Put { revision: rev })
                }
                2 => {
                    let deleted = state.is_some();
                    if applies && deleted {
                        rev += 1;
                        state = None;
                    }
                    (
                        Input::Delete,
                        Output::Delete {
                            deleted,
                            header_revision: rev,
                        },
                    )
                }
                k => {
                    let compare = match (k, &state) {
                        (3, Some((_, r))) if rng.percent(60) => Compare::ModRevision(*r),
                        (3, _) => Compare::ModRevision(rng.below(4) as Rev),
                        (_, Some((v, _))) if rng.percent(60) => Compare::Value(v.clone()),
                        _ => Compare::Value(format!("v{}", rng.below(7))),
                    };
                    let holds = match (&compare, &state) {
                        (Compare::ModRevision(0), s) => s.is_none(),
                        (Compare::ModRevision(r), Some((_, m))) => r == m,
                        (Compare::Value(x), Some((v, _))) => x == v,
                        _ => false,
                    };
                    let else_kv = (!holds).then(|| cur_kv.clone());
                    if holds && applies {
                        rev += 1;
                        state = Some((value.clone(), rev));
                    }
                    let then = Then::Put { value };
                    (
                        Input::Txn {
                            compare,
                            then,
                            else_get: true,
                        },
                        Output::Txn {
                            succeeded: holds,
                            header_revision: rev,
                            else_kv,
                        },
                    )
                }
            };
            seen_states.push(state.as_ref().map(|(v, r)| Kv {
                value: v.clone(),
                mod_revision: *r,
            }));
            let output = if ret.is_none() {
                Output::Unknown
            } else {
                output
            };
            ops[i] = Some(Operation {
                client: i,
                key: "k".into(),
                call: call * MS,
                ret: ret.map(|r| r * MS),
                input,
                output,
            });
        }
        let mut ops: Vec<Operation> = ops.into_iter().map(Option::unwrap).collect();
        // corrupt one answer half of the time
        if rng.percent(50) {
            let i = rng.below(n as u64) as usize;
            let alt = rng.pick(&seen_states).clone();
            match &mut ops[i].output {
                Output::Get { kv, .. } => *kv = alt,
                Output::Delete { deleted, .. } => *deleted = !*deleted,
                Output::Txn {
                    succeeded, else_kv, ..
                } => {
                    *succeeded = !*succeeded;
                    *else_kv = (!*succeeded).then_some(alt);
                }
                _ => {}
            }
        }
        let idxs: Vec<usize> = (0..n).collect();
        let Ok(p) = prepare(&ops, &idxs, 0) else {
            skipped += 1;
            continue;
        };
        let budget = Budget {
            steps: u64::MAX,
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let fast = match search(&p, &budget, false).0 {
            Outcome::Linearizable(order) => {
                // the order found replays and respects real time
                let mut s = None;
                for (pos, &i) in order.iter().enumerate() {
                    s = p.steps[i].apply(s).expect("replays");
                    assert!(
                        order[pos + 1..].iter().all(|&j| p.ret[j] >= p.call[i]),
                        "case {case}: real-time order"
                    );
                }
                true
            }
            Outcome::Illegal { .. } => false,
            Outcome::GaveUp(why) => panic!("case {case}: gave up: {why}"),
        };
        assert_eq!(
            fast,
            brute_force(&p),
            "case {case}: search and brute force disagree on {ops:#?}"
        );
        if fast {
            legal += 1
        } else {
            illegal += 1
        }
    }
    assert!(
        legal > 300 && illegal > 300,
        "both kinds covered: {legal} legal, {illegal} illegal, {skipped} skipped"
    );
}
