//! Requests waiting on the log: proposals (matched to applied entries by request id,
//! never by position), membership changes, and batched ReadIndex rounds.
//!
//! Every waiter has a deadline in ticks; [`Pending::expire`] answers
//! [`RequestError::Timeout`] past it (a proposal lost with a deposed leader never applies).

use std::collections::HashMap;

use raft::eraftpb::ConfState;
use tokio::sync::oneshot;

use super::handle::{ProposeResult, RequestError};

/// Request ids unique to this node, in etcd's layout: the low 16 bits of the node id, then
/// 48 bits of a counter that starts at the wall clock in milliseconds (its low 40 bits,
/// ~35 years) shifted left by 8, so each millisecond since the start leaves room for 256
/// ids before a later start could hand out an id again.
///
/// Across restarts the clock keeps ids apart; [`IdGen::observe`] closes the remaining gap:
/// at open the node passes every id of its log tail (entries the previous run proposed
/// that may still be applied), and the counter starts above those of its own prefix, so a
/// new proposal never shares an id with an entry still to be applied. The 48-bit counter
/// does not wrap in practice (2^48 ids).
#[derive(Debug)]
pub struct IdGen {
    prefix: u64,
    next: u64,
}

const LOW48: u64 = (1 << 48) - 1;
const LOW40: u64 = (1 << 40) - 1;

impl IdGen {
    /// A generator for node `id`, started at `clock_ms` (milliseconds since the Unix
    /// epoch; any value that grows across restarts works).
    pub fn new(id: u64, clock_ms: u64) -> Self {
        IdGen { prefix: (id & 0xffff) << 48, next: (clock_ms & LOW40) << 8 }
    }

    /// Takes note of an id already in use: if it carries this node's prefix, later ids
    /// are above it.
    pub fn observe(&mut self, used: u64) {
        if used & !LOW48 == self.prefix {
            self.next = self.next.max((used & LOW48) + 1);
        }
    }

    /// The next id (never 0).
    pub fn next_id(&mut self) -> u64 {
        loop {
            let id = self.prefix | (self.next & LOW48);
            self.next = self.next.wrapping_add(1);
            if id != 0 {
                return id;
            }
        }
    }
}

struct Waiter<T> {
    tx: oneshot::Sender<Result<T, RequestError>>,
    deadline: u64,
}

struct Round {
    ctx: Vec<u8>,
    started: u64,
    waiters: Vec<Waiter<u64>>,
}

/// Everything waiting on this node.
pub struct Pending<O> {
    proposals: HashMap<u64, Waiter<O>>,
    conf_changes: HashMap<u64, Waiter<ConfState>>,
    /// Reads not yet in a round: they join the next one.
    queued: Vec<Waiter<u64>>,
    /// The round in flight (one at a time, so that reads arriving meanwhile batch up).
    round: Option<Round>,
    /// Reads with a read index, waiting for the apply to reach it.
    ready: Vec<(u64, Vec<Waiter<u64>>)>,
    round_seq: u64,
    node_id: u64,
}

impl<O> Pending<O> {
    /// Nothing pending, for node `node_id`.
    pub fn new(node_id: u64) -> Self {
        Pending {
            proposals: HashMap::new(),
            conf_changes: HashMap::new(),
            queued: Vec::new(),
            round: None,
            ready: Vec::new(),
            round_seq: 0,
            node_id,
        }
    }

    /// Whether a proposal with this id is waiting.
    pub fn has_proposal(&self, id: u64) -> bool {
        self.proposals.contains_key(&id)
    }

    /// Waits for the entry carrying request `id`.
    pub fn add_proposal(&mut self, id: u64, tx: oneshot::Sender<ProposeResult<O>>, deadline: u64) {
        self.proposals.insert(id, Waiter { tx, deadline });
    }

    /// Answers the proposal `id`, if it was made here.
    pub fn complete_proposal(&mut self, id: u64, result: ProposeResult<O>) {
        if let Some(w) = self.proposals.remove(&id) {
            let _receiver_may_be_gone = w.tx.send(result);
        }
    }

    /// Brings every waiting proposal's deadline forward to `deadline` at the latest (the
    /// leader changed: a proposal the new leader has is committed well before it; one that
    /// was lost with the old leader is answered `Timeout` then, not after the full request
    /// timeout).
    pub fn hasten_proposals(&mut self, deadline: u64) {
        for w in self.proposals.values_mut() {
            w.deadline = w.deadline.min(deadline);
        }
    }

    /// Waits for the conf change with context `id`.
    pub fn add_conf_change(&mut self, id: u64, tx: oneshot::Sender<Result<ConfState, RequestError>>, deadline: u64) {
        self.conf_changes.insert(id, Waiter { tx, deadline });
    }

    /// Answers the conf change `id`, if it was made here.
    pub fn complete_conf_change(&mut self, id: u64, cs: ConfState) {
        if let Some(w) = self.conf_changes.remove(&id) {
            let _receiver_may_be_gone = w.tx.send(Ok(cs));
        }
    }

    /// Queues a read for the next round.
    pub fn add_read(&mut self, tx: oneshot::Sender<Result<u64, RequestError>>, deadline: u64) {
        self.queued.push(Waiter { tx, deadline });
    }

    /// If no round is in flight and reads are queued, starts one: returns its context for
    /// `RawNode::read_index`.
    pub fn start_round(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.round.is_some() || self.queued.is_empty() {
            return None;
        }
        self.round_seq += 1;
        let mut ctx = self.node_id.to_be_bytes().to_vec();
        ctx.extend_from_slice(&self.round_seq.to_be_bytes());
        let waiters = std::mem::take(&mut self.queued);
        self.round = Some(Round { ctx: ctx.clone(), started: now, waiters });
        Some(ctx)
    }

