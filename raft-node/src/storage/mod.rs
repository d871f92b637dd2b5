//! raft-rs's [`Storage`] kept in our WAL.
//!
//! [`WalStorage`] holds the live log, the hard state and the conf states in memory and
//! appends every change to the WAL (record kinds and replay rules in `records.rs`); snapshot
//! data received from a leader goes to a snapshot file first (`snapfile.rs`). Appends are
//! durable only after [`WalStorage::sync`], which the driver calls before it sends
//! persisted messages or calls `advance`.
//!
//! # Snapshots
//! The storage records only snapshot *metadata* (index, term, conf state). The data comes
//! from a [`SnapshotSource`] (the state machine) when raft asks for a snapshot: the source
//! returns its state with the index it reflects, and the storage pairs it with the term of
//! that index and the conf state in force there. The log is compacted behind a point the
//! state machine has made durable ([`WalStorage::compact`], which deletes sealed segments
//! only; [`WalStorage::compact_and_cut`], which moves what is still needed into a fresh
//! segment so every older one goes, the active one included).
//!
//! # Contract
//! Single owner (the driver, through `RawNode::mut_store`); nothing here locks.

mod records;
mod snapfile;

use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};
use raft_prost::Message as _;

use crate::machine::SnapshotSource;
use crate::wal::{Wal, WalError, WalOptions};
use records::Recovered;

/// Errors of the raft storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The WAL failed (sticky).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A file-system error outside the WAL.
    #[error("raft storage i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A WAL record that does not decode or breaks the log's rules.
    #[error("raft storage corrupt: record at position {pos} (kind {kind}): {detail}")]
    Corrupt {
        /// The record's WAL position.
        pos: u64,
        /// The record kind.
        kind: u8,
        /// What is wrong.
        detail: String,
    },
    /// A snapshot file that fails its checks.
    #[error("raft storage corrupt: snapshot file {path}: {detail}")]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The WAL says a snapshot was installed but its data file is gone.
    #[error("raft storage: the data of the snapshot installed at {index} is missing")]
    MissingSnapshot {
        /// The snapshot index.
        index: u64,
    },
    /// `bootstrap` on a storage that already holds raft state.
    #[error("raft storage already initialized")]
    AlreadyInitialized,
    /// Entries that would leave a gap in the log (a broken raft invariant).
    #[error("raft storage: {0}")]
    LogGap(String),
    /// A snapshot at or behind the log's compaction point.
    #[error("raft storage: snapshot at {index} is not newer than the log's start {first}")]
    SnapshotOutOfDate {
        /// The snapshot index.
        index: u64,
        /// The first index the log holds.
        first: u64,
    },
    /// Compaction at an index the log does not hold.
    #[error("raft storage: cannot compact at {index}: log holds {first}..={last}")]
    CompactOutOfRange {
        /// The requested index.
        index: u64,
        /// The first index held.
        first: u64,
        /// The last index held.
        last: u64,
    },
}

/// Opens the raft storage in `dir` only to run [`WalStorage::force_new_cluster`] for member
/// `me`; `None` when it holds no raft state yet (a new member: nothing to force).
pub fn force_new_cluster(dir: &Path, opts: WalOptions, me: u64) -> Result<Option<Vec<u64>>, StorageError> {
    /// The storage is opened without a state machine: it is never asked for a snapshot.
    struct NoSnapshots;
    impl SnapshotSource for NoSnapshots {
        fn snapshot(&self) -> Result<(u64, Vec<u8>), crate::machine::StateMachineError> {
            Err(crate::machine::StateMachineError::new(std::io::Error::other("no state machine while forcing a new cluster")))
        }
    }
    let mut storage = WalStorage::open(dir, opts, Box::new(NoSnapshots))?;
    if !storage.is_initialized() {
        return Ok(None);
    }
    storage.force_new_cluster(me).map(Some)
}

/// A conf-change entry (the v1 `ConfChange` cairn writes) changing member `id`.
fn conf_change_entry(kind: ConfChangeType, id: u64, term: u64, index: u64) -> Entry {
    let cc = ConfChange { change_type: kind as i32, node_id: id, ..Default::default() };
    Entry { entry_type: EntryType::EntryConfChange as i32, term, index, data: cc.encode_to_vec(), ..Default::default() }
}

/// raft-rs's storage over our WAL (see the module docs).
pub struct WalStorage {
    snap_dir: PathBuf,
    wal: Wal,
    st: Recovered,
    source: Box<dyn SnapshotSource>,
    /// The applied index the driver starts from: `initial_state` answers the conf state
    /// in force there (later conf changes are applied again from the log).
    applied_hint: u64,
    /// Data of the snapshot installed last, read at open, until the driver takes it.
    installed_data: Option<Vec<u8>>,
}

