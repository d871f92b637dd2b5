//! Revisions and their on-disk encoding.
//!
//! A revision is `(main, sub)`: `main` is the store revision a write transaction created,
//! `sub` orders the changes inside it (the 0th, 1st, ... key written by that transaction).
//!
//! On disk (the key bucket's keys) a revision is 17 bytes, so that byte order is revision
//! order:
//! ```text
//! [0..8)   main, u64 big-endian
//! [8]      b'_'
//! [9..17)  sub, u64 big-endian
//! [17]     b't'   only for a tombstone (the key was deleted at this revision)
//! ```

use std::fmt;

use crate::error::{Error, Result};

/// Length of an encoded revision without the tombstone mark.
pub const REV_BYTES_LEN: usize = 17;
/// Length of an encoded tombstone revision.
pub const TOMBSTONE_REV_BYTES_LEN: usize = 18;

/// A point in the store's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store revision of the transaction.
    pub main: i64,
    /// The position of the change inside that transaction.
    pub sub: i64,
}

impl Revision {
    /// A revision from its parts.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The 17-byte key of this revision (18 with the tombstone mark).
    pub fn to_bytes(self, tombstone: bool) -> Vec<u8> {
        let mut b = Vec::with_capacity(TOMBSTONE_REV_BYTES_LEN);
        b.extend_from_slice(&(self.main as u64).to_be_bytes());
        b.push(b'_');
        b.extend_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            b.push(b't');
        }
        b
    }

    /// Decodes a key written by [`Revision::to_bytes`]; returns the revision and whether it
    /// marks a tombstone.
    pub fn from_bytes(b: &[u8]) -> Result<(Revision, bool)> {
        let tomb = match b.len() {
            REV_BYTES_LEN => false,
            TOMBSTONE_REV_BYTES_LEN if b[17] == b't' => true,
            _ => return Err(Error::corrupt("revision key", format!("{b:?}"))),
        };
        if b[8] != b'_' {
            return Err(Error::corrupt("revision key", format!("{b:?}")));
        }
        let main = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")) as i64;
        let sub = u64::from_be_bytes(b[9..17].try_into().expect("8 bytes")) as i64;
        Ok((Revision { main, sub }, tomb))
    }

    /// The smallest key of any revision with this main revision (for range scans).
    pub fn main_prefix_start(main: i64) -> Vec<u8> {
        Revision::new(main, 0).to_bytes(false)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_order_is_revision_order() {
        let revs = [Revision::new(1, 0), Revision::new(1, 1), Revision::new(2, 0), Revision::new(256, 3)];
        for w in revs.windows(2) {
            assert!(w[0].to_bytes(false) < w[1].to_bytes(false));
            assert!(w[0].to_bytes(true) < w[1].to_bytes(false));
        }
    }

    #[test]
    fn round_trip_and_tombstone() {
        let r = Revision::new(42, 7);
        assert_eq!(Revision::from_bytes(&r.to_bytes(false)).unwrap(), (r, false));
        assert_eq!(Revision::from_bytes(&r.to_bytes(true)).unwrap(), (r, true));
    }

    #[test]
    fn malformed_keys_are_corrupt_not_panics() {
        assert!(Revision::from_bytes(b"short").is_err());
        let mut b = Revision::new(1, 1).to_bytes(false);
        b[8] = b'x';
        assert!(Revision::from_bytes(&b).is_err());
        let mut b = Revision::new(1, 1).to_bytes(true);
        b[17] = b'q';
        assert!(Revision::from_bytes(&b).is_err());
    }
}
