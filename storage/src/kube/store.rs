//! [`KubeStore`]: the Kubernetes storage semantics over any [`RawKv`], issuing the same
//! requests kube-apiserver's etcd3 store does (see ETCD-FACTS.md, "What kube-apiserver
//! sends").

use cairn_proto::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse, WatchCreateRequest,
};
use cairn_proto::mvccpb::KeyValue;

use super::error::{OptionsError, Result, StorageError, UpdateError};
use super::interface::KubeStorage;
use super::raw::RawKv;
use super::token::Continue;
use super::types::{
    GetOptions, List, ListOptions, Object, Preconditions, RvMatch, UpdateOptions, WatchEvent, WatchOptions, Watcher,
};

/// The Kubernetes storage interface over the primitives of `B` (an etcd endpoint or the local
/// engine). Cheap to clone when `B` is: clones share one connection and watch streams.
#[derive(Clone, Debug)]
pub struct KubeStore<B> {
    raw: B,
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented, or `\0` (every key) when there is
/// none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The first key of the range of keys starting with `prefix`: the prefix itself, or `\0`
/// for the empty prefix (etcd refuses an empty key; `["\0", "\0")` is every key).
fn range_start(prefix: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        vec![0]
    } else {
        prefix.to_vec()
    }
}

/// The current state of a key as the update loops need it.
struct State {
    obj: Option<Object>,
    /// The key's lease; `None` when unknown (the state came from the caller's cache).
    lease: Option<i64>,
}

impl State {
    fn from_kv(kv: Option<KeyValue>) -> State {
        match kv {
            None => State { obj: None, lease: Some(0) },
            Some(kv) => {
                let lease = kv.lease;
                State { obj: Some(object(kv)), lease: Some(lease) }
            }
        }
    }

    fn revision(&self) -> i64 {
        self.obj.as_ref().map_or(0, |o| o.resource_version)
    }

    fn check(&self, key: &[u8], pre: &Preconditions) -> Result<()> {
        match pre.resource_version {
            Some(expected) if expected != self.revision() => {
                Err(StorageError::Conflict { key: key.to_vec(), expected, actual: self.revision() })
            }
            _ => Ok(()),
        }
    }
}

fn object(kv: KeyValue) -> Object {
    Object { key: kv.key.into(), value: kv.value.into(), resource_version: kv.mod_revision }
}

fn header_revision(header: Option<&cairn_proto::etcdserverpb::ResponseHeader>) -> Result<i64> {
    header.map(|h| h.revision).ok_or(StorageError::Protocol("response without a header"))
}

fn mod_equals(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn get_op(key: &[u8]) -> RequestOp {
    op(request_op::Request::RequestRange(RangeRequest { key: key.to_vec(), ..Default::default() }))
}

/// A Put keeping the key's lease: `lease` when known, else etcd's `ignore_lease` (only valid
/// on an existing key, which the compare guarantees).
fn put_op(key: &[u8], value: Vec<u8>, lease: Option<i64>) -> RequestOp {
    op(request_op::Request::RequestPut(PutRequest {
        key: key.to_vec(),
        value,
        lease: lease.unwrap_or(0),
        ignore_lease: lease.is_none(),
        ..Default::default()
    }))
}

/// The Else branch's Get of a failed compare-and-swap: the key's fresh state.
fn else_state(resp: TxnResponse) -> Result<State> {
    let first = resp.responses.into_iter().next().and_then(|r| r.response);
    match first {
        Some(response_op::Response::ResponseRange(r)) => Ok(State::from_kv(r.kvs.into_iter().next())),
        _ => Err(StorageError::Protocol("failed txn without its Get response")),
    }
}

fn validate_rv(rv: i64, rv_match: RvMatch) -> Result<()> {
    if rv < 0 {
        return Err(OptionsError::Negative.into());
    }
    if rv == 0 && rv_match == RvMatch::Exact {
        return Err(OptionsError::ExactWithoutResourceVersion.into());
    }
    Ok(())
}

/// A latest read must be at least `min`: else the caller asked for a revision that does not
/// exist yet.
fn check_not_older(min: i64, actual: i64) -> Result<()> {
    if min > actual {
        return Err(StorageError::TooLargeResourceVersion { requested: min, current: Some(actual) });
    }
    Ok(())
}

impl<B: RawKv> KubeStore<B> {
    /// The storage interface over `raw`.
    pub fn new(raw: B) -> Self {
        KubeStore { raw }
    }

    /// The primitives underneath.
    pub fn raw(&self) -> &B {
        &self.raw
    }

    /// Compacts the history below `revision` (kube-apiserver does this every 5 minutes).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.raw.compact(revision).await
    }

    async fn read_state(&self, key: &[u8]) -> Result<State> {
        let resp = self.raw.range(RangeRequest { key: key.to_vec(), ..Default::default() }).await?;
        Ok(State::from_kv(resp.kvs.into_iter().next()))
    }

    async fn range_at(&self, key: &[u8], revision: i64) -> Result<RangeResponse> {
        self.raw.range(RangeRequest { key: key.to_vec(), revision, ..Default::default() }).await
    }
}

