//! An in-process network for deterministic cluster tests: nodes send through
//! [`SimTransport`]s into one [`SimNet`], which delivers to their [`Mailbox`]es. On command
//! it drops, delays and duplicates messages (drawn from a seeded generator), cuts links
//! (partitions, isolation, one-way blocks), and heals. Given the seed and the order of calls
//! (ticks, routing, node polls), every run is the same.
//!
//! Snapshot messages that are cut or dropped are reported to the sender as failed
//! ([`Mailbox::report_snapshot`]), delivered ones as finished; messages cut by a partition
//! are reported as unreachable, as a real transport reports a failed connection. Random
//! drops are silent (a lost packet).
//!
//! Duplication hits every message type, forwarded proposals (`MsgPropose`) included: such a
//! proposal is then committed and applied twice, deterministically on every member, and
//! answered once. A stream transport never duplicates; making a *client's* retry
//! idempotent is the state machine's business, as in etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use raft::eraftpb::{Message, MessageType};

use crate::node::{Mailbox, Transport};

/// A small deterministic generator (splitmix64).
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.next_u64() % 1000 < u64::from(per_mille)
    }
}

/// The fault settings of a [`SimNet`].
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Chance, per mille, that a message is lost.
    pub drop_per_mille: u32,
    /// Chance, per mille, that a message is delivered twice.
    pub dup_per_mille: u32,
    /// Smallest delay in ticks (0: delivered at the next routing).
    pub min_delay: u64,
    /// Largest delay in ticks.
    pub max_delay: u64,
}

struct InFlight {
    at: u64,
    seq: u64,
    msg: Message,
}

/// The sending half a node owns.
pub struct SimTransport {
    outbox: Arc<Mutex<Vec<Message>>>,
}

impl Transport for SimTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        // a poisoned lock means a test thread panicked; the test is failing anyway
        if let Ok(mut out) = self.outbox.lock() {
            out.extend(msgs);
        }
    }
}

/// The simulated network (see the module docs).
pub struct SimNet {
    rng: SimRng,
    faults: Faults,
    now: u64,
    seq: u64,
    outbox: Arc<Mutex<Vec<Message>>>,
    in_flight: Vec<InFlight>,
    mailboxes: BTreeMap<u64, Mailbox>,
    /// Cut links, directed (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// Message types held back on their way to a node: (to, type).
    holds: BTreeSet<(u64, i32)>,
    held: Vec<Message>,
    /// Messages sent, by (from, type).
    sent: BTreeMap<(u64, i32), u64>,
    delivered: u64,
    dropped: u64,
}

