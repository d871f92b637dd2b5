//! The request shapes each benchmark sends.

use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    auth_client::AuthClient,
    kv_client::KvClient,
    request_op, AuthenticateRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tonic::transport::Channel;

use crate::keys::{random_value, KeyGen, Rng};
use crate::watch::prefix_end;

/// What one operation of a run does.
#[derive(Debug, Clone)]
pub enum OpKind {
    /// Put(key, value).
    Put,
    /// Put(key_at(seq), value): used to prepopulate the key space.
    Fill,
    /// Put(prefix + seq as 10 zero-padded digits, value): `cairn-bench fill`.
    FillOrdered { prefix: String },
    /// Range(key[, end]) with the given limit / count_only / keys_only.
    Range { key: Vec<u8>, end: Vec<u8>, serializable: bool, shape: RangeShape },
    /// Range of one random key `scale_key(prefix, i)`, i < keys (a store loaded by `load`).
    Get { prefix: String, keys: u64, serializable: bool },
    /// Txn of `batch` puts of `scale_key(prefix, i)` for the seq-th batch of [start, start + keys).
    Load { prefix: String, start: u64, keys: u64, batch: u64 },
    /// One whole paginated list of `[prefix, prefix_end(prefix))`, `limit` keys a page, every
    /// page at the first page's revision and starting after the last key returned (as
    /// kube-apiserver lists); the op fails unless it saw `expect` keys (when non-zero).
    List { prefix: Vec<u8>, limit: i64, expect: u64, serializable: bool },
    /// Txn{ compare(always true), success: Put(key, value) }.
    TxnPut,
    /// Txn{ compare(always true), success: Range(key) }: a read-only Txn.
    TxnRange,
    /// Auth.Authenticate(name, password).
    Authenticate { name: String, password: String },
    /// Range(key, limit 1) then Txn{ MOD(key) == rev ? Put(key, value) : Range(key) }.
    Update,
}

/// What a `range` asks for beyond the keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeShape {
    pub limit: i64,
    pub count_only: bool,
    pub keys_only: bool,
}

/// The `i`-th key of a scale store: `prefix` then `i` as 8 decimal digits (sorted like `i`).
pub fn scale_key(prefix: &str, i: u64) -> Vec<u8> {
    format!("{prefix}{i:08}").into_bytes()
}

/// Shared, read-only description of the workload.
#[derive(Debug)]
pub struct Workload {
    pub kind: OpKind,
    pub keys: KeyGen,
    pub val_size: usize,
    /// The auth token sent with every request (`--user`), if any.
    pub token: Option<String>,
}

/// How a successful operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The Txn's compare failed (another writer won the race).
    Conflict,
}

/// One client task's state: its stub on a shared channel and its RNG.
pub struct Worker {
    kv: KvClient<Channel>,
    auth: AuthClient<Channel>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    work: Arc<Workload>,
    rng: Rng,
    value: Vec<u8>,
}

impl Worker {
    pub fn new(channel: Channel, work: Arc<Workload>) -> Self {
        let mut rng = Rng::from_entropy();
        let value = random_value(work.val_size, &mut rng);
        let auth = AuthClient::new(channel.clone());
        let kv = KvClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let token = work.token.as_deref().and_then(|t| t.parse().ok());
        Worker { kv, auth, work, rng, value, token }
    }