impl<B: RawKv> KubeStorage for KubeStore<B> {
    async fn create(&self, key: &[u8], value: Vec<u8>, lease_ttl: Option<i64>) -> Result<i64> {
        let lease = match lease_ttl {
            Some(ttl) => self.raw.lease_grant(ttl).await?,
            None => 0,
        };
        let txn = TxnRequest {
            compare: vec![mod_equals(key, 0)],
            success: vec![put_op(key, value, Some(lease))],
            failure: Vec::new(),
        };
        let resp = self.raw.txn(txn).await?;
        if !resp.succeeded {
            return Err(StorageError::AlreadyExists { key: key.to_vec() });
        }
        header_revision(resp.header.as_ref())
    }

    async fn get(&self, key: &[u8], opts: GetOptions) -> Result<Option<Object>> {
        validate_rv(opts.resource_version, opts.rv_match)?;
        let resp = match opts.rv_match {
            RvMatch::Exact => self.range_at(key, opts.resource_version).await?,
            RvMatch::NotOlderThan => {
                let resp = self.range_at(key, 0).await?;
                check_not_older(opts.resource_version, header_revision(resp.header.as_ref())?)?;
                resp
            }
        };
        match resp.kvs.into_iter().next() {
            Some(kv) => Ok(Some(object(kv))),
            None if opts.ignore_not_found => Ok(None),
            None => Err(StorageError::NotFound { key: key.to_vec() }),
        }
    }

    async fn get_list(&self, prefix: &[u8], opts: ListOptions) -> Result<List> {
        if opts.limit < 0 {
            return Err(OptionsError::Negative.into());
        }
        let (start, revision, min_rv) = match &opts.continue_token {
            Some(token) => {
                if opts.resource_version != 0 {
                    return Err(OptionsError::ContinueWithResourceVersion.into());
                }
                let c = Continue::decode(token)?;
                ([prefix, c.next_key.as_slice()].concat(), c.revision, 0)
            }
            None => {
                validate_rv(opts.resource_version, opts.rv_match)?;
                match opts.rv_match {
                    RvMatch::Exact => (range_start(prefix), opts.resource_version, 0),
                    RvMatch::NotOlderThan => (range_start(prefix), 0, opts.resource_version),
                }
            }
        };
        let req = RangeRequest {
            key: start,
            range_end: prefix_end(prefix),
            limit: opts.limit,
            revision,
            ..Default::default()
        };
        let resp = self.raw.range(req).await?;
        let read_at = header_revision(resp.header.as_ref())?;
        check_not_older(min_rv, read_at)?;
        let list_rv = if revision > 0 { revision } else { read_at };
        let returned = resp.kvs.len() as i64;
        let (continue_token, remaining_item_count) = match (resp.more, resp.kvs.last()) {
            (true, Some(last)) => {
                let token = Continue::after(prefix, &last.key, list_rv).encode();
                (Some(token), Some(resp.count - returned))
            }
            (true, None) => return Err(StorageError::Protocol("range with more=true but no keys")),
            (false, _) => (None, None),
        };
        let items = resp.kvs.into_iter().map(object).collect();
        Ok(List { items, resource_version: list_rv, continue_token, remaining_item_count })
    }

