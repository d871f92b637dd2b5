//! From etcd watch events to Kubernetes watch events, and the per-watch delivery rules
//! shared by every [`super::RawKv`] implementation.
//!
//! As kube-apiserver's etcd3 watcher: a PUT whose key was created by that very write
//! (`create_revision == mod_revision`) is `Added`, any other PUT `Modified`; a DELETE is
//! `Deleted` carrying the previous value (`prev_kv`) at the deletion's revision.

use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};

use super::error::StorageError;
use super::types::{Object, WatchEvent, WatchSender};

fn object(kv: KeyValue) -> Object {
    Object { key: kv.key.into(), value: kv.value.into(), resource_version: kv.mod_revision }
}

/// Converts one etcd event.
pub(crate) fn convert(ev: Event) -> Result<WatchEvent, StorageError> {
    let kv = ev.kv.ok_or(StorageError::Protocol("watch event without a key-value"))?;
    match EventType::try_from(ev.r#type) {
        Ok(EventType::Put) if kv.create_revision == kv.mod_revision => Ok(WatchEvent::Added(object(kv))),
        Ok(EventType::Put) => Ok(WatchEvent::Modified(object(kv))),
        Ok(EventType::Delete) => {
            let value = ev.prev_kv.map(|p| p.value).unwrap_or_default();
            Ok(WatchEvent::Deleted(Object { key: kv.key.into(), value: value.into(), resource_version: kv.mod_revision }))
        }
        Err(_) => Err(StorageError::Protocol("watch event of an unknown type")),
    }
}

/// The delivery state of one watch: where its sink is and the newest revision it reported.
///
/// Invariant: the revisions a consumer sees never go down, and a bookmark is never below the
/// watch's start (`start_revision - 1`): etcd once sent progress below a watch's start
/// (etcd #20221); such notifications are dropped here.
pub(crate) struct Route {
    sink: WatchSender,
    reported: i64,
}

impl Route {
    /// A route for a watch that starts at `start_revision` (0: the next revision).
    pub(crate) fn new(sink: WatchSender, start_revision: i64) -> Route {
        Route { sink, reported: (start_revision - 1).max(0) }
    }

    /// Delivers the events of one response, in order. False when the watch is gone (the
    /// caller drops the route and cancels the watch).
    pub(crate) fn events(&mut self, events: Vec<Event>) -> bool {
        for ev in events {
            match convert(ev) {
                Ok(ev) => {
                    if let Some(rev) = ev.revision() {
                        self.reported = self.reported.max(rev);
                    }
                    if !self.sink.send(ev) {
                        return false;
                    }
                }
                Err(e) => {
                    self.sink.send(WatchEvent::Error(e));
                    return false;
                }
            }
        }
        true
    }

    /// Delivers a progress notification at `revision` unless it would go backwards. False
    /// when the watch is gone.
    pub(crate) fn bookmark(&mut self, revision: i64) -> bool {
        if revision < self.reported {
            return !self.sink.is_closed();
        }
        self.reported = revision;
        self.sink.send(WatchEvent::Bookmark(revision))
    }

    /// Notes the revision a watch created "from now" (start revision 0) starts after: the
    /// created response's header revision.
    pub(crate) fn started_after(&mut self, revision: i64) {
        self.reported = self.reported.max(revision);
    }

    /// Where a replacement of this watch on a new stream starts: right after the newest
    /// revision it reported (an event or a bookmark), so that nothing is skipped or seen
    /// twice (etcd sends all events of one revision in one response).
    pub(crate) fn resume_from(&self) -> i64 {
        self.reported + 1
    }

    /// Ends the watch with `err`.
    pub(crate) fn fail(self, err: StorageError) {
        self.sink.send(WatchEvent::Error(err));
    }

    /// True when the consumer dropped its watcher.
    pub(crate) fn is_closed(&self) -> bool {
        self.sink.is_closed()
    }
}

/// The error that ends a watch the server cancelled.
pub(crate) fn cancel_error(start_revision: i64, compact_revision: i64, reason: String) -> StorageError {
    if compact_revision > 0 {
        StorageError::Expired { requested: (start_revision - 1).max(0), compact_revision: Some(compact_revision) }
    } else {
        StorageError::WatchCanceled { reason }
    }
}
