//! A linearizability checker for etcd-style key-value histories: the Wing–Gong search with
//! the optimisations of porcupine (Athalye's Go checker, after Lowe's "Testing for
//! linearizability", 2017).
//!
//! # Model
//! Every operation touches one key, so linearizability is checked per key (it is a local
//! property, Herlihy & Wing 1990: a history is linearizable iff each object's sub-history
//! is). A key is a register whose state is `absent` or `(value, mod_revision)`:
//!
//! | input | legal when | new state |
//! |---|---|---|
//! | `Get` → kv | kv equals the state (value and mod_revision) | unchanged |
//! | `Put(v)` → revision r | always | `(v, r)` |
//! | `Delete` → deleted | deleted == (state is present) | absent |
//! | `Txn If(c) Then(Put v / Delete) [Else(Get)]` → succeeded, else kv | succeeded == c(state); a failed txn's Get equals the state | then-branch applied iff c holds |
//!
//! `c` is `mod_revision(k) == r` (`r == 0`: the key is absent, as in etcd) or
//! `value(k) == x` (false on an absent key, as in etcd). Compare-and-set and all
//! kube-apiserver shapes (create `If(mod==0) Then(Put) Else(Get)`, update
//! `If(mod==rev) Then(Put) Else(Get)`, delete `If(mod==rev) Then(Delete) Else(Get)`) are
//! `Txn`s.
//!
//! **Values written to one key must be unique** (the workload writes `c<client>-<seq>`):
//! an operation whose outcome is unknown has no revision of its own, and takes the one a
//! read observed for its value; a value observed with two mod revisions is reported at once.
//! Unobserved unknown writes get a placeholder revision no compare can match, which is
//! exact as long as the revisions clients compare against come from answers recorded in
//! the history (then revision r names the one write some answer showed with it).
//!
//! # Search
//! Call and return entries sorted by time (a call before a return at the same instant, so
//! touching operations count as concurrent) form a doubly linked list. The search walks it:
//! at a call it tries to linearize that operation now (the model accepts it and the pair
//! (set of linearized operations, state) was not seen before), lifting the call and its
//! return out of the list and starting again from the head; at a return it has failed to
//! linearize that operation in time and backtracks (re-linking the lifted entries, dancing
//! links). Operations with unknown outcome (timeout, lost connection, server killed) return
//! at +∞ with any output accepted, so they may take effect at any point after their call,
//! or never (linearized after everything else, where nothing observes them).
//! The cache keys the set of linearized operations by a 128-bit Zobrist hash (XOR of one
//! random word per operation, updated in O(1) per step) instead of the bitset porcupine
//! stores: the memory stays small for histories of 10^5 operations, at a collision
//! probability around n²/2^128 (a collision could only prune a branch, i.e. report a
//! linearizable history as not linearizable, never the reverse).
//!
//! # Limits
//! - A step budget and a time budget per key: past them the verdict is `Unknown`, never a
//!   hang. Histories that are linearizable with little concurrency cost a few steps per
//!   operation; the search is exponential in the worst case (NP-complete in general).
//! - On a violation the failing key's history is shrunk with sound reductions only (each
//!   step keeps "this smaller history is not linearizable ⇒ the real one is not"):
//!   truncation at a time T (operations called after T dropped, those still running at T
//!   turned into unknown-outcome ones) and removal of operations that never change the
//!   state (reads, failed transactions, deletes of nothing). Writes before the anomaly stay.
//! - Multi-key transactions and range reads are outside the model.
//! - [`check_revision_order`] adds the cross-key check linearizability per key cannot make:
//!   etcd's revision is one counter, so revisions must follow real time across keys.
//!
//! # Layout
//! This file holds the history types, [`check`] and the report; `linearizability/`
//! holds the model and the preparation of a key's history (`model.rs`), the search
//! (`search.rs`), the shrinking and explaining of violations (`shrink.rs`) and the unit
//! tests, which compare the search with a brute force on random histories (`tests.rs`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// An etcd revision.
pub type Rev = i64;

/// What a client asked for (of one key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A linearizable single-key Range.
    Get,
    Put {
        value: String,
    },
    /// A DeleteRange of the one key.
    Delete,
    /// `Txn If(compare) Then(then) Else(Get if else_get)`.
    Txn {
        compare: Compare,
        then: Then,
        else_get: bool,
    },
}

