//! HashKV: a hash of the keyspace's history up to a revision, so members can be compared.
//!
//! The hash is CRC-32 (IEEE) over the compacted revision, then every change of revisions
//! `compact+1 ..= rev` in revision order: for each, its revision, whether it is a deletion,
//! the key, and (for a put) the create revision, version, lease and value. Every member
//! applies the same log, so members holding the same history give the same hash at the
//! same revision and compacted revision (etcd's values differ: its backend layout is not
//! cairn's; only member-to-member comparison is meaningful).
//!
//! Served twice: Maintenance.HashKV to clients, and `cairnpb.PeerHash/HashKV` on the peer
//! listeners ([`PeerHashService`], etcd's `/members/hashkv`), which the corruption checks
//! of `member/corrupt.rs` call. Both answer [`hash_kv_response`].

use std::sync::Arc;

use cairn_proto::cairnpb::peer_hash_server::{PeerHash, PeerHashServer};
use cairn_proto::etcdserverpb::{HashKvRequest, HashKvResponse};
use cairn_storage::crc32::Crc32;
use cairn_storage::{Error as StorageError, Store};
use tonic::{Request, Response, Status};

use crate::api::status::rpc_error;
use crate::member::identity::Membership;

/// Bytes of history read per scan.
const CHUNK_BYTES: usize = 4 << 20;

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
    let mut from = compact.max(0) + 1;
    while from <= rev {
        let h = store.events_between(from, rev, CHUNK_BYTES)?;
        for (r, changes) in &h.revisions {
            for c in changes {
                crc.update(&r.to_be_bytes());
                crc.update(&[u8::from(c.tombstone)]);
                crc.update(&c.kv.key);
                if !c.tombstone {
                    crc.update(&c.kv.create_revision.to_be_bytes());
                    crc.update(&c.kv.version.to_be_bytes());
                    crc.update(&c.kv.lease.to_be_bytes());
                    crc.update(&c.kv.value);
                }
            }
        }
        if h.through < from {
            break;
        }
        from = h.through + 1;
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

    #[test]
    fn same_history_same_hash_and_any_change_shows() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let a = Store::open(StoreConfig::new(dirs[0].path())).unwrap();
        let b = Store::open(StoreConfig::new(dirs[1].path())).unwrap();
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
}