    /// Fails every queued read (no leader to ask).
    pub fn fail_queued_reads(&mut self, err: RequestError) {
        for w in self.queued.drain(..) {
            let _receiver_may_be_gone = w.tx.send(Err(err.clone()));
        }
    }

    /// The round in flight gets no answer (the leader changed, or it was lost): its reads
    /// go back to the queue, ahead of newer ones, for the next round.
    pub fn retry_round(&mut self) {
        if let Some(r) = self.round.take() {
            let newer = std::mem::replace(&mut self.queued, r.waiters);
            self.queued.extend(newer);
        }
    }

    /// Ticks since the round in flight started.
    pub fn round_age(&self, now: u64) -> Option<u64> {
        self.round.as_ref().map(|r| now - r.started)
    }

    /// raft answered a ReadIndex round: its reads now wait for `index` to be applied.
    pub fn read_state(&mut self, ctx: &[u8], index: u64) {
        if self.round.as_ref().is_some_and(|r| r.ctx == ctx) {
            if let Some(r) = self.round.take() {
                self.ready.push((index, r.waiters));
            }
        }
    }

    /// Answers the reads whose index is applied.
    pub fn applied(&mut self, applied: u64) {
        self.ready.retain_mut(|(index, waiters)| {
            if *index > applied {
                return true;
            }
            for w in waiters.drain(..) {
                let _receiver_may_be_gone = w.tx.send(Ok(*index));
            }
            false
        });
    }

    /// Answers `Timeout` to every waiter past its deadline, and forgets waiters whose
    /// receiver is gone. Returns how many proposals it answered or forgot so.
    pub fn expire(&mut self, now: u64) -> usize {
        fn sweep<T>(ws: &mut Vec<Waiter<T>>, now: u64) {
            let mut i = 0;
            while i < ws.len() {
                if ws[i].deadline <= now || ws[i].tx.is_closed() {
                    let w = ws.swap_remove(i);
                    let _receiver_may_be_gone = w.tx.send(Err(RequestError::Timeout));
                } else {
                    i += 1;
                }
            }
        }
        fn sweep_map<T>(m: &mut HashMap<u64, Waiter<T>>, now: u64) -> usize {
            let dead: Vec<u64> =
                m.iter().filter(|(_, w)| w.deadline <= now || w.tx.is_closed()).map(|(id, _)| *id).collect();
            for id in &dead {
                if let Some(w) = m.remove(id) {
                    let _receiver_may_be_gone = w.tx.send(Err(RequestError::Timeout));
                }
            }
            dead.len()
        }
        let failed = sweep_map(&mut self.proposals, now);
        sweep_map(&mut self.conf_changes, now);
        sweep(&mut self.queued, now);
        if let Some(r) = &mut self.round {
            sweep(&mut r.waiters, now);
            if r.waiters.is_empty() {
                self.round = None;
            }
        }
        for (_, ws) in &mut self.ready {
            sweep(ws, now);
        }
        self.ready.retain(|(_, ws)| !ws.is_empty());
        failed
    }

    /// Proposals waiting to be applied.
    pub fn proposal_count(&self) -> usize {
        self.proposals.len()
    }

    /// Requests in flight (for tests and metrics): proposals, conf changes, reads.
    pub fn counts(&self) -> (usize, usize, usize) {
        let reads = self.queued.len()
            + self.round.as_ref().map_or(0, |r| r.waiters.len())
            + self.ready.iter().map(|(_, w)| w.len()).sum::<usize>();
        (self.proposals.len(), self.conf_changes.len(), reads)
    }
}

#[cfg(test)]
mod id_tests {
    use super::IdGen;

    #[test]
    fn ids_carry_the_node_prefix_and_the_clock() {
        let mut g = IdGen::new(0x1234_5678_9abc_def0, 1_700_000_000_000);
        let a = g.next_id();
        assert_eq!(a >> 48, 0xdef0);
        assert_eq!(a & ((1 << 48) - 1), (1_700_000_000_000u64 & ((1 << 40) - 1)) << 8);
        assert_eq!(g.next_id(), a + 1);
    }

    #[test]
    fn a_later_start_never_repeats_an_earlier_run() {
        // a run that proposed fewer than 256 ids per millisecond since it started
        let mut first = IdGen::new(7, 1_000);
        let used: Vec<u64> = (0..255).map(|_| first.next_id()).collect();
        let mut second = IdGen::new(7, 1_001);
        let next = second.next_id();
        assert!(used.iter().all(|&u| u < next));
    }

    #[test]
    fn observed_ids_of_this_node_push_the_counter_past_them() {
        let mut old = IdGen::new(7, 1_000);
        // a burst: more ids than the clock accounts for
        let burst: Vec<u64> = (0..10_000).map(|_| old.next_id()).collect();
        let mut other = IdGen::new(8, 5_000);
        let foreign = other.next_id();
        let mut g = IdGen::new(7, 1_001);
        for &id in burst.iter().chain([&foreign]) {
            g.observe(id);
        }
        let next = g.next_id();
        assert!(burst.iter().all(|&u| u < next), "new ids start above the burst");
        // another node's id does not move this counter beyond what its own ids need
        assert_eq!(next, burst.last().unwrap() + 1);
    }

    #[test]
    fn ids_no_longer_repeat_after_fifty_days() {
        // the old scheme kept ms mod 2^32 (~49.7 days); two starts 2^32 ms apart differ now
        let a = IdGen::new(7, 1_000).next_id();
        let b = IdGen::new(7, 1_000 + (1u64 << 32)).next_id();
        assert_ne!(a, b);
    }
}