/// The compare of a [`Input::Txn`] (always `EQUAL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// `mod_revision(k) == r`; 0 means "k is absent".
    ModRevision(Rev),
    /// `value(k) == x`; false when k is absent.
    Value(String),
}

/// The success branch of a [`Input::Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Then {
    Put { value: String },
    Delete,
}

/// A key's value as a read saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kv {
    pub value: String,
    pub mod_revision: Rev,
}

/// What the client got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// No answer (timeout, connection error, the server killed mid-call): the operation may
    /// or may not have taken effect. Its `ret` must be `None`.
    Unknown,
    Get {
        kv: Option<Kv>,
        header_revision: Rev,
    },
    /// `revision`: the response header's revision, the new mod_revision.
    Put {
        revision: Rev,
    },
    Delete {
        deleted: bool,
        header_revision: Rev,
    },
    /// `else_kv` is `Some` exactly when the txn failed and had an Else(Get).
    Txn {
        succeeded: bool,
        header_revision: Rev,
        else_kv: Option<Option<Kv>>,
    },
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (for the report only).
    pub client: usize,
    pub key: String,
    /// Nanoseconds since an arbitrary origin, from a monotonic clock shared by all clients.
    pub call: u64,
    /// `None`: no answer, return time +∞ (with [`Output::Unknown`]).
    pub ret: Option<u64>,
    pub input: Input,
    pub output: Output,
}

impl Operation {
    /// The response header's revision, if it answered.
    pub fn header_revision(&self) -> Option<Rev> {
        match self.output {
            Output::Unknown => None,
            Output::Get {
                header_revision, ..
            }
            | Output::Delete {
                header_revision, ..
            }
            | Output::Txn {
                header_revision, ..
            } => Some(header_revision),
            Output::Put { revision } => Some(revision),
        }
    }

    /// True when the answer says this operation created a revision.
    pub fn acknowledged_write(&self) -> bool {
        match (&self.input, &self.output) {
            (Input::Put { .. }, Output::Put { .. }) => true,
            (Input::Delete, Output::Delete { deleted, .. }) => *deleted,
            (
                Input::Txn {
                    then: Then::Put { .. },
                    ..
                },
                Output::Txn { succeeded, .. },
            ) => *succeeded,
            // a successful delete branch deletes something unless the compare said "absent"
            (
                Input::Txn {
                    then: Then::Delete,
                    compare,
                    ..
                },
                Output::Txn { succeeded, .. },
            ) => *succeeded && *compare != Compare::ModRevision(0),
            _ => false,
        }
    }

    /// The value this operation writes if it takes effect (Put, or a Txn's Then(Put)).
    pub fn written_value(&self) -> Option<&str> {
        match &self.input {
            Input::Put { value }
            | Input::Txn {
                then: Then::Put { value },
                ..
            } => Some(value),
            _ => None,
        }
    }

    fn is_unknown(&self) -> bool {
        self.output == Output::Unknown
    }
}

/// How much the search may spend.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Search steps per key before giving up with [`Verdict::Unknown`]. The cache holds
    /// at most one entry (about 50 bytes) per step: 3 M steps stay under ~150 MB.
    pub step_budget: u64,
    /// Wall time per key before giving up with [`Verdict::Unknown`].
    pub time_budget: Duration,
    /// Wall time for shrinking a violation into a small counter-example.
    pub shrink_budget: Duration,
    /// Keys checked in parallel.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            step_budget: 3_000_000,
            time_budget: Duration::from_secs(30),
            shrink_budget: Duration::from_secs(20),
            threads: 2,
        }
    }
}

/// The outcome for one key or a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search gave up (budget); nothing was proven either way.
    Unknown,
}

/// The result for one key.
#[derive(Clone, Debug)]
pub struct KeyReport {
    pub key: String,
    /// Operations checked (unknown-outcome reads are dropped first).
    pub ops: usize,
    /// Of which had an unknown outcome.
    pub unknown_ops: usize,
    pub steps: u64,
    pub elapsed: Duration,
    pub verdict: Verdict,
    /// Why: a counter-example or why the search gave up.
    pub detail: String,
    /// For a linearizable key: the operations (indexes into the checked history) in a
    /// legal order; unknown-outcome operations placed last never took effect.
    pub linearization: Vec<usize>,
}

