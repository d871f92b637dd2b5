//! HashKV: a hash of the keyspace's history up to a revision, so members can be compared.
//!
//! The hash is CRC-32 (IEEE) over the compacted revision, then what the compaction kept
//! (every key alive at the compacted revision, in key order, as a put at its mod
//! revision: etcd's hash covers its keep set too), then every change of revisions
//! `compact+1 ..= rev` in revision order: for each, its revision, whether it is a deletion,
//! the key, and (for a put) the create revision, version, lease and value. So a value
//! changed on one member's disk shows however old it is. Every member
//! applies the same log, so members holding the same history give the same hash at the
//! same revision and compacted revision (etcd's values differ: its backend layout is not
//! cairn's; only member-to-member comparison is meaningful).
//!
//! Served twice: Maintenance.HashKV to clients, and `cairnpb.PeerHash/HashKV` on the peer
//! listeners ([`PeerHashService`], etcd's `/members/hashkv`), which the corruption checks
//! of `member/corrupt.rs` call. Both answer [`hash_kv_response`].

use std::sync::Arc;

use cairn_proto::cairnpb::peer_hash_server::{PeerHash, PeerHashServer};
use cairn_proto::etcdserverpb::{HashKvRequest, HashKvResponse, RangeRequest};
use cairn_proto::mvccpb::KeyValue;
use cairn_storage::crc32::Crc32;
use cairn_storage::{Error as StorageError, Store};
use tonic::{Request, Response, Status};

use crate::api::status::rpc_error;
use crate::member::identity::Membership;

/// Bytes of history read per scan.
const CHUNK_BYTES: usize = 4 << 20;

/// Keys per page when hashing what the compaction kept.
const KEPT_PAGE: i64 = 1_000;

fn hash_change(crc: &mut Crc32, revision: i64, tombstone: bool, kv: &KeyValue) {
    crc.update(&revision.to_be_bytes());
    crc.update(&[u8::from(tombstone)]);
    crc.update(&kv.key);
    if !tombstone {
        crc.update(&kv.create_revision.to_be_bytes());
        crc.update(&kv.version.to_be_bytes());
        crc.update(&kv.lease.to_be_bytes());
        crc.update(&kv.value);
    }
}

