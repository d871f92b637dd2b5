//! Lease state of the state machine: which leases exist, their TTLs, and which keys each
//! one holds. Expiry *timing* is not here (it is leader-only and lives with the server);
//! this is the replicated, persisted part every member applies identically.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};

/// etcd's largest TTL a lease may be granted with (`MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A lease as the state machine knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Lease ID (never 0).
    pub id: i64,
    /// Granted TTL in seconds (after the minimum was applied).
    pub ttl: i64,
    /// Remaining TTL from the last checkpoint, 0 if never checkpointed.
    pub remaining_ttl: i64,
    /// Keys attached to the lease.
    pub keys: BTreeSet<Vec<u8>>,
}

/// Leases and the key → lease attachment map.
#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: HashMap<i64, LeaseInfo>,
    /// Which lease each leased key is attached to (keys without a lease are absent).
    key_lease: HashMap<Vec<u8>, i64>,
    min_ttl: i64,
}

impl LeaseTable {
    /// An empty table granting at least `min_ttl` seconds.
    pub fn new(min_ttl: i64) -> Self {
        LeaseTable { min_ttl, ..Default::default() }
    }

    /// Grants lease `id`; applies the minimum TTL.
    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<LeaseInfo> {
        if id == 0 {
            return Err(Error::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        let info = LeaseInfo { id, ttl: ttl.max(self.min_ttl), remaining_ttl: 0, keys: BTreeSet::new() };
        self.leases.insert(id, info.clone());
        Ok(info)
    }

    /// Restores a lease read from the backend.
    pub fn restore(&mut self, id: i64, ttl: i64, remaining_ttl: i64) {
        self.leases.insert(id, LeaseInfo { id, ttl, remaining_ttl, keys: BTreeSet::new() });
    }

    /// Removes lease `id`; returns its keys in key order (the order deletes are applied in,
    /// the same on every member).
    pub fn revoke(&mut self, id: i64) -> Result<Vec<Vec<u8>>> {
        let info = self.leases.remove(&id).ok_or(Error::LeaseNotFound)?;
        for k in &info.keys {
            self.key_lease.remove(k);
        }
        Ok(info.keys.into_iter().collect())
    }

    /// True if lease `id` exists.
    pub fn exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// The lease `id`.
    pub fn get(&self, id: i64) -> Option<&LeaseInfo> {
        self.leases.get(&id)
    }

    /// All lease IDs, sorted.
    pub fn ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.leases.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Records a checkpointed remaining TTL; unknown leases are skipped (revoked since).
    pub fn checkpoint(&mut self, id: i64, remaining_ttl: i64) -> bool {
        match self.leases.get_mut(&id) {
            Some(l) => {
                l.remaining_ttl = remaining_ttl;
                true
            }
            None => false,
        }
    }

    /// The lease `key` is attached to, 0 if none.
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.key_lease.get(key).copied().unwrap_or(0)
    }

    /// Moves `key` to lease `id` (0: no lease), detaching it from its previous lease.
    pub fn set_key_lease(&mut self, key: &[u8], id: i64) {
        let old = self.lease_of(key);
        if old == id {
            return;
        }
        if old != 0 {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
            self.key_lease.remove(key);
        }
        if id != 0 {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.to_vec());
                self.key_lease.insert(key.to_vec(), id);
            }
        }
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True when there is no lease.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_rules() {
        let mut l = LeaseTable::new(2);
        assert_eq!(l.grant(7, 1).unwrap().ttl, 2, "minimum TTL applies");
        assert!(matches!(l.grant(7, 10), Err(Error::LeaseExists)));
        assert!(matches!(l.grant(8, MAX_LEASE_TTL + 1), Err(Error::LeaseTtlTooLarge)));
        assert!(matches!(l.grant(0, 10), Err(Error::LeaseNotFound)));
    }

    #[test]
    fn attach_move_and_revoke() {
        let mut l = LeaseTable::new(1);
        l.grant(1, 10).unwrap();
        l.grant(2, 10).unwrap();
        l.set_key_lease(b"b", 1);
        l.set_key_lease(b"a", 1);
        l.set_key_lease(b"c", 2);
        l.set_key_lease(b"c", 1); // moves
        l.set_key_lease(b"b", 0); // detaches
        assert_eq!(l.lease_of(b"c"), 1);
        assert!(l.get(2).unwrap().keys.is_empty());
        assert_eq!(l.revoke(1).unwrap(), vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(l.lease_of(b"a"), 0);
        assert!(matches!(l.revoke(1), Err(Error::LeaseNotFound)));
    }
}