    async fn guaranteed_update<F>(&self, key: &[u8], opts: UpdateOptions, mut try_update: F) -> Result<Object>
    where
        F: FnMut(Option<&Object>) -> std::result::Result<Option<Vec<u8>>, UpdateError> + Send,
    {
        // `stale`: the state came from the caller's cache, not from storage; anything that
        // would fail or short-circuit on it is retried on a fresh read first.
        let (mut state, mut stale) = match opts.cached {
            Some(obj) => (State { obj: Some(obj), lease: None }, true),
            None => (self.read_state(key).await?, false),
        };
        loop {
            if state.obj.is_none() && !opts.ignore_not_found {
                if stale {
                    (state, stale) = (self.read_state(key).await?, false);
                    continue;
                }
                return Err(StorageError::NotFound { key: key.to_vec() });
            }
            if let Err(e) = state.check(key, &opts.preconditions) {
                if stale {
                    (state, stale) = (self.read_state(key).await?, false);
                    continue;
                }
                return Err(e);
            }
            let new_value = match try_update(state.obj.as_ref()) {
                Ok(v) => v,
                Err(_) if stale => {
                    (state, stale) = (self.read_state(key).await?, false);
                    continue;
                }
                Err(e) => return Err(StorageError::UpdateRejected(e)),
            };
            let unchanged = match (&new_value, &state.obj) {
                (None, _) => true,
                (Some(v), Some(cur)) => *v == cur.value,
                (Some(_), None) => false,
            };
            if unchanged {
                if stale {
                    (state, stale) = (self.read_state(key).await?, false);
                    continue;
                }
                return state.obj.ok_or_else(|| StorageError::NotFound { key: key.to_vec() });
            }
            let value = new_value.unwrap_or_default();
            let txn = TxnRequest {
                compare: vec![mod_equals(key, state.revision())],
                success: vec![put_op(key, value.clone(), state.lease)],
                failure: vec![get_op(key)],
            };
            let resp = self.raw.txn(txn).await?;
            if !resp.succeeded {
                (state, stale) = (else_state(resp)?, false);
                continue;
            }
            let rv = header_revision(resp.header.as_ref())?;
            return Ok(Object { key: key.to_vec(), value, resource_version: rv });
        }
    }

    async fn delete(&self, key: &[u8], preconditions: Preconditions) -> Result<Object> {
        let mut state = self.read_state(key).await?;
        loop {
            let Some(current) = &state.obj else {
                return Err(StorageError::NotFound { key: key.to_vec() });
            };
            state.check(key, &preconditions)?;
            let txn = TxnRequest {
                compare: vec![mod_equals(key, current.resource_version)],
                success: vec![op(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key.to_vec(),
                    prev_kv: true,
                    ..Default::default()
                }))],
                failure: vec![get_op(key)],
            };
            let resp = self.raw.txn(txn).await?;
            if !resp.succeeded {
                state = else_state(resp)?;
                continue;
            }
            let rv = header_revision(resp.header.as_ref())?;
            let prev = match resp.responses.into_iter().next().and_then(|r| r.response) {
                Some(response_op::Response::ResponseDeleteRange(d)) => d.prev_kvs.into_iter().next(),
                _ => return Err(StorageError::Protocol("delete txn without its DeleteRange response")),
            };
            let value = prev.map(|kv| kv.value).ok_or(StorageError::Protocol("delete without the previous key"))?;
            return Ok(Object { key: key.to_vec(), value: value.into(), resource_version: rv });
        }
    }

    async fn watch(&self, key: &[u8], opts: WatchOptions) -> Result<Watcher> {
        if opts.resource_version < 0 {
            return Err(OptionsError::Negative.into());
        }
        let (key, range_end) =
            if opts.recursive { (range_start(key), prefix_end(key)) } else { (key.to_vec(), Vec::new()) };
        let key = key.as_slice();
        let (initial, start_revision) = if opts.resource_version == 0 {
            // As kube's etcd3 watcher: the current state as Added events, then what follows.
            let req = RangeRequest { key: key.to_vec(), range_end: range_end.clone(), ..Default::default() };
            let resp = self.raw.range(req).await?;
            let rev = header_revision(resp.header.as_ref())?;
            let added: Vec<WatchEvent> = resp.kvs.into_iter().map(|kv| WatchEvent::Added(object(kv))).collect();
            (added, rev + 1)
        } else {
            (Vec::new(), opts.resource_version + 1)
        };
        let req = WatchCreateRequest {
            key: key.to_vec(),
            range_end,
            start_revision,
            progress_notify: opts.progress_notify,
            prev_kv: true,
            ..Default::default()
        };
        Ok(self.raw.watch(req).await?.with_initial(initial))
    }

    async fn count(&self, prefix: &[u8]) -> Result<i64> {
        let req = RangeRequest {
            key: range_start(prefix),
            range_end: prefix_end(prefix),
            count_only: true,
            ..Default::default()
        };
        Ok(self.raw.range(req).await?.count)
    }

    async fn request_watch_progress(&self) -> Result<()> {
        self.raw.request_progress().await
    }

    async fn current_resource_version(&self) -> Result<i64> {
        // Any key will do: only the header is read.
        let req = RangeRequest { key: vec![0], count_only: true, ..Default::default() };
        header_revision(self.raw.range(req).await?.header.as_ref())
    }
}