impl SimNet {
    /// A network with no faults, drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        SimNet {
            rng: SimRng::new(seed),
            faults: Faults::default(),
            now: 0,
            seq: 0,
            outbox: Arc::new(Mutex::new(Vec::new())),
            in_flight: Vec::new(),
            mailboxes: BTreeMap::new(),
            cut: BTreeSet::new(),
            holds: BTreeSet::new(),
            held: Vec::new(),
            sent: BTreeMap::new(),
            delivered: 0,
            dropped: 0,
        }
    }

    /// A transport for a node to send with.
    pub fn transport(&self) -> SimTransport {
        SimTransport { outbox: self.outbox.clone() }
    }

    /// Connects node `id` (again, after a restart) to receive through `mailbox`.
    pub fn register(&mut self, id: u64, mailbox: Mailbox) {
        self.mailboxes.insert(id, mailbox);
    }

    /// Disconnects node `id` (crashed): messages to it are lost.
    pub fn unregister(&mut self, id: u64) {
        self.mailboxes.remove(&id);
    }

    /// Sets the random faults.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Splits the network: nodes in different groups cannot reach each other. Nodes in
    /// no group keep their links.
    pub fn partition(&mut self, groups: &[&[u64]]) {
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a.iter() {
                    for &y in b.iter() {
                        self.cut.insert((x, y));
                        self.cut.insert((y, x));
                    }
                }
            }
        }
    }

    /// Cuts `id` off from every registered node.
    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.mailboxes.keys().copied().filter(|&o| o != id).collect();
        self.partition(&[&[id], &others]);
    }

    /// Cuts the link from `from` to `to` only.
    pub fn block(&mut self, from: u64, to: u64) {
        self.cut.insert((from, to));
    }

    /// Holds back messages of type `t` on their way to `to` — kept, not lost — until
    /// [`SimNet::release`] (e.g. appends, while heartbeats still flow).
    pub fn hold(&mut self, to: u64, t: MessageType) {
        self.holds.insert((to, t as i32));
    }

    /// Ends every hold; the held messages are delivered at the next routing.
    pub fn release(&mut self) {
        self.holds.clear();
        for msg in std::mem::take(&mut self.held) {
            self.seq += 1;
            self.in_flight.push(InFlight { at: self.now, seq: self.seq, msg });
        }
    }

    /// How many messages of type `t` node `from` has sent.
    pub fn sent(&self, from: u64, t: MessageType) -> u64 {
        self.sent.get(&(from, t as i32)).copied().unwrap_or(0)
    }

    /// Restores every link (random faults stay as set).
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Advances the network clock by one tick.
    pub fn advance(&mut self) {
        self.now += 1;
    }

    /// Messages delivered and dropped so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.delivered, self.dropped)
    }

    fn report(&self, msg: &Message, delivered: bool, unreachable: bool) {
        if let Some(mb) = self.mailboxes.get(&msg.from) {
            if msg.msg_type == MessageType::MsgSnapshot as i32 {
                mb.report_snapshot(msg.to, delivered);
            }
            if unreachable {
                mb.report_unreachable(msg.to);
            }
        }
    }

    /// Takes what nodes sent, schedules it (or drops it), and delivers every message that
    /// is due. Returns the number delivered.
    pub fn route(&mut self) -> usize {
        let sent = match self.outbox.lock() {
            Ok(mut out) => std::mem::take(&mut *out),
            Err(_) => Vec::new(),
        };
        for msg in sent {
            *self.sent.entry((msg.from, msg.msg_type)).or_default() += 1;
            if self.holds.contains(&(msg.to, msg.msg_type)) {
                self.held.push(msg);
                continue;
            }
            if self.cut.contains(&(msg.from, msg.to)) {
                self.dropped += 1;
                self.report(&msg, false, true);
                continue;
            }
            if self.rng.chance(self.faults.drop_per_mille) {
                self.dropped += 1;
                self.report(&msg, false, false);
                continue;
            }
            let copies = if self.rng.chance(self.faults.dup_per_mille) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.now + self.rng.range(self.faults.min_delay, self.faults.max_delay);
                self.seq += 1;
                self.in_flight.push(InFlight { at, seq: self.seq, msg: msg.clone() });
            }
        }
        let now = self.now;
        let (mut due, later): (Vec<InFlight>, Vec<InFlight>) = self.in_flight.drain(..).partition(|m| m.at <= now);
        self.in_flight = later;
        due.sort_by_key(|m| (m.at, m.seq));
        let mut n = 0;
        for InFlight { msg, .. } in due {
            // a link cut while the message was on its way loses it too
            let reachable = !self.cut.contains(&(msg.from, msg.to));
            match self.mailboxes.get(&msg.to) {
                Some(mb) if reachable => {
                    let snapshot = msg.msg_type == MessageType::MsgSnapshot as i32;
                    let (from, to) = (msg.from, msg.to);
                    mb.deliver(msg);
                    if snapshot {
                        if let Some(src) = self.mailboxes.get(&from) {
                            src.report_snapshot(to, true);
                        }
                    }
                    self.delivered += 1;
                    n += 1;
                }
                _ => {
                    self.dropped += 1;
                    self.report(&msg, false, !reachable);
                }
            }
        }
        n
    }
}