/// The result for a whole history.
#[derive(Clone, Debug)]
pub struct Report {
    pub keys: Vec<KeyReport>,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if self
            .keys
            .iter()
            .any(|k| k.verdict == Verdict::NotLinearizable)
        {
            Verdict::NotLinearizable
        } else if self.keys.iter().any(|k| k.verdict == Verdict::Unknown) {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    pub fn ops(&self) -> usize {
        self.keys.iter().map(|k| k.ops).sum()
    }

    /// One line per key.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for k in &self.keys {
            let _ = writeln!(
                s,
                "  {:<24} {:>6} ops ({:>3} unknown) {:>9} steps {:>8.1?}  {:?}",
                k.key, k.ops, k.unknown_ops, k.steps, k.elapsed, k.verdict
            );
        }
        s
    }

    /// The details of every key that is not linearizable or undecided.
    pub fn problems(&self) -> String {
        let mut s = String::new();
        for k in self
            .keys
            .iter()
            .filter(|k| k.verdict != Verdict::Linearizable)
        {
            let _ = writeln!(s, "key {:?}: {:?}\n{}", k.key, k.verdict, k.detail);
        }
        s
    }
}

/// Checks a history, key by key.
pub fn check(history: &[Operation], opts: &CheckOptions) -> Report {
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, op) in history.iter().enumerate() {
        assert_eq!(
            op.ret.is_none(),
            op.is_unknown(),
            "bad history: operation {i} must have ret None exactly when its output is Unknown: {op:?}"
        );
        if let Some(r) = op.ret {
            assert!(
                r >= op.call,
                "bad history: operation {i} returns before its call: {op:?}"
            );
        }
        by_key.entry(&op.key).or_default().push(i);
    }
    let mut keys: Vec<(&str, Vec<usize>)> = by_key.into_iter().collect();
    keys.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let origin = history.iter().map(|o| o.call).min().unwrap_or(0);

    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1).min(keys.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((key, idxs)) = keys.get(i) else {
                    return;
                };
                let r = check_key(key, history, idxs, opts, origin);
                results.lock().unwrap().push(r);
            });
        }
    });
    let mut keys = results.into_inner().unwrap();
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Report { keys }
}

/// The cross-key revision check: for operations A and B that both answered, if A returned
/// before B was called then B's header revision is ≥ A's, and > A's when B created a
/// revision. Acknowledged writes have distinct revisions. Returns the violations found
/// (at most `limit`).
pub fn check_revision_order(history: &[Operation], limit: usize) -> Vec<String> {
    let origin = history.iter().map(|o| o.call).min().unwrap_or(0);
    let mut out = Vec::new();
    let mut by_rev: HashMap<Rev, usize> = HashMap::new();
    for (i, op) in history
        .iter()
        .enumerate()
        .filter(|(_, o)| o.acknowledged_write())
    {
        let rev = op
            .header_revision()
            .expect("an acknowledged write has a revision");
        if let Some(&j) = by_rev.get(&rev) {
            if out.len() < limit {
                out.push(format!(
                    "two acknowledged writes got revision {rev}:\n    {}\n    {}",
                    describe(history, j, origin, false),
                    describe(history, i, origin, false)
                ));
            }
        } else {
            by_rev.insert(rev, i);
        }
    }
    // Sweep in time order: calls before returns at the same instant (concurrent).
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in history.iter().enumerate() {
        if let Some(r) = op.ret {
            events.push((op.call, false, i));
            events.push((r, true, i));
        }
    }
    events.sort_unstable();
    let mut max_seen: Option<(Rev, usize)> = None;
    let mut bound_at_call: Vec<Option<(Rev, usize)>> = vec![None; history.len()];
    for (_, is_ret, i) in events {
        if is_ret {
            let rev = history[i].header_revision().expect("answered");
            if max_seen.is_none_or(|(m, _)| rev > m) {
                max_seen = Some((rev, i));
            }
        } else {
            bound_at_call[i] = max_seen;
        }
    }
    for (i, op) in history.iter().enumerate() {
        let (Some(rev), Some((bound, j))) = (op.header_revision(), bound_at_call[i]) else {
            continue;
        };
        let bad = if op.acknowledged_write() {
            rev <= bound
        } else {
            rev < bound
        };
        if bad && out.len() < limit {
            out.push(format!(
                "revision went back in real time: {}\n    returned revision {bound} before\n    {}\n    was called and answered revision {rev}",
                describe(history, j, origin, false),
                describe(history, i, origin, false)
            ));
        }
    }
    out
}

