//! Shrinking a violation into a small counter-example by sound steps, and explaining it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Instant;

use super::model::{Problem, State};
use super::search::{search, Budget, Outcome};
use super::{describe, show_rev, CheckOptions, Operation, Output};

/// A smaller history that is still not linearizable, reached by sound steps only.
pub(super) fn shrink(p: &Problem, opts: &CheckOptions) -> Problem {
    let deadline = Instant::now() + opts.shrink_budget;
    let budget = Budget {
        steps: opts.step_budget,
        deadline,
    };
    let illegal = |q: &Problem| matches!(search(q, &budget, false).0, Outcome::Illegal { .. });
    let truncate = |q: Problem| -> Problem {
        // the earliest return time at which the truncated history already fails
        let mut times: Vec<u64> = q.ret.iter().copied().filter(|&r| r != u64::MAX).collect();
        times.sort_unstable();
        times.dedup();
        let (mut lo, mut hi) = (0, times.len());
        while lo < hi && Instant::now() < deadline {
            let mid = (lo + hi) / 2;
            if illegal(&q.truncated(times[mid])) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if hi < times.len() {
            q.truncated(times[hi])
        } else {
            q
        }
    };
    let base = truncate(p.clone());
    // remove observers, halves first, then smaller chunks (delta debugging)
    let observers: Vec<usize> = (0..base.len())
        .filter(|&i| base.steps[i].is_observer())
        .collect();
    let mut keep = vec![true; base.len()];
    let mut chunk = observers.len().div_ceil(2).max(1);
    'levels: loop {
        let live: Vec<usize> = observers.iter().copied().filter(|&i| keep[i]).collect();
        if live.is_empty() {
            break;
        }
        let size = chunk.min(live.len());
        for c in live.chunks(size) {
            if Instant::now() > deadline {
                break 'levels;
            }
            let mut candidate = keep.clone();
            for &i in c {
                candidate[i] = false;
            }
            if illegal(&base.subset(|i| candidate[i])) {
                keep = candidate;
            }
        }
        if size == 1 {
            break;
        }
        chunk = size.div_ceil(2);
    }
    truncate(base.subset(|i| keep[i]))
}

/// A readable account of a (shrunk) violation.
pub(super) fn explain(
    full: &Problem,
    small: &Problem,
    history: &[Operation],
    origin: u64,
    opts: &CheckOptions,
) -> String {
    let budget = Budget {
        steps: opts.step_budget,
        deadline: Instant::now() + opts.time_budget,
    };
    let deepest = match search(small, &budget, true).0 {
        Outcome::Illegal { deepest } => deepest,
        _ => Vec::new(),
    };
    let label = |k: usize| describe(history, small.hist[k], origin, small.relaxed[k]);
    let mut s = format!(
        "not linearizable; a sub-history of {} of its {} operations already is not \
         (reduced soundly: cut after the failing point, reads and failed txns removed):\n",
        small.len(),
        full.len()
    );
    let mut state = None;
    for &k in &deepest {
        state = small.steps[k]
            .apply(state)
            .expect("a partial linearization replays");
    }
    let in_deepest: HashSet<usize> = deepest.iter().copied().collect();
    const SHOW_ALL: usize = 40;
    if small.len() <= SHOW_ALL {
        for k in 0..small.len() {
            let _ = writeln!(s, "    {}", label(k));
        }
    }
    let show_from = deepest.len().saturating_sub(6);
    let _ = writeln!(
        s,
        "  the longest partial linearization found orders {} operations{}",
        deepest.len(),
        if show_from > 0 {
            "; its last ones:"
        } else {
            ":"
        }
    );
    for &k in &deepest[show_from..] {
        let _ = writeln!(s, "    {}", label(k));
    }
    let _ = writeln!(s, "  leaving the key {}", show_state(state, small));
    // the earliest-returning operation not linearized is where every order failed
    let rest: Vec<usize> = (0..small.len())
        .filter(|k| !in_deepest.contains(k))
        .collect();
    if let Some(&stuck) = rest
        .iter()
        .filter(|&&k| small.ret[k] != u64::MAX)
        .min_by_key(|&&k| small.ret[k])
    {
        let _ = writeln!(
            s,
            "  then this must take effect before it returns, but cannot:\n    {}",
            label(stuck)
        );
        let stuck_op = &history[small.hist[stuck]];
        let seen = match &stuck_op.output {
            Output::Get { kv: Some(kv), .. }
            | Output::Txn {
                else_kv: Some(Some(kv)),
                ..
            } => Some(&kv.value),
            _ => None,
        };
        if let Some(seen) = seen {
            let writer = (0..history.len()).find(|&h| {
                history[h].key == stuck_op.key && history[h].written_value() == Some(seen)
            });
            match writer {
                Some(w) => {
                    let _ = writeln!(
                        s,
                        "  (the value it saw was written by\n    {})",
                        describe(history, w, origin, false)
                    );
                }
                None => {
                    let _ = writeln!(s, "  (no operation in the history wrote the value it saw)");
                }
            }
        }
        let others: Vec<usize> = rest
            .iter()
            .copied()
            .filter(|&k| k != stuck && small.call[k] <= small.ret[stuck])
            .collect();
        if !others.is_empty() {
            let _ = writeln!(
                s,
                "  (nor can any order of the other operations called before it returned:)"
            );
            for k in others.into_iter().take(12) {
                let _ = writeln!(s, "    {}", label(k));
            }
        }
    }
    s
}

fn show_state(state: State, p: &Problem) -> String {
    match state {
        None => "absent".to_string(),
        Some((v, r)) => format!(
            "at {:?} with mod_revision {}",
            p.names[v as usize],
            show_rev(r)
        ),
    }
}
