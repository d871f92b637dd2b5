//! cairn's replicated log.
//!
//! * [`wal`]: the write-ahead log — segmented append-only files, a length and CRC per
//!   record, fdatasync before anything is acknowledged, torn tails truncated on open,
//!   sticky I/O failure.
//!
//! The Raft driver around raft-rs's `RawNode` comes next and keeps its entries and hard
//! state in this WAL.
#![deny(missing_docs)]

pub mod wal;

pub use wal::{Wal, WalError, WalOptions, WalRecord};
