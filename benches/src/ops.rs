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

/// What one operation of a run does.
#[derive(Debug, Clone)]
pub enum OpKind {
    /// Put(key, value).
    Put,
    /// Put(key_at(seq), value): used to prepopulate the key space.
    Fill,
    /// Put(prefix + seq as 10 zero-padded digits, value): `cairn-bench fill`.
    FillOrdered { prefix: String },
    /// Range(key[, end]).
    Range { key: Vec<u8>, end: Vec<u8>, serializable: bool },
    /// Txn{ compare(always true), success: Put(key, value) }.
    TxnPut,
    /// Txn{ compare(always true), success: Range(key) }: a read-only Txn.
    TxnRange,
    /// Auth.Authenticate(name, password).
    Authenticate { name: String, password: String },
    /// Range(key, limit 1) then Txn{ MOD(key) == rev ? Put(key, value) : Range(key) }.
    Update,
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

    fn put_req(&self, key: Vec<u8>) -> PutRequest {
        PutRequest { key, value: self.value.clone(), ..Default::default() }
    }

    /// Performs the `seq`-th operation of the run.
    pub async fn run_one(&mut self, seq: u64) -> Result<Outcome, tonic::Status> {
        match &self.work.kind {
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
            OpKind::Range { key, end, serializable } => {
                let req = RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    serializable: *serializable,
                    ..Default::default()
                };
                self.kv.range(self.req(req)).await?;
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