/// Adds every key alive at the compacted revision `compact` (none when nothing was
/// compacted), a page of keys at a time, in key order.
fn hash_kept(store: &Store, compact: i64, crc: &mut Crc32) -> Result<(), StorageError> {
    if compact <= 0 {
        return Ok(());
    }
    let mut key = vec![0u8];
    loop {
        let page = RangeRequest { key: key.clone(), range_end: vec![0], revision: compact, limit: KEPT_PAGE, ..Default::default() };
        let resp = store.range(&page)?;
        for kv in &resp.kvs {
            hash_change(crc, kv.mod_revision, false, kv);
        }
        match resp.kvs.last() {
            Some(last) if resp.more => {
                key = last.key.to_vec();
                key.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// (hash, compacted revision, hashed revision) at `revision` (0: the current one).
pub fn hash_kv(store: &Store, revision: i64) -> Result<(u32, i64, i64), StorageError> {
    let current = store.revision();
    let rev = if revision <= 0 { current } else { revision };
    if rev > current {
        return Err(StorageError::FutureRev);
    }
    let compact = store.compact_revision();
    if rev < compact {
        return Err(StorageError::Compacted);
    }
    let mut crc = Crc32::new();
    crc.update(&compact.to_be_bytes());
    hash_kept(store, compact, &mut crc)?;
    let mut from = compact.max(0) + 1;
    while from <= rev {
        let h = store.events_between(from, rev, CHUNK_BYTES)?;
        for (r, changes) in &h.revisions {
            for c in changes {
                hash_change(&mut crc, *r, c.tombstone, &c.kv);
            }
        }
        if h.through < from {
            break;
        }
        from = h.through + 1;
    }
    // a compaction applied meanwhile may have removed what was hashed (a tombstone at its
    // revision): such a hash belongs to no compacted revision, and must not be compared
    if store.compact_revision() != compact {
        return Err(StorageError::Compacted);
    }
    Ok((crc.finish(), compact, rev))
}

/// The HashKV answer at `revision` (0: the current one), hashed on a blocking thread: the
/// header carries this member and its current revision (as etcd's, which the leader's
/// check compares with its own), `hash_revision` the revision hashed.
pub async fn hash_kv_response(store: Arc<Store>, membership: &Membership, revision: i64) -> Result<HashKvResponse, Status> {
    let hashed = store.clone();
    let (hash, compact_revision, hash_revision) = tokio::task::spawn_blocking(move || hash_kv(&hashed, revision))
        .await
        .map_err(|e| Status::internal(format!("cairn: HashKV task failed: {e}")))?
        .map_err(rpc_error)?;
    Ok(HashKvResponse { header: Some(membership.header(store.revision())), hash, compact_revision, hash_revision })
}

/// `cairnpb.PeerHash` on the peer listeners: a member's HashKV for its peers' corruption
/// checks (no auth: the peer listeners are the members' own, guarded by peer TLS).
pub struct PeerHashService {
    store: Arc<Store>,
    membership: Arc<Membership>,
}

impl PeerHashService {
    /// The service over this member's `store`.
    pub fn server(store: Arc<Store>, membership: Arc<Membership>) -> PeerHashServer<PeerHashService> {
        PeerHashServer::new(PeerHashService { store, membership })
    }
}

#[tonic::async_trait]
impl PeerHash for PeerHashService {
    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.get_ref().revision;
        Ok(Response::new(hash_kv_response(self.store.clone(), &self.membership, revision).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
    use cairn_proto::etcdserverpb::PutRequest;
    use cairn_storage::StoreConfig;

    fn put(store: &Store, index: u64, key: &str, value: &str) {
        let req = InternalRequest {
            id: index,
            request: Some(Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })),
            auth: None,
        };
        store.apply(index, &req).expect("put");
        store.commit().expect("commit");
    }

    /// Two empty stores (and their folders, removed on drop).
    fn two_stores() -> ([tempfile::TempDir; 2], Arc<Store>, Arc<Store>) {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let a = Store::open(StoreConfig::new(dirs[0].path())).unwrap();
        let b = Store::open(StoreConfig::new(dirs[1].path())).unwrap();
        (dirs, a, b)
    }

    #[test]
    fn same_history_same_hash_and_any_change_shows() {
        let (_dirs, a, b) = two_stores();
        for (i, s) in [&a, &b].into_iter().enumerate() {
            put(s, 1, "k1", "v1");
            put(s, 2, "k2", "v2");
            put(s, 3, "k1", if i == 0 { "v3" } else { "other" });
        }
        let at2 = (hash_kv(&a, 3).unwrap(), hash_kv(&b, 3).unwrap());
        assert_eq!(at2.0, at2.1, "identical up to revision 3");
        let (ha, _, ra) = hash_kv(&a, 0).unwrap();
        let (hb, _, rb) = hash_kv(&b, 0).unwrap();
        assert_eq!((ra, rb), (4, 4));
        assert_ne!(ha, hb, "revision 4 differs");
        assert!(matches!(hash_kv(&a, 99), Err(StorageError::FutureRev)));
    }

    #[test]
    fn a_difference_below_the_compaction_still_shows() {
        use cairn_proto::etcdserverpb::CompactionRequest;
        let (_dirs, a, b) = two_stores();
        for (i, s) in [&a, &b].into_iter().enumerate() {
            put(s, 1, "k1", if i == 0 { "v1" } else { "other" });
            // more keys than one page of `hash_kept`
            for n in 2..1_200 {
                put(s, n, &format!("k{n:05}"), "x");
            }
            let compact = InternalRequest {
                id: 1_200,
                request: Some(Request::Compaction(CompactionRequest { revision: 1_100, physical: false })),
                auth: None,
            };
            s.apply(1_200, &compact).expect("compact");
            s.commit().expect("commit");
            put(s, 1_201, "k1", "same");
        }
        let (ha, ca, ra) = hash_kv(&a, 0).unwrap();
        let (hb, cb, rb) = hash_kv(&b, 0).unwrap();
        assert_eq!((ca, ra), (1_100, 1_201));
        assert_eq!((cb, rb), (ca, ra));
        // k1's first value is history below the floor, but k1 is only overwritten after it
        assert_ne!(ha, hb, "a value kept by the compaction is hashed");
        let (h2a, _, _) = hash_kv(&a, 1_150).unwrap();
        let (h2b, _, _) = hash_kv(&b, 1_150).unwrap();
        assert_ne!(h2a, h2b);
    }
}
