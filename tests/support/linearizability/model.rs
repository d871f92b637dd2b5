//! The register model and the preparation of one key's history for the search.

use std::collections::HashMap;

use super::{describe, Compare, Input, Kv, Operation, Output, Rev, Then};

/// A value, interned per key.
pub(super) type Val = u32;
/// `None`: absent; `Some((value, mod_revision))`.
pub(super) type State = Option<(Val, Rev)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cond {
    ModRev(Rev),
    Value(Val),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    Put(Val, Rev),
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TxnOut {
    Unknown,
    Succeeded,
    Failed,
    /// Failed, and its Else(Get) saw this.
    FailedSaw(State),
}

/// One operation as the model sees it: input and output folded together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Get(State),
    /// The revision is the answer's or, for an unknown outcome, the one a read observed
    /// for the value (or a placeholder).
    Put(Val, Rev),
    /// `Some(deleted)` when it answered.
    Delete(Option<bool>),
    Txn {
        cond: Cond,
        then: Effect,
        out: TxnOut,
    },
}

impl Step {
    /// The model: the state after this step, or `None` when its output is impossible here.
    pub(super) fn apply(&self, s: State) -> Option<State> {
        match *self {
            Step::Get(seen) => (seen == s).then_some(s),
            Step::Put(v, r) => Some(Some((v, r))),
            Step::Delete(Some(deleted)) if deleted != s.is_some() => None,
            Step::Delete(_) => Some(None),
            Step::Txn { cond, then, out } => {
                let holds = match cond {
                    Cond::ModRev(0) => s.is_none(),
                    Cond::ModRev(r) => s.is_some_and(|(_, m)| m == r),
                    Cond::Value(x) => s.is_some_and(|(v, _)| v == x),
                };
                let after = match (holds, then) {
                    (false, _) => s,
                    (true, Effect::Put(v, r)) => Some((v, r)),
                    (true, Effect::Delete) => None,
                };
                let ok = match out {
                    TxnOut::Unknown => true,
                    TxnOut::Succeeded => holds,
                    TxnOut::Failed => !holds,
                    TxnOut::FailedSaw(seen) => !holds && seen == s,
                };
                ok.then_some(after)
            }
        }
    }

    /// True when this step leaves the state unchanged whatever it is (given its output):
    /// removing it from a history can only make the history easier to linearize.
    pub(super) fn is_observer(&self) -> bool {
        matches!(
            self,
            Step::Get(_)
                | Step::Delete(Some(false))
                | Step::Txn {
                    out: TxnOut::Failed | TxnOut::FailedSaw(_),
                    ..
                }
        )
    }

    /// The same operation with its answer forgotten (`None` for a read: nothing left).
    pub(super) fn forget_output(&self) -> Option<Step> {
        match *self {
            Step::Get(_) => None,
            Step::Put(..) => Some(*self),
            Step::Delete(_) => Some(Step::Delete(None)),
            Step::Txn { cond, then, .. } => Some(Step::Txn {
                cond,
                then,
                out: TxnOut::Unknown,
            }),
        }
    }
}

/// One key's operations in model form, sorted by call time.
#[derive(Clone, Debug)]
pub(super) struct Problem {
    pub(super) steps: Vec<Step>,
    pub(super) call: Vec<u64>,
    /// `u64::MAX`: unknown outcome.
    pub(super) ret: Vec<u64>,
    /// Index of each operation in the checked history.
    pub(super) hist: Vec<usize>,
    /// True where the shrinker turned a known outcome into an unknown one.
    pub(super) relaxed: Vec<bool>,
    /// The value behind each interned id.
    pub(super) names: std::sync::Arc<Vec<String>>,
}

impl Problem {
    pub(super) fn len(&self) -> usize {
        self.steps.len()
    }

    pub(super) fn empty(names: std::sync::Arc<Vec<String>>) -> Problem {
        Problem {
            steps: vec![],
            call: vec![],
            ret: vec![],
            hist: vec![],
            relaxed: vec![],
            names,
        }
    }

    pub(super) fn push(&mut self, step: Step, call: u64, ret: u64, hist: usize, relaxed: bool) {
        self.steps.push(step);
        self.call.push(call);
        self.ret.push(ret);
        self.hist.push(hist);
        self.relaxed.push(relaxed);
    }

    pub(super) fn subset(&self, keep: impl Fn(usize) -> bool) -> Problem {
        let mut p = Problem::empty(self.names.clone());
        for i in (0..self.len()).filter(|&i| keep(i)) {
            p.push(
                self.steps[i],
                self.call[i],
                self.ret[i],
                self.hist[i],
                self.relaxed[i],
            );
        }
        p
    }

    /// Drops what was called after `t`; operations still running at `t` lose their answer.
    /// Sound: if the original is linearizable, so is this (see the module docs).
    pub(super) fn truncated(&self, t: u64) -> Problem {
        let mut p = Problem::empty(self.names.clone());
        for i in (0..self.len()).filter(|&i| self.call[i] <= t) {
            let (mut step, mut ret, mut relaxed) = (self.steps[i], self.ret[i], self.relaxed[i]);
            if ret != u64::MAX && ret > t {
                // a read still running at t tells nothing any more
                let Some(forgotten) = step.forget_output() else {
                    continue;
                };
                (step, ret, relaxed) = (forgotten, u64::MAX, true);
            }
            p.push(step, self.call[i], ret, self.hist[i], relaxed);
        }
        p
    }
}

