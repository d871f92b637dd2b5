//! The raft state as WAL records, and rebuilding it from them.
//!
//! # Record kinds
//! Every record's payload is one protobuf message of raft-rs's `eraftpb` (prost-encoded):
//!
//! | kind | name         | payload            | meaning on replay |
//! |------|--------------|--------------------|-------------------|
//! | 1    | `ENTRY`      | `Entry`            | the log entry at `entry.index`; it first truncates every entry ≥ that index (a new leader overwrote them) |
//! | 2    | `HARD_STATE` | `HardState`        | replaces the hard state (term, vote, commit) |
//! | 3    | `CONF_STATE` | `SnapshotMetadata` | the conf state (`conf_state`) in force from the entry `index` on (`term` unused) |
//! | 4    | `SNAPSHOT`   | `SnapshotMetadata` | a snapshot received from the leader was installed at `index`/`term`: the whole log is replaced; its data is in the snapshot file (`snapfile.rs`) |
//! | 5    | `COMPACT`    | `SnapshotMetadata` | the log was compacted behind `index`/`term`: entries ≤ `index` are gone, `conf_state` was in force at `index` |
//! | 6    | `ENTRY_COPY` | `Entry`            | a live entry copied into a fresh segment by a compaction that cuts (`WalStorage::compact_and_cut`): if the log holds `entry.index` already it must have the same term, and only its position moves (nothing is truncated); otherwise it is appended |
//!
//! # The record index is a sequence number
//! The WAL requires record indexes that never go down (a segment holds indexes ≥ its first).
//! Raft log indexes do go down when a new leader truncates a follower's tail, so the WAL
//! record index here is a *position*: 1, 2, 3, … for every record ever appended. The raft
//! index is inside the payload. Compaction re-appends the current state (COMPACT, the conf
//! states after it, the hard state) and then releases every segment whose positions are all
//! below the first live entry's position (see `WalStorage::compact`).
//!
//! A compaction that cuts (`WalStorage::compact_and_cut`) writes the same records into a
//! fresh segment, followed by an `ENTRY_COPY` of every live entry, so that every older
//! segment can go. A copy never truncates: if power fails while the copies are being
//! written, the WAL keeps a prefix of them (a torn tail is cut at open) and the older
//! segments still hold the rest; an `ENTRY` record there would truncate the log at the
//! first copy and lose the entries after the last one that survived. After such a
//! replay the entries' positions are no longer in index order: the oldest position
//! needed is the smallest of them, not the first entry's.

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft_prost::Message as _;

use super::StorageError;
use crate::wal::WalRecord;

/// A log entry.
pub const ENTRY: u8 = 1;
/// The hard state.
pub const HARD_STATE: u8 = 2;
/// A conf state and the index from which it holds.
pub const CONF_STATE: u8 = 3;
/// An installed snapshot's metadata.
pub const SNAPSHOT: u8 = 4;
/// A compaction point.
pub const COMPACT: u8 = 5;
/// A live entry copied into a fresh segment (never truncates).
pub const ENTRY_COPY: u8 = 6;

/// Everything the WAL says about the raft state.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The last hard state.
    pub hard_state: HardState,
    /// The compaction or installed-snapshot point: entries ≤ `snap.index` are gone.
    pub snap: SnapshotMetadata,
    /// Conf states by the index from which each holds, oldest first.
    pub conf_states: Vec<(u64, ConfState)>,
    /// Live entries, contiguous, starting at `snap.index + 1`.
    pub entries: Vec<Entry>,
    /// WAL position of each live entry's record.
    pub entry_pos: Vec<u64>,
    /// Index of the last snapshot installed from a leader, if no compaction came after it.
    pub installed: Option<u64>,
    /// Highest WAL position seen.
    pub last_pos: u64,
    /// The replay started in the middle of the log (older segments were released); a
    /// `COMPACT` record later in the WAL must say where the log starts.
    headless: bool,
}

fn corrupt(rec: &WalRecord, detail: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { pos: rec.index, kind: rec.kind, detail: detail.to_string() }
}

impl Recovered {
    /// Replays the records in order.
    pub fn replay(records: &[WalRecord]) -> Result<Recovered, StorageError> {
        let mut r = Recovered::default();
        for rec in records {
            r.last_pos = r.last_pos.max(rec.index);
            match rec.kind {
                ENTRY | ENTRY_COPY => {
                    let e = Entry::decode(rec.data.as_slice()).map_err(|e| corrupt(rec, e))?;
                    if rec.kind == ENTRY_COPY && e.index > r.snap.index && e.index <= r.last_index() {
                        r.copy_entry(e, rec.index).map_err(|d| corrupt(rec, d))?;
                        continue;
                    }
                    // an entry, or a copy of one the log does not hold yet
                    if r.entries.is_empty() && r.snap.index == 0 && e.index > 1 && !r.headless {
                        // the segments before this one were released behind a compaction
                        // whose record comes later: the run of entries kept starts here
                        r.snap.index = e.index - 1;
                        r.headless = true;
                    } else if r.headless && e.index <= r.snap.index {
                        // an overwrite reaching below where the kept run started: the log
                        // goes on from this entry (the compaction record will cut it)
                        r.entries.clear();
                        r.entry_pos.clear();
                        r.snap.index = e.index - 1;
                    }
                    r.push_entry(e, rec.index).map_err(|d| corrupt(rec, d))?;
                }
                HARD_STATE => r.hard_state = HardState::decode(rec.data.as_slice()).map_err(|e| corrupt(rec, e))?,
                CONF_STATE => {
                    let m = SnapshotMetadata::decode(rec.data.as_slice()).map_err(|e| corrupt(rec, e))?;
                    r.conf_states.retain(|(i, _)| *i < m.index);
                    r.conf_states.push((m.index, m.conf_state.unwrap_or_default()));
                }
                SNAPSHOT => {
                    let m = SnapshotMetadata::decode(rec.data.as_slice()).map_err(|e| corrupt(rec, e))?;
                    r.install(m);
                }
                COMPACT => {
                    let m = SnapshotMetadata::decode(rec.data.as_slice()).map_err(|e| corrupt(rec, e))?;
                    r.compact(m);
                }
                k => return Err(corrupt(rec, format!("unknown record kind {k}"))),
            }
        }
        if r.headless {
            return Err(StorageError::Corrupt {
                pos: 0,
                kind: ENTRY,
                detail: format!("the log starts at entry {} and no compaction record covers what is before", r.snap.index + 1),
            });
        }
        Ok(r)
    }