impl WalStorage {
    /// Opens the storage in `dir` (the WAL in `dir/wal`, snapshot files in `dir/snap`),
    /// rebuilding the log, hard state, conf states and snapshot metadata from the WAL.
    pub fn open(dir: &Path, opts: WalOptions, source: Box<dyn SnapshotSource>) -> Result<WalStorage, StorageError> {
        let snap_dir = dir.join("snap");
        std::fs::create_dir_all(&snap_dir)?;
        let (wal, recs) = Wal::open(&dir.join("wal"), opts)?;
        let mut st = Recovered::replay(&recs)?;
        drop(recs);
        // positions go on above the WAL's last index, which counts its segments' names
        st.last_pos = st.last_pos.max(wal.last_index());
        let mut installed_data = None;
        for index in snapfile::list(&snap_dir)? {
            if st.installed == Some(index) {
                installed_data = Some(snapfile::read(&snap_dir, index)?);
            } else {
                // older installs, or one whose WAL record never became durable
                snapfile::remove(&snap_dir, index)?;
            }
        }
        if let Some(index) = st.installed {
            if installed_data.is_none() {
                return Err(StorageError::MissingSnapshot { index });
            }
        }
        Ok(WalStorage { snap_dir, wal, st, source, applied_hint: u64::MAX, installed_data })
    }

    /// Whether the storage holds any raft state (a member that ran before).
    pub fn is_initialized(&self) -> bool {
        self.st.last_pos > 0
    }