/// Interns a key's values as small integers.
#[derive(Default)]
struct Interner<'h> {
    ids: HashMap<&'h str, Val>,
    names: Vec<&'h str>,
}

impl<'h> Interner<'h> {
    fn id(&mut self, v: &'h str) -> Val {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.names.len() as Val;
        self.ids.insert(v, id);
        self.names.push(v);
        id
    }
}

/// Builds a key's [`Problem`], sorted by call time. `Err`: an anomaly found without any
/// search (a value acknowledged or observed with two different mod revisions).
pub(super) fn prepare(
    history: &[Operation],
    idxs: &[usize],
    origin: u64,
) -> Result<Problem, String> {
    let mut writer: HashMap<&str, usize> = HashMap::new();
    for &i in idxs {
        if let Some(v) = history[i].written_value() {
            if let Some(&j) = writer.get(v) {
                panic!(
                    "bad history: value {v:?} written to key {:?} twice (operations {j} and {i}); \
                     the checker needs the values written to a key to be unique",
                    history[i].key
                );
            }
            writer.insert(v, i);
        }
    }
    // Every (value, revision) fact the answers establish.
    let mut facts: Vec<(&str, Rev, usize)> = Vec::new();
    for &i in idxs {
        let op = &history[i];
        match (&op.input, &op.output) {
            (Input::Put { value }, Output::Put { revision }) => facts.push((value, *revision, i)),
            (
                Input::Txn {
                    then: Then::Put { value },
                    ..
                },
                Output::Txn {
                    succeeded: true,
                    header_revision,
                    ..
                },
            ) => facts.push((value, *header_revision, i)),
            _ => {}
        }
        match &op.output {
            Output::Get { kv: Some(kv), .. }
            | Output::Txn {
                else_kv: Some(Some(kv)),
                ..
            } => facts.push((&kv.value, kv.mod_revision, i)),
            _ => {}
        }
    }
    let mut rev_of: HashMap<&str, (Rev, usize)> = HashMap::new();
    for (v, r, i) in facts {
        match rev_of.get(v) {
            Some(&(r0, j)) if r0 != r => {
                return Err(format!(
                    "value {v:?} of key {:?} seen with two mod revisions, {r0} and {r}:\n    {}\n    {}",
                    history[i].key,
                    describe(history, j, origin, false),
                    describe(history, i, origin, false)
                ));
            }
            Some(_) => {}
            None => {
                rev_of.insert(v, (r, i));
            }
        }
    }

    let mut values = Interner::default();
    let mut order: Vec<usize> = idxs.to_vec();
    order.sort_by_key(|&i| (history[i].call, i));
    let mut p = Problem::empty(Default::default());
    for i in order {
        let op = &history[i];
        // unknown writes take the revision a read observed, or a placeholder no compare matches
        let rev = |v: &str| rev_of.get(v).map(|&(r, _)| r).unwrap_or(-(1 + i as Rev));
        let step = match (&op.input, &op.output) {
            (Input::Get, Output::Unknown) => continue, // constrains nothing
            (Input::Get, Output::Get { kv, .. }) => Step::Get(state_of(kv, &mut values)),
            (Input::Put { value }, Output::Unknown | Output::Put { .. }) => {
                Step::Put(values.id(value), rev(value))
            }
            (Input::Delete, Output::Unknown) => Step::Delete(None),
            (Input::Delete, Output::Delete { deleted, .. }) => Step::Delete(Some(*deleted)),
            (Input::Txn { compare, then, .. }, out @ (Output::Unknown | Output::Txn { .. })) => {
                let cond = match compare {
                    Compare::ModRevision(r) => Cond::ModRev(*r),
                    Compare::Value(x) => Cond::Value(values.id(x)),
                };
                let then = match then {
                    Then::Put { value } => Effect::Put(values.id(value), rev(value)),
                    Then::Delete => Effect::Delete,
                };
                let out = match out {
                    Output::Txn {
                        succeeded: true, ..
                    } => TxnOut::Succeeded,
                    Output::Txn {
                        else_kv: Some(kv), ..
                    } => TxnOut::FailedSaw(state_of(kv, &mut values)),
                    Output::Txn { .. } => TxnOut::Failed,
                    _ => TxnOut::Unknown,
                };
                Step::Txn { cond, then, out }
            }
            _ => panic!(
                "bad history: operation {i} has an output of another kind than its input: {op:?}"
            ),
        };
        p.push(step, op.call, op.ret.unwrap_or(u64::MAX), i, false);
    }
    p.names = std::sync::Arc::new(values.names.iter().map(|n| n.to_string()).collect());
    Ok(p)
}

fn state_of<'h>(kv: &'h Option<Kv>, values: &mut Interner<'h>) -> State {
    kv.as_ref()
        .map(|kv| (values.id(&kv.value), kv.mod_revision))
}
