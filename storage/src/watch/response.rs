//! Turning queued items into `WatchResponse`s, on the sending side and outside every hub
//! lock (etcd: `serverWatchStream.sendLoop` and `sendFragments`).
//!
//! * `prev_kv` is read here, lazily, per event: the value at `mod_revision − 1`, for
//!   every event but a creation (put with `create_revision == mod_revision`), left out
//!   when that revision is compacted. Publishing never reads anything.
//! * A catch-up batch (`Item::Batch`, etcd's `eventBatch`: up to 1000 revisions) is one
//!   response, as etcd's `syncWatchers` sends it, never merged with anything.
//! * Adjacent live event items of the same watch are merged into one response (several
//!   revisions may share a response; a revision is never split across responses).
//! * A response of a watch created with `fragment` that reaches `max_request_bytes` is
//!   split into pieces, all with `fragment = true` but the last; without `fragment` it is
//!   sent whole.
//! * Headers carry only the revision; the server adds cluster ID, member ID and term.

use cairn_proto::etcdserverpb::{RangeRequest, ResponseHeader, WatchResponse};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use prost::encoding::encoded_len_varint;
use prost::Message;

use super::queue::{Item, OPT_FRAGMENT, OPT_PREV_KV};
use crate::store::Store;

/// Merging stops once a response holds this many events...
const MERGE_MAX_EVENTS: usize = 1000;
/// ...or this many bytes of key-values (kept under tonic's default 4 MiB decoding limit).
const MERGE_MAX_BYTES: usize = 1 << 20;

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

/// Builds the responses for `items`, in order, into `out`.
pub(crate) fn build(items: Vec<Item>, store: &Store, max_request_bytes: usize, out: &mut Vec<WatchResponse>) {
    let mut items = items.into_iter().peekable();
    while let Some(item) = items.next() {
        let (watch_id, mut revision, opts) = match item {
            Item::Batch { watch_id, revision, revs, opts, .. } => {
                let mut events = Vec::new();
                for (changes, sel) in &revs {
                    sel.for_each(&changes.changes, |c| events.push(event(c)));
                }
                finish(WatchResponse { header: header(revision), watch_id, events, ..Default::default() }, opts, store, max_request_bytes, out);
                continue;
            }
            Item::Events { watch_id, revision, opts, .. } => (watch_id, revision, opts),
            _ => {
                out.push(control(item));
                continue;
            }
        };
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut add = |item: Item, events: &mut Vec<Event>| {
            if let Item::Events { changes, sel, .. } = item {
                sel.for_each(&changes.changes, |c| {
                    bytes += c.kv.encoded_len();
                    events.push(event(c));
                });
            }
            bytes
        };
        let mut size = add(item, &mut events);
        while let Some(Item::Events { watch_id: w, opts: o, revision: r, .. }) = items.peek() {
            if *w != watch_id || *o != opts || events.len() >= MERGE_MAX_EVENTS || size >= MERGE_MAX_BYTES {
                break;
            }
            revision = revision.max(*r);
            let Some(next) = items.next() else { break };
            size = add(next, &mut events);
        }
        let resp = WatchResponse { header: header(revision), watch_id, events, ..Default::default() };
        finish(resp, opts, store, max_request_bytes, out);
    }
}