    /// `msg` as a request carrying the auth token, if there is one.
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("token", t.clone());
        }
        r
    }

    /// Lists `[prefix, prefix_end)` page by page; the number of keys seen.
    async fn list(&mut self, prefix: &[u8], limit: i64, serializable: bool) -> Result<u64, tonic::Status> {
        let end = prefix_end(prefix);
        let (mut key, mut revision, mut seen) = (prefix.to_vec(), 0, 0u64);
        loop {
            let req = RangeRequest { key, range_end: end.clone(), limit, revision, serializable, ..Default::default() };
            let resp = self.kv.range(self.req(req)).await?.into_inner();
            if revision == 0 {
                revision = resp.header.map_or(0, |h| h.revision);
            }
            seen += resp.kvs.len() as u64;
            match resp.kvs.last() {
                Some(last) if resp.more => {
                    key = last.key.to_vec();
                    key.push(0);
                }
                _ => return Ok(seen),
            }
        }
    }

    fn put_req(&self, key: Vec<u8>) -> PutRequest {
        PutRequest { key, value: self.value.clone(), ..Default::default() }
    }

    /// Performs the `seq`-th operation of the run.
    pub async fn run_one(&mut self, seq: u64) -> Result<Outcome, tonic::Status> {
        let work = self.work.clone();
        match &work.kind {
            OpKind::Put => {
                let key = self.work.keys.key_for(seq, &mut self.rng);
                let req = self.put_req(key);
                self.kv.put(self.req(req)).await?;
                Ok(Outcome::Ok)
            }
            OpKind::Fill => {
                let req = self.put_req(self.work.keys.key_at(seq));
                self.kv.put(self.req(req)).await?;
                Ok(Outcome::Ok)
            }
            OpKind::FillOrdered { prefix } => {
                let req = self.put_req(format!("{prefix}{seq:010}").into_bytes());
                self.kv.put(self.req(req)).await?;
                Ok(Outcome::Ok)
            }
            OpKind::Range { key, end, serializable, shape } => {
                let req = RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    serializable: *serializable,
                    limit: shape.limit,
                    count_only: shape.count_only,
                    keys_only: shape.keys_only,
                    ..Default::default()
                };
                self.kv.range(self.req(req)).await?;
                Ok(Outcome::Ok)
            }
            OpKind::Get { prefix, keys, serializable } => {
                let key = scale_key(prefix, self.rng.below(*keys));
                let req = RangeRequest { key, serializable: *serializable, ..Default::default() };
                self.kv.range(self.req(req)).await?;
                Ok(Outcome::Ok)
            }
            OpKind::Load { prefix, start, keys, batch } => {
                let first = seq * batch;
                let ops = (first..(first + batch).min(*keys))
                    .map(|i| RequestOp {
                        request: Some(request_op::Request::RequestPut(self.put_req(scale_key(prefix, start + i)))),
                    })
                    .collect();
                let txn = TxnRequest { compare: vec![], success: ops, failure: vec![] };
                self.kv.txn(self.req(txn)).await?;
                Ok(Outcome::Ok)
            }
            OpKind::List { prefix, limit, expect, serializable } => {
                let seen = self.list(prefix, *limit, *serializable).await?;
                if *expect > 0 && seen != *expect {
                    return Err(tonic::Status::data_loss(format!("listed {seen} keys, expected {expect}")));
                }
                Ok(Outcome::Ok)
            }
            OpKind::Authenticate { name, password } => {
                let req = AuthenticateRequest { name: name.clone(), password: password.clone() };
                self.auth.authenticate(req).await?;
                Ok(Outcome::Ok)
            }
            OpKind::TxnPut | OpKind::TxnRange => {
                let key = self.work.keys.key_for(seq, &mut self.rng);
                // mod_revision > -1 holds for every key, present or not.
                let cmp = Compare {
                    result: CompareResult::Greater as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::ModRevision(-1)),
                    ..Default::default()
                };
                let op = match &self.work.kind {
                    OpKind::TxnRange => request_op::Request::RequestRange(RangeRequest { key, ..Default::default() }),
                    _ => request_op::Request::RequestPut(self.put_req(key)),
                };
                let txn = TxnRequest { compare: vec![cmp], success: vec![RequestOp { request: Some(op) }], failure: vec![] };
                let resp = self.kv.txn(self.req(txn)).await?.into_inner();
                Ok(if resp.succeeded { Outcome::Ok } else { Outcome::Conflict })
            }
            OpKind::Update => {
                let key = self.work.keys.key_for(seq, &mut self.rng);
                let get = RangeRequest { key: key.clone(), limit: 1, ..Default::default() };
                let got = self.kv.range(self.req(get)).await?.into_inner();
                let rev = got.kvs.first().map_or(0, |kv| kv.mod_revision);
                let cmp = Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::ModRevision(rev)),
                    ..Default::default()
                };
                let reread = RangeRequest { key: key.clone(), ..Default::default() };
                let put = self.put_req(key);
                let txn = TxnRequest {
                    compare: vec![cmp],
                    success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put)) }],
                    failure: vec![RequestOp {
                        request: Some(request_op::Request::RequestRange(reread)),
                    }],
                };
                let resp = self.kv.txn(self.req(txn)).await?.into_inner();
                Ok(if resp.succeeded { Outcome::Ok } else { Outcome::Conflict })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_keys_sort_like_their_index_and_stay_in_the_prefix() {
        let (a, b) = (scale_key("/p/", 9), scale_key("/p/", 10));
        assert!(a < b);
        assert_eq!(a, b"/p/00000009");
        let end = prefix_end(b"/p/");
        assert!(b.as_slice() >= b"/p/".as_slice() && b < end);
        assert_eq!(end, b"/p0");
    }
}