    /// Index of the last live entry (or of the snapshot if none).
    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snap.index, |e| e.index)
    }

    /// Appends `e`, truncating every entry at or after its index first.
    pub fn push_entry(&mut self, e: Entry, pos: u64) -> Result<(), String> {
        if e.index <= self.snap.index {
            // older than the compaction point: already covered by it
            return Ok(());
        }
        if e.index > self.last_index() + 1 {
            return Err(format!("entry {} leaves a gap after {}", e.index, self.last_index()));
        }
        let keep = (e.index - self.snap.index - 1) as usize;
        self.entries.truncate(keep);
        self.entry_pos.truncate(keep);
        self.entries.push(e);
        self.entry_pos.push(pos);
        Ok(())
    }

    /// Replays an `ENTRY_COPY` of an entry the log holds: it keeps its place and everything
    /// after it, and takes the copy's position.
    fn copy_entry(&mut self, e: Entry, pos: u64) -> Result<(), String> {
        let at = (e.index - self.snap.index - 1) as usize;
        if self.entries[at].term != e.term {
            return Err(format!("copy of entry {} has term {}, the log holds term {}", e.index, e.term, self.entries[at].term));
        }
        self.entry_pos[at] = pos;
        Ok(())
    }

    /// The smallest WAL position of a live entry (positions are in index order except
    /// after a replay that met a partial run of copies, see the module docs).
    pub fn oldest_entry_pos(&self) -> Option<u64> {
        self.entry_pos.iter().copied().min()
    }

    /// A snapshot from the leader replaces the log.
    pub fn install(&mut self, mut m: SnapshotMetadata) {
        self.entries.clear();
        self.entry_pos.clear();
        self.hard_state.term = self.hard_state.term.max(m.term);
        self.hard_state.commit = self.hard_state.commit.max(m.index);
        self.conf_states = vec![(m.index, m.conf_state.take().unwrap_or_default())];
        self.installed = Some(m.index);
        self.headless = false;
        self.snap = m;
    }

    /// Drops entries ≤ `m.index`; `m.conf_state` becomes the base conf state.
    pub fn compact(&mut self, mut m: SnapshotMetadata) {
        if m.index < self.snap.index || (m.index == self.snap.index && !self.headless) {
            return;
        }
        let drop = ((m.index - self.snap.index) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.entry_pos.drain(..drop);
        self.conf_states.retain(|(i, _)| *i > m.index);
        self.conf_states.insert(0, (m.index, m.conf_state.take().unwrap_or_default()));
        if self.installed.is_some_and(|i| i <= m.index) {
            self.installed = None;
        }
        self.headless = false;
        self.snap = m;
    }

    /// The conf state in force at `index`.
    pub fn conf_state_at(&self, index: u64) -> ConfState {
        self.conf_states.iter().rev().find(|(i, _)| *i <= index).map(|(_, cs)| cs.clone()).unwrap_or_default()
    }
}

/// Encodes a conf state record.
pub fn conf_state_record(index: u64, cs: &ConfState) -> Vec<u8> {
    SnapshotMetadata { conf_state: Some(cs.clone()), index, term: 0 }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u8, pos: u64, data: Vec<u8>) -> WalRecord {
        WalRecord { kind, index: pos, data }
    }

    fn entry(pos: u64, index: u64, term: u64) -> WalRecord {
        rec(ENTRY, pos, Entry { index, term, ..Default::default() }.encode_to_vec())
    }

    #[test]
    fn released_head_with_an_overwrite_below_the_first_kept_entry() {
        // kept segments start with a stale entry 310, overwritten from 301 by a new leader;
        // the compaction at 300 comes last
        let mut recs = vec![entry(1, 310, 1)];
        for (p, i) in (2..).zip(301..=320) {
            recs.push(entry(p, i, 2));
        }
        let meta = SnapshotMetadata { conf_state: Some(ConfState::default()), index: 300, term: 1 };
        recs.push(rec(COMPACT, 100, meta.encode_to_vec()));
        let r = Recovered::replay(&recs).unwrap();
        assert_eq!((r.snap.index, r.last_index()), (300, 320));
        assert!(r.entries.iter().all(|e| e.term == 2));
        assert_eq!(r.entries[0].index, 301);
    }

    #[test]
    fn released_head_without_a_compaction_record_is_corrupt() {
        let recs = vec![entry(1, 50, 1), entry(2, 51, 1)];
        assert!(matches!(Recovered::replay(&recs), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn unknown_kind_is_corrupt() {
        assert!(matches!(Recovered::replay(&[rec(9, 1, vec![])]), Err(StorageError::Corrupt { .. })));
    }
}
