//! The Wing–Gong search over a doubly linked list of call and return entries, with
//! porcupine's cache of (linearized set, state) pairs.

use std::collections::HashSet;
use std::time::Instant;

use super::model::{Problem, State};

pub(super) struct Budget {
    pub(super) steps: u64,
    pub(super) deadline: Instant,
}

pub(super) enum Outcome {
    /// A legal order (indexes into the problem).
    Linearizable(Vec<usize>),
    /// `deepest`: the longest partial linearization met (when asked for).
    Illegal {
        deepest: Vec<usize>,
    },
    GaveUp(String),
}

const NIL: u32 = u32::MAX;

/// An entry of the call/return list. Node 0 is the head.
#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    op: u32,
    /// For a call: its return's node. For a return: NIL.
    ret_node: u32,
}

struct Entries {
    nodes: Vec<Node>,
}

impl Entries {
    fn new(p: &Problem) -> Entries {
        let n = p.len();
        let mut order: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * n);
        for i in 0..n {
            order.push((p.call[i], false, i as u32));
            order.push((p.ret[i], true, i as u32));
        }
        // calls before returns at the same time: touching operations are concurrent
        order.sort_unstable();
        let mut nodes = vec![
            Node {
                prev: NIL,
                next: NIL,
                op: NIL,
                ret_node: NIL
            };
            2 * n + 1
        ];
        let mut ret_node = vec![NIL; n];
        for (k, &(_, is_ret, op)) in order.iter().enumerate() {
            let id = k as u32 + 1;
            nodes[id as usize] = Node {
                prev: id - 1,
                next: if k + 1 < order.len() { id + 1 } else { NIL },
                op,
                ret_node: NIL,
            };
            if is_ret {
                ret_node[op as usize] = id;
            }
        }
        nodes[0].next = if order.is_empty() { NIL } else { 1 };
        for (k, &(_, is_ret, op)) in order.iter().enumerate() {
            if !is_ret {
                nodes[k + 1].ret_node = ret_node[op as usize];
            }
        }
        Entries { nodes }
    }

    fn unlink(&mut self, e: u32) {
        let Node { prev, next, .. } = self.nodes[e as usize];
        self.nodes[prev as usize].next = next;
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn relink(&mut self, e: u32) {
        let Node { prev, next, .. } = self.nodes[e as usize];
        self.nodes[prev as usize].next = e;
        if next != NIL {
            self.nodes[next as usize].prev = e;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(self.nodes[call as usize].ret_node);
    }

    /// Undoes the matching `lift` (they must be undone in reverse order).
    fn unlift(&mut self, call: u32) {
        self.relink(self.nodes[call as usize].ret_node);
        self.relink(call);
    }
}

/// A random word per operation for the Zobrist hash of the linearized set (fixed seed:
/// runs are reproducible).
fn zobrist(n: usize) -> Vec<u128> {
    let mut rng = crate::support::rng::Rng::new(0x5eed_2b1a);
    (0..n)
        .map(|_| ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128)
        .collect()
}

/// The Wing–Gong search with porcupine's cache. Returns the outcome and the steps taken.
pub(super) fn search(p: &Problem, budget: &Budget, want_deepest: bool) -> (Outcome, u64) {
    let mut list = Entries::new(p);
    let z = zobrist(p.len());
    let mut cache: HashSet<(u128, State)> = HashSet::new();
    let mut stack: Vec<(u32, State)> = Vec::new();
    let mut deepest: Vec<usize> = Vec::new();
    let (mut state, mut linearized): (State, u128) = (None, 0);
    let mut entry = list.nodes[0].next;
    let mut steps = 0u64;
    loop {
        if list.nodes[0].next == NIL {
            let order = stack
                .iter()
                .map(|&(e, _)| list.nodes[e as usize].op as usize)
                .collect();
            return (Outcome::Linearizable(order), steps);
        }
        steps += 1;
        if steps > budget.steps {
            return (
                Outcome::GaveUp(format!("step budget of {} exhausted", budget.steps)),
                steps,
            );
        }
        if steps % 4096 == 0 && Instant::now() > budget.deadline {
            return (Outcome::GaveUp("time budget exhausted".into()), steps);
        }
        let node = list.nodes[entry as usize];
        if node.ret_node != NIL {
            // a call: try to linearize it now
            let op = node.op as usize;
            if let Some(next_state) = p.steps[op].apply(state) {
                let next_set = linearized ^ z[op];
                if cache.insert((next_set, next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    linearized = next_set;
                    list.lift(entry);
                    entry = list.nodes[0].next;
                    continue;
                }
            }
            entry = node.next;
        } else {
            // a return whose operation could not be linearized in time: backtrack
            if want_deepest && stack.len() > deepest.len() {
                deepest = stack
                    .iter()
                    .map(|&(e, _)| list.nodes[e as usize].op as usize)
                    .collect();
            }
            let Some((call, prev_state)) = stack.pop() else {
                return (Outcome::Illegal { deepest }, steps);
            };
            state = prev_state;
            linearized ^= z[list.nodes[call as usize].op as usize];
            list.unlift(call);
            entry = list.nodes[call as usize].next;
        }
    }
}