mod model;
mod search;
mod shrink;

use model::prepare;
use search::{search, Budget, Outcome};
use shrink::{explain, shrink};

fn check_key(
    key: &str,
    history: &[Operation],
    idxs: &[usize],
    opts: &CheckOptions,
    origin: u64,
) -> KeyReport {
    let start = Instant::now();
    let mut rep = KeyReport {
        key: key.to_string(),
        ops: 0,
        unknown_ops: 0,
        steps: 0,
        elapsed: Duration::ZERO,
        verdict: Verdict::Linearizable,
        detail: String::new(),
        linearization: Vec::new(),
    };
    let p = match prepare(history, idxs, origin) {
        Ok(p) => p,
        Err(anomaly) => {
            rep.verdict = Verdict::NotLinearizable;
            rep.detail = anomaly;
            rep.elapsed = start.elapsed();
            return rep;
        }
    };
    rep.ops = p.len();
    rep.unknown_ops = p.ret.iter().filter(|&&r| r == u64::MAX).count();
    let budget = Budget {
        steps: opts.step_budget,
        deadline: start + opts.time_budget,
    };
    let (outcome, steps) = search(&p, &budget, false);
    rep.steps = steps;
    match outcome {
        Outcome::Linearizable(order) => {
            rep.linearization = order.into_iter().map(|k| p.hist[k]).collect()
        }
        Outcome::GaveUp(why) => {
            rep.verdict = Verdict::Unknown;
            rep.detail = format!(
                "the search gave up after {steps} steps ({why}): nothing is proven about this key"
            );
        }
        Outcome::Illegal { .. } => {
            rep.verdict = Verdict::NotLinearizable;
            let small = shrink(&p, opts);
            rep.detail = explain(&p, &small, history, origin, opts);
        }
    }
    rep.elapsed = start.elapsed();
    rep
}

fn show_rev(r: Rev) -> String {
    if r < 0 {
        "(never observed)".to_string()
    } else {
        r.to_string()
    }
}

fn secs(t: u64, origin: u64) -> String {
    format!("{:.6}s", (t - origin) as f64 / 1e9)
}

fn show_kv(kv: &Option<Kv>) -> String {
    match kv {
        None => "absent".to_string(),
        Some(kv) => format!("{:?}@{}", kv.value, kv.mod_revision),
    }
}

/// One line for operation `i`: `#i client c [call → return] input ⇒ output`, times in
/// seconds since `origin`.
pub fn describe(history: &[Operation], i: usize, origin: u64, relaxed: bool) -> String {
    let op = &history[i];
    let input = match &op.input {
        Input::Get => format!("Get({:?})", op.key),
        Input::Put { value } => format!("Put({:?}, {value:?})", op.key),
        Input::Delete => format!("Delete({:?})", op.key),
        Input::Txn {
            compare,
            then,
            else_get,
        } => {
            let c = match compare {
                Compare::ModRevision(r) => format!("mod({:?}) == {r}", op.key),
                Compare::Value(x) => format!("value({:?}) == {x:?}", op.key),
            };
            let t = match then {
                Then::Put { value } => format!("Put({value:?})"),
                Then::Delete => "Delete".to_string(),
            };
            format!(
                "Txn(If {c} Then {t}{})",
                if *else_get { " Else Get" } else { "" }
            )
        }
    };
    let output = match &op.output {
        Output::Unknown => "unknown outcome".to_string(),
        Output::Get { kv, .. } => show_kv(kv),
        Output::Put { revision } => format!("ok @{revision}"),
        Output::Delete {
            deleted: true,
            header_revision,
        } => format!("deleted @{header_revision}"),
        Output::Delete { deleted: false, .. } => "deleted nothing".to_string(),
        Output::Txn {
            succeeded: true,
            header_revision,
            ..
        } => format!("succeeded @{header_revision}"),
        Output::Txn {
            else_kv: Some(kv), ..
        } => format!("failed, Else saw {}", show_kv(kv)),
        Output::Txn { .. } => "failed".to_string(),
    };
    let ret = op
        .ret
        .map(|r| secs(r, origin))
        .unwrap_or_else(|| "?".to_string());
    format!(
        "#{i} client {} [{} → {}] {input} ⇒ {output}{}",
        op.client,
        secs(op.call, origin),
        ret,
        if relaxed {
            " (answer ignored: still running at the cut)"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests;
