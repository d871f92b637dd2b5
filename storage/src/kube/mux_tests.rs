//! The mux against a scripted transport: the test sees every request and writes every
//! response.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    watch_request::RequestUnion, ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use tokio::sync::mpsc;

use super::{Backoff, Connector, Pacing, RequestSink, ResponseSource, WatchMux};
use crate::kube::error::{Result, StorageError};
use crate::kube::types::{WatchEvent, Watcher};

const WAIT: Duration = Duration::from_secs(5);

struct Sink(mpsc::UnboundedSender<WatchRequest>);

impl RequestSink for Sink {
    fn send(&self, req: WatchRequest) -> bool {
        self.0.send(req).is_ok()
    }
}

struct Source(mpsc::UnboundedReceiver<Result<Vec<WatchResponse>>>);

impl ResponseSource for Source {
    async fn next(&mut self) -> Result<Option<Vec<WatchResponse>>> {
        match self.0.recv().await {
            Some(Ok(batch)) => Ok(Some(batch)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

struct Script {
    mux: Arc<WatchMux>,
    requests: mpsc::UnboundedReceiver<WatchRequest>,
    responses: mpsc::UnboundedSender<Result<Vec<WatchResponse>>>,
}

fn pacing() -> Pacing {
    Pacing { min_interval: Duration::from_millis(50), retry: Duration::from_millis(200) }
}

fn script(pacing: Pacing) -> Script {
    let (req_tx, requests) = mpsc::unbounded_channel();
    let (responses, resp_rx) = mpsc::unbounded_channel();
    let mux = Arc::new(WatchMux::open(Box::new(Sink(req_tx)), Source(resp_rx), pacing));
    Script { mux, requests, responses }
}

impl Script {
    async fn request(&mut self) -> RequestUnion {
        let req = tokio::time::timeout(WAIT, self.requests.recv()).await.expect("a request").expect("open");
        req.request_union.expect("a request union")
    }

    fn no_request(&mut self) {
        assert!(self.requests.try_recv().is_err(), "unexpected request");
    }

    fn respond(&self, batch: Vec<WatchResponse>) {
        self.responses.send(Ok(batch)).expect("mux alive");
    }

    /// Creates a watch on `key` from `start`, answering it with `id`.
    async fn watch(&mut self, key: &str, start: i64, id: i64, buffer: usize) -> Watcher {
        let req = WatchCreateRequest { key: key.into(), start_revision: start, ..Default::default() };
        let pending = self.mux.watch(req, buffer);
        tokio::pin!(pending);
        let create = tokio::select! {
            r = self.requests.recv() => r,
            _ = &mut pending => panic!("created before the server answered"),
        };
        assert!(matches!(create.and_then(|r| r.request_union), Some(RequestUnion::CreateRequest(_))));
        self.respond(vec![created(id)]);
        tokio::time::timeout(WAIT, pending).await.expect("created in time").expect("created")
    }
}

fn created(id: i64) -> WatchResponse {
    WatchResponse { watch_id: id, created: true, header: header(1), ..Default::default() }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

fn put(id: i64, key: &str, rev: i64) -> WatchResponse {
    let kv = KeyValue {
        key: key.to_owned().into(),
        value: b"v".to_vec().into(),
        create_revision: rev,
        mod_revision: rev,
        ..Default::default()
    };
    let ev = Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None };
    WatchResponse { watch_id: id, header: header(rev), events: vec![ev], ..Default::default() }
}

fn progress(rev: i64) -> WatchResponse {
    WatchResponse { watch_id: -1, header: header(rev), ..Default::default() }
}

async fn next(w: &mut Watcher) -> WatchEvent {
    tokio::time::timeout(WAIT, w.next()).await.expect("an event in time").expect("not ended")
}

#[tokio::test]
async fn creates_are_pipelined_and_matched_in_order() {
    let mut s = script(pacing());
    let [ra, rb, rc] = ["a", "b", "c"].map(|k| WatchCreateRequest { key: k.into(), ..Default::default() });
    let mux = s.mux.clone();
    let all = tokio::spawn(async move { tokio::join!(mux.watch(ra, 16), mux.watch(rb, 16), mux.watch(rc, 16)) });
    // All three creates go out before the server answered any.
    for key in ["a", "b", "c"] {
        match s.request().await {
            RequestUnion::CreateRequest(c) => assert_eq!(c.key, key.as_bytes()),
            other => panic!("expected a create, got {other:?}"),
        }
    }
    s.respond(vec![created(7), created(3), created(9)]);
    let (a, b, c) = all.await.expect("join");
    let (mut a, mut b, mut c) = (a.expect("a"), b.expect("b"), c.expect("c"));
    s.respond(vec![put(3, "b", 5), put(9, "c", 6), put(7, "a", 7)]);
    for (w, key) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
        match next(w).await {
            WatchEvent::Added(o) => assert_eq!(o.key, key.as_bytes()),
            other => panic!("expected Added({key}), got {other:?}"),
        }
    }
}

#[tokio::test]
async fn progress_is_merged_paced_and_fanned_out() {
    let mut s = script(pacing());
    let mut w1 = s.watch("a", 0, 1, 16).await;
    let mut w2 = s.watch("b", 0, 2, 16).await;
    for _ in 0..3 {
        s.mux.request_progress().expect("request");
    }
    assert!(matches!(s.request().await, RequestUnion::ProgressRequest(_)));
    s.no_request(); // merged while the first is in flight
    let first_sent = tokio::time::Instant::now();
    s.respond(vec![progress(10)]);
    for w in [&mut w1, &mut w2] {
        assert!(matches!(next(w).await, WatchEvent::Bookmark(10)));
    }
    // The merged request goes out, but not before `min_interval` since the last one.
    assert!(matches!(s.request().await, RequestUnion::ProgressRequest(_)));
    assert!(first_sent.elapsed() >= Duration::from_millis(45));
    s.respond(vec![progress(11), progress(12)]);
    // A consumer that did not read in between sees one bookmark, the newest.
    assert!(matches!(next(&mut w1).await, WatchEvent::Bookmark(12)));
    s.respond(vec![put(1, "a", 13)]);
    assert!(matches!(next(&mut w1).await, WatchEvent::Added(_)));
}

#[tokio::test]
async fn an_unanswered_progress_request_is_sent_again() {
    let mut s = script(pacing());
    let _w = s.watch("a", 0, 1, 16).await;
    s.mux.request_progress().expect("request");
    assert!(matches!(s.request().await, RequestUnion::ProgressRequest(_)));
    s.mux.request_progress().expect("request");
    // No answer (a server may drop it): a timer sends it again after `retry`.
    let started = tokio::time::Instant::now();
    assert!(matches!(s.request().await, RequestUnion::ProgressRequest(_)));
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn bookmarks_never_go_below_the_start_or_backwards() {
    let mut s = script(pacing());
    let mut w = s.watch("a", 20, 1, 16).await;
    s.respond(vec![progress(5), put(1, "a", 21), progress(19), progress(21)]);
    assert!(matches!(next(&mut w).await, WatchEvent::Added(_)));
    assert!(matches!(next(&mut w).await, WatchEvent::Bookmark(21)));
}

#[tokio::test]
async fn a_slow_consumer_is_stopped_alone() {
    let mut s = script(pacing());
    let mut slow = s.watch("a", 0, 1, 2).await;
    let mut fast = s.watch("b", 0, 2, 2).await;
    s.respond(vec![put(1, "a", 3), put(1, "a", 4), put(1, "a", 5), put(2, "b", 6)]);
    match s.request().await {
        RequestUnion::CancelRequest(c) => assert_eq!(c.watch_id, 1),
        other => panic!("expected the slow watch cancelled, got {other:?}"),
    }
    assert!(matches!(next(&mut fast).await, WatchEvent::Added(_)));
    assert!(matches!(next(&mut slow).await, WatchEvent::Added(_)));
    assert!(matches!(next(&mut slow).await, WatchEvent::Added(_)));
    assert!(matches!(next(&mut slow).await, WatchEvent::Error(StorageError::WatchTooSlow)));
    assert!(slow.next().await.is_none());
}

#[tokio::test]
async fn compaction_cancel_ends_the_watch_with_expired() {
    let mut s = script(pacing());
    let mut w = s.watch("a", 5, 4, 16).await;
    let cancel =
        WatchResponse { watch_id: 4, canceled: true, compact_revision: 9, header: header(12), ..Default::default() };
    s.respond(vec![cancel]);
    match next(&mut w).await {
        WatchEvent::Error(StorageError::Expired { requested, compact_revision }) => {
            assert_eq!((requested, compact_revision), (4, Some(9)))
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_a_watcher_cancels_it() {
    let mut s = script(pacing());
    let w = s.watch("a", 0, 6, 16).await;
    drop(w);
    match s.request().await {
        RequestUnion::CancelRequest(c) => assert_eq!(c.watch_id, 6),
        other => panic!("expected a cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn a_broken_stream_ends_every_watch_and_pending_create() {
    let mut s = script(pacing());
    let mut w = s.watch("a", 0, 1, 16).await;
    let mux = s.mux.clone();
    let pending =
        tokio::spawn(
            async move { mux.watch(WatchCreateRequest { key: b"b".to_vec(), ..Default::default() }, 16).await },
        );
    assert!(matches!(s.request().await, RequestUnion::CreateRequest(_)));
    s.responses.send(Err(StorageError::Rpc(tonic::Status::unavailable("gone")))).expect("send");
    assert!(matches!(next(&mut w).await, WatchEvent::Error(StorageError::Rpc(_))));
    assert!(matches!(pending.await.expect("join"), Err(StorageError::Rpc(_))));
    assert!(!s.mux.is_usable());
}

/// The test's ends of one stream a reconnecting mux opened.
struct Ends {
    requests: mpsc::UnboundedReceiver<WatchRequest>,
    responses: mpsc::UnboundedSender<Result<Vec<WatchResponse>>>,
}

/// Hands every new stream's test-side ends to the test.
struct ScriptedConnector(mpsc::UnboundedSender<Ends>);

impl Connector for ScriptedConnector {
    type Source = Source;
    fn connect(&mut self) -> Option<(Box<dyn RequestSink>, Source)> {
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (responses, resp_rx) = mpsc::unbounded_channel();
        self.0.send(Ends { requests, responses }).ok()?;
        Some((Box::new(Sink(req_tx)), Source(resp_rx)))
    }
}

async fn create_key(requests: &mut mpsc::UnboundedReceiver<WatchRequest>) -> (Vec<u8>, i64) {
    let req = tokio::time::timeout(WAIT, requests.recv()).await.expect("a request").expect("open");
    match req.request_union {
        Some(RequestUnion::CreateRequest(c)) => (c.key, c.start_revision),
        other => panic!("expected a create, got {other:?}"),
    }
}

#[tokio::test]
async fn a_broken_stream_is_replaced_and_every_watch_goes_on_where_it_was() {
    let (streams_tx, mut streams) = mpsc::unbounded_channel();
    let mut connector = ScriptedConnector(streams_tx);
    let (sink, source) = connector.connect().expect("first stream");
    let backoff = Backoff { min: Duration::from_millis(10), max: Duration::from_millis(40) };
    let mux = Arc::new(WatchMux::open_reconnecting(sink, source, connector, pacing(), backoff));
    let first = streams.recv().await.expect("first ends");
    let mut s = Script { mux: mux.clone(), requests: first.requests, responses: first.responses };

    let mut from_now = s.watch("a", 0, 1, 16).await; // created at revision 1
    let mut from_ten = s.watch("b", 10, 2, 16).await;
    s.respond(vec![put(1, "a", 3), progress(5)]);
    assert!(matches!(next(&mut from_now).await, WatchEvent::Added(_)));
    assert!(matches!(next(&mut from_now).await, WatchEvent::Bookmark(5)));
    let m = mux.clone();
    let unanswered = tokio::spawn(async move { m.watch(WatchCreateRequest { key: b"c".to_vec(), ..Default::default() }, 16).await });
    assert_eq!(create_key(&mut s.requests).await, (b"c".to_vec(), 0));

    s.responses.send(Err(StorageError::Rpc(tonic::Status::unavailable("connection reset")))).expect("send");
    let mut second = tokio::time::timeout(WAIT, streams.recv()).await.expect("a new stream").expect("ends");
    // the established watches again from where they were, then the unanswered create
    assert_eq!(create_key(&mut second.requests).await, (b"a".to_vec(), 6));
    assert_eq!(create_key(&mut second.requests).await, (b"b".to_vec(), 10));
    assert_eq!(create_key(&mut second.requests).await, (b"c".to_vec(), 0));
    second.responses.send(Ok(vec![created(11), created(12), created(13)])).expect("send");
    let _c = tokio::time::timeout(WAIT, unanswered).await.expect("in time").expect("join").expect("created");
    assert!(mux.is_usable(), "the consumers saw no break");

    second.responses.send(Ok(vec![put(11, "a", 6), put(12, "b", 10)])).expect("send");
    for (w, rev) in [(&mut from_now, 6), (&mut from_ten, 10)] {
        match next(w).await {
            WatchEvent::Added(o) => assert_eq!(o.resource_version, rev),
            other => panic!("expected the event at {rev}, got {other:?}"),
        }
    }
    // a watcher dropped now is cancelled under its new id
    drop(from_ten);
    match tokio::time::timeout(WAIT, second.requests.recv()).await.expect("a request").and_then(|r| r.request_union) {
        Some(RequestUnion::CancelRequest(c)) => assert_eq!(c.watch_id, 12),
        other => panic!("expected a cancel of 12, got {other:?}"),
    }

    // the next break: the watch's next revision is compacted meanwhile, which ends it
    second.responses.send(Ok(vec![])).expect("send");
    drop(second);
    let mut third = tokio::time::timeout(WAIT, streams.recv()).await.expect("a new stream").expect("ends");
    assert_eq!(create_key(&mut third.requests).await, (b"a".to_vec(), 7));
    // established by now, at its created response's revision (1)
    assert_eq!(create_key(&mut third.requests).await, (b"c".to_vec(), 2));
    let compacted =
        WatchResponse { watch_id: -1, created: true, canceled: true, compact_revision: 9, header: header(20), ..Default::default() };
    third.responses.send(Ok(vec![compacted, created(21)])).expect("send");
    match next(&mut from_now).await {
        WatchEvent::Error(StorageError::Expired { requested, compact_revision }) => {
            assert_eq!((requested, compact_revision), (6, Some(9)))
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}