fn event(c: &crate::write_txn::Change) -> Event {
    let kind = if c.tombstone { EventType::Delete } else { EventType::Put };
    Event { r#type: kind as i32, kv: Some(c.kv.clone()), prev_kv: None }
}

/// Adds `prev_kv` if the watch asked for it, and fragments if it asked for that.
fn finish(mut resp: WatchResponse, opts: u8, store: &Store, max_request_bytes: usize, out: &mut Vec<WatchResponse>) {
    if opts & OPT_PREV_KV != 0 {
        for ev in &mut resp.events {
            ev.prev_kv = prev_kv(store, ev);
        }
    }
    if opts & OPT_FRAGMENT != 0 {
        fragments(resp, max_request_bytes, out);
    } else {
        out.push(resp);
    }
}

fn control(item: Item) -> WatchResponse {
    match item {
        Item::Created { watch_id, revision } => {
            WatchResponse { header: header(revision), watch_id, created: true, ..Default::default() }
        }
        Item::Refused { revision, reason } => WatchResponse {
            header: header(revision),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.message().to_owned(),
            ..Default::default()
        },
        Item::Canceled { watch_id, revision } => {
            WatchResponse { header: header(revision), watch_id, canceled: true, ..Default::default() }
        }
        // etcd sends the compaction cancel with a zero header revision
        Item::Compacted { watch_id, compact_revision } => WatchResponse {
            header: header(0),
            watch_id,
            canceled: true,
            compact_revision,
            ..Default::default()
        },
        Item::Progress { revision } => WatchResponse { header: header(revision), watch_id: -1, ..Default::default() },
        Item::Tick { watch_id, revision } | Item::Events { watch_id, revision, .. } | Item::Batch { watch_id, revision, .. } => {
            WatchResponse { header: header(revision), watch_id, ..Default::default() }
        }
    }
}

/// The key's value just before the event, as etcd's sendLoop reads it.
fn prev_kv(store: &Store, ev: &Event) -> Option<cairn_proto::mvccpb::KeyValue> {
    let kv = ev.kv.as_ref()?;
    let is_create = ev.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
    let rev = kv.mod_revision - 1;
    if is_create || rev <= 0 {
        return None;
    }
    match store.range(&RangeRequest { key: kv.key.to_vec(), revision: rev, ..Default::default() }) {
        Ok(r) => r.kvs.into_iter().next(),
        Err(e) => {
            tracing::debug!(error = %e, revision = rev, "prev_kv not available");
            None
        }
    }
}

/// etcd's `sendFragments`: whole when under the limit or a single event; otherwise
/// pieces of as many events as fit under the limit (at least one each).
pub(crate) fn fragments(resp: WatchResponse, max: usize, out: &mut Vec<WatchResponse>) {
    if resp.encoded_len() < max || resp.events.len() < 2 {
        out.push(resp);
        return;
    }
    let mut base = resp;
    let events = std::mem::take(&mut base.events);
    base.fragment = true;
    let base_len = base.encoded_len();
    let mut cur = WatchResponse { events: Vec::new(), ..base.clone() };
    let mut size = base_len;
    for ev in events {
        let len = ev.encoded_len();
        let add = 1 + encoded_len_varint(len as u64) + len;
        if !cur.events.is_empty() && size + add >= max {
            let full = std::mem::replace(&mut cur, WatchResponse { events: Vec::new(), ..base.clone() });
            out.push(full);
            size = base_len;
        }
        size += add;
        cur.events.push(ev);
    }
    cur.fragment = false;
    out.push(cur);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::mvccpb::KeyValue;

    fn ev(n: usize) -> Event {
        Event { r#type: 0, kv: Some(KeyValue { key: vec![b'k'; 10].into(), value: vec![0; n].into(), ..Default::default() }), prev_kv: None }
    }

    #[test]
    fn fragments_like_etcd() {
        let resp = WatchResponse { header: header(5), watch_id: 3, events: (0..10).map(|_| ev(100)).collect(), ..Default::default() };
        let mut out = vec![];
        fragments(resp.clone(), 400, &mut out);
        assert!(out.len() > 1);
        assert!(out[..out.len() - 1].iter().all(|r| r.fragment && r.encoded_len() < 400));
        assert!(!out.last().unwrap().fragment);
        let all: Vec<Event> = out.iter().flat_map(|r| r.events.clone()).collect();
        assert_eq!(all, resp.events);
        // under the limit, or one event: whole
        let mut out = vec![];
        fragments(resp.clone(), 1 << 20, &mut out);
        assert_eq!(out, vec![resp]);
        let one = WatchResponse { events: vec![ev(1000)], ..Default::default() };
        let mut out = vec![];
        fragments(one.clone(), 10, &mut out);
        assert_eq!(out, vec![one]);
    }
}