    /// Writes the first state of a member of a new cluster of `voters`, the same on every
    /// founding member: one `AddNode` conf-change entry per voter (term 1, indexes 1..=n,
    /// committed) and the resulting conf state. Members added later start empty and get
    /// these entries (or a snapshot) from the leader, so every member agrees on the
    /// configuration. Durable when it returns.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<(), StorageError> {
        if self.is_initialized() {
            return Err(StorageError::AlreadyInitialized);
        }
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        let cs = ConfState { voters: voters.clone(), ..Default::default() };
        self.put(records::CONF_STATE, records::conf_state_record(0, &cs))?;
        self.st.conf_states.push((0, cs));
        let entries: Vec<Entry> =
            voters.iter().enumerate().map(|(i, &id)| conf_change_entry(ConfChangeType::AddNode, id, 1, i as u64 + 1)).collect();
        self.append(entries)?;
        self.set_hard_state(&HardState { term: 1, vote: 0, commit: voters.len() as u64 })?;
        self.sync()
    }

    /// etcd's `--force-new-cluster`: turns this member's log into that of a one-member
    /// cluster holding everything it has, for recovery after a permanent loss of quorum.
    /// One `RemoveNode` conf-change entry per other member is appended at the current term
    /// and the log is committed through them. Unlike etcd, which drops the entries this
    /// member had not yet seen committed, they are kept: a write the cluster acknowledged
    /// may have been committed elsewhere before this member heard so, and nothing but this
    /// log holds it any more (an entry never acknowledged may be applied too, which a
    /// client whose request failed must expect anyway). When the member starts, it applies
    /// the entries like any committed ones (its member table and conf state shrink to
    /// itself) and elects itself. Returns the members removed (members of the newest conf
    /// state, with the logged conf changes not yet applied played forward). Durable when
    /// it returns.
    pub fn force_new_cluster(&mut self, me: u64) -> Result<Vec<u64>, StorageError> {
        let hs = self.st.hard_state.clone();
        let (since, cs) = self.st.conf_states.last().cloned().unwrap_or_default();
        let mut members: std::collections::BTreeSet<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
        for e in self.st.entries.iter().filter(|e| e.index > since) {
            let changes: Vec<(i32, u64)> = match EntryType::from_i32(e.entry_type) {
                Some(EntryType::EntryConfChange) => {
                    let cc = ConfChange::decode(e.data.as_slice()).map_err(|err| self.corrupt_entry(e.index, err))?;
                    vec![(cc.change_type, cc.node_id)]
                }
                Some(EntryType::EntryConfChangeV2) => raft::eraftpb::ConfChangeV2::decode(e.data.as_slice())
                    .map_err(|err| self.corrupt_entry(e.index, err))?
                    .changes
                    .iter()
                    .map(|c| (c.change_type, c.node_id))
                    .collect(),
                _ => continue,
            };
            for (kind, id) in changes {
                if kind == ConfChangeType::RemoveNode as i32 {
                    members.remove(&id);
                } else {
                    members.insert(id);
                }
            }
        }
        let removed: Vec<u64> = members.into_iter().filter(|id| *id != me).collect();
        let last = self.st.last_index();
        let term = self.st.entries.last().map_or(hs.term, |e| e.term.max(hs.term));
        let entries: Vec<Entry> = removed
            .iter()
            .enumerate()
            .map(|(i, &id)| conf_change_entry(ConfChangeType::RemoveNode, id, term, last + 1 + i as u64))
            .collect();
        let commit = last + entries.len() as u64;
        self.append(entries)?;
        self.set_hard_state(&HardState { term, commit, ..hs })?;
        self.sync()?;
        Ok(removed)
    }

    fn corrupt_entry(&self, index: u64, err: raft_prost::DecodeError) -> StorageError {
        let pos = self.st.entries.iter().position(|e| e.index == index).map_or(0, |i| self.st.entry_pos[i]);
        StorageError::Corrupt { pos, kind: records::ENTRY, detail: format!("conf change entry {index}: {err}") }
    }

    /// Sets the applied index the driver starts from (see `applied_hint`).
    pub fn set_applied_hint(&mut self, applied: u64) {
        self.applied_hint = applied;
    }

    /// The snapshot installed last, if its data is still needed: metadata and data. Taken
    /// once, by the driver at start, to restore a state machine that is behind it.
    pub fn take_installed_snapshot(&mut self) -> Option<(SnapshotMetadata, Vec<u8>)> {
        let data = self.installed_data.take()?;
        Some((self.st.snap.clone(), data))
    }

    /// The current hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.st.hard_state
    }

    /// The newest conf state.
    pub fn conf_state(&self) -> ConfState {
        self.st.conf_state_at(u64::MAX)
    }

    /// The compaction (or installed snapshot) point: index and term.
    pub fn snapshot_point(&self) -> (u64, u64) {
        (self.st.snap.index, self.st.snap.term)
    }

    /// Number of WAL segment files.
    pub fn wal_segments(&self) -> usize {
        self.wal.segment_count()
    }

    fn put(&mut self, kind: u8, data: Vec<u8>) -> Result<u64, StorageError> {
        let pos = self.st.last_pos + 1;
        self.wal.append(kind, pos, &data)?;
        self.st.last_pos = pos;
        Ok(pos)
    }

    /// Appends entries (durable after [`WalStorage::sync`]); an entry overwrites every
    /// entry at or after its index.
    pub fn append(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        for e in entries {
            if e.index > self.st.last_index() + 1 || e.index <= self.st.snap.index {
                return Err(StorageError::LogGap(format!(
                    "entry {} does not fit a log holding {}..={}",
                    e.index,
                    self.st.snap.index + 1,
                    self.st.last_index()
                )));
            }
            let pos = self.put(records::ENTRY, e.encode_to_vec())?;
            self.st.push_entry(e, pos).map_err(StorageError::LogGap)?;
        }
        Ok(())
    }

    /// Records a new hard state (durable after [`WalStorage::sync`]).
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.put(records::HARD_STATE, hs.encode_to_vec())?;
        self.st.hard_state = hs.clone();
        Ok(())
    }

    /// Records a new commit index (durable with the next sync; losing it is harmless).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        let hs = HardState { commit, ..self.st.hard_state.clone() };
        self.set_hard_state(&hs)
    }

    /// Records the conf state in force from entry `index` on, durably: the state machine
    /// is told only after this returns.
    pub fn record_conf_state(&mut self, index: u64, cs: &ConfState) -> Result<(), StorageError> {
        self.put(records::CONF_STATE, records::conf_state_record(index, cs))?;
        self.st.conf_states.retain(|(i, _)| *i < index);
        self.st.conf_states.push((index, cs.clone()));
        self.sync()
    }

    /// Installs a snapshot received from the leader: its data goes to a snapshot file, its
    /// metadata to the WAL (both durable on return), and the log is replaced. The caller
    /// then restores the state machine from `snap.data`.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        let meta = snap.metadata.clone().unwrap_or_default();
        if meta.index <= self.st.snap.index {
            return Err(StorageError::SnapshotOutOfDate { index: meta.index, first: self.st.snap.index + 1 });
        }
        snapfile::write(&self.snap_dir, meta.index, &snap.data)?;
        self.put(records::SNAPSHOT, meta.encode_to_vec())?;
        self.sync()?;
        let previous = self.st.installed;
        self.st.install(meta);
        if let Some(i) = previous {
            snapfile::remove(&self.snap_dir, i)?;
        }
        Ok(())
    }

    /// Compacts the log behind `index`, which the state machine must hold durably: entries
    /// ≤ `index` are dropped from memory and WAL segments holding nothing newer are
    /// deleted ([`Wal::release`]). Returns the number of segments deleted.
    pub fn compact(&mut self, index: u64) -> Result<usize, StorageError> {
        if index <= self.st.snap.index {
            return Ok(0);
        }
        let last = self.st.last_index();
        let term = match self.term(index) {
            Ok(t) if index <= last => t,
            _ => return Err(StorageError::CompactOutOfRange { index, first: self.st.snap.index + 1, last }),
        };
        let meta = SnapshotMetadata { conf_state: Some(self.st.conf_state_at(index)), index, term };
        // re-append the state that must outlive the released segments
        let first_new = self.put(records::COMPACT, meta.encode_to_vec())?;
        let later: Vec<(u64, ConfState)> = self.st.conf_states.iter().filter(|(i, _)| *i > index).cloned().collect();
        for (i, cs) in &later {
            self.put(records::CONF_STATE, records::conf_state_record(*i, cs))?;
        }
        self.put(records::HARD_STATE, self.st.hard_state.encode_to_vec())?;
        self.sync()?;
        let had_installed = self.st.installed;
        self.st.compact(meta);
        let oldest_needed = self.st.oldest_entry_pos().unwrap_or(first_new).min(first_new);
        let removed = self.wal.release(oldest_needed - 1)?;
        if let (Some(i), None) = (had_installed, self.st.installed) {
            snapfile::remove(&self.snap_dir, i)?;
        }
        Ok(removed)
    }

    /// Compacts the log behind `index` (at least the current compaction point), which the
    /// state machine must hold durably, and moves what is still needed into a fresh WAL
    /// segment so that every older one, the active one included, is deleted: the segment
    /// is cut ([`Wal::cut_now`]), the compaction record, the conf states after it, the hard
    /// state and a copy of every live entry (`ENTRY_COPY`, see `records.rs`) are written
    /// to it and synced, and only then are the older segments deleted. A crash before the
    /// sync leaves the older segments as they were (the new one's torn tail is cut at
    /// open); after it, either set replays to the same log. Returns the number of segments
    /// deleted.
    pub fn compact_and_cut(&mut self, index: u64) -> Result<usize, StorageError> {
        let index = index.max(self.st.snap.index);
        let last = self.st.last_index();
        let term = match self.term(index) {
            Ok(t) if index <= last => t,
            _ => return Err(StorageError::CompactOutOfRange { index, first: self.st.snap.index + 1, last }),
        };
        let meta = SnapshotMetadata { conf_state: Some(self.st.conf_state_at(index)), index, term };
        self.wal.cut_now()?;
        let first_new = self.put(records::COMPACT, meta.encode_to_vec())?;
        let later: Vec<(u64, ConfState)> = self.st.conf_states.iter().filter(|(i, _)| *i > index).cloned().collect();
        for (i, cs) in &later {
            self.put(records::CONF_STATE, records::conf_state_record(*i, cs))?;
        }
        self.put(records::HARD_STATE, self.st.hard_state.encode_to_vec())?;
        let kept: Vec<Vec<u8>> = self.st.entries.iter().filter(|e| e.index > index).map(|e| e.encode_to_vec()).collect();
        let mut positions = Vec::with_capacity(kept.len());
        for data in kept {
            positions.push(self.put(records::ENTRY_COPY, data)?);
        }
        self.sync()?;
        let had_installed = self.st.installed;
        self.st.compact(meta);
        // the compaction point may be the installed snapshot's own: the WAL no longer
        // needs it (the state machine holds it durably), and its record is going
        if self.st.installed.is_some_and(|i| i <= index) {
            self.st.installed = None;
        }
        debug_assert_eq!(self.st.entry_pos.len(), positions.len());
        self.st.entry_pos = positions;
        let removed = self.wal.release(first_new - 1)?;
        if let (Some(i), None) = (had_installed, self.st.installed) {
            snapfile::remove(&self.snap_dir, i)?;
        }
        Ok(removed)
    }

    /// Makes everything appended durable (one write and one fdatasync). Sticky on failure.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.wal.sync()?;
        Ok(())
    }

    fn first(&self) -> u64 {
        self.st.snap.index + 1
    }
}

impl Storage for WalStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.st.hard_state.clone(), conf_state: self.st.conf_state_at(self.applied_hint) })
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _ctx: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.st.last_index() + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut out = self.st.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.st.snap.index {
            return Ok(self.st.snap.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.st.last_index() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.st.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.st.last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable);
        let (index, data) = match self.source.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(to, error = %e, "raft: the state machine could not make a snapshot");
                return Err(unavailable());
            }
        };
        if index < request_index || index < self.st.snap.index {
            return Err(unavailable());
        }
        let term = self.term(index).map_err(|_| unavailable())?;
        let metadata = SnapshotMetadata { conf_state: Some(self.st.conf_state_at(index)), index, term };
        Ok(Snapshot { data, metadata: Some(metadata) })
    }
}

#[cfg(test)]
mod tests;
