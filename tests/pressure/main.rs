//! Bursty clients never take a connection down: pipelined watch creations and lease
//! keep-alives, each message in its own HTTP/2 DATA frame as Go's gRPC sends them, and
//! thousands of concurrent unary calls on one connection, are all answered and the
//! connection stays up (a server slower than its client slows it by flow control, it does
//! not close the connection). Runs against etcd too (`CAIRN_TEST_TARGET=etcd`).
//!
//! A held-back client that resets its stream or closes its connection leaves no watch behind.
//!
//! `pipelined_creates_rate` (ignored; run with `--ignored --nocapture`) measures creations
//! per second against cairn and etcd in the same run for BENCHMARKS.md.

#[path = "../common/mod.rs"]
mod common;
mod raw;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use common::{target_kind, Kind, Server};
use raw::{Conn, Reader, DEADLINE};

fn run<F: Future>(f: F) -> F::Output {
    raw::run_within(DEADLINE, f)
}

fn create(i: usize) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: format!("/pressure/{i}").into_bytes(),
            ..Default::default()
        })),
    }
}

/// Sends `n` watch creations on one Watch stream as fast as flow control allows while
/// reading the answers; returns how long it took until every creation was answered.
/// Fails if a creation is not answered, a watch ID repeats, or the connection ends.
async fn pipelined_creates(addr: SocketAddr, n: usize) -> Duration {
    let conn = Conn::connect(addr).await;
    let started = Instant::now();
    let (mut sender, body) = conn.call("/etcdserverpb.Watch/Watch").await;
    let writer = tokio::spawn(async move {
        for i in 0..n {
            sender.send(&create(i), false).await;
        }
        sender
    });
    let mut body = body.await.expect("response task");
    let mut reader = Reader::default();
    let mut ids = HashSet::with_capacity(n);
    while ids.len() < n {
        let Some(resp) = reader.next::<WatchResponse>(&mut body).await else {
            panic!(
                "the watch stream ended after {} of {n} creations; connection: {:?}",
                ids.len(),
                conn.ended()
            );
        };
        assert!(resp.created, "unexpected response before all creations: {resp:?}");
        assert!(!resp.canceled, "creation refused: {resp:?}");
        assert!(ids.insert(resp.watch_id), "watch ID {} answered twice", resp.watch_id);
    }
    let took = started.elapsed();
    let _sender = writer.await.expect("writer");
    assert_eq!(conn.ended(), None, "the connection ended");
    // the connection still serves calls
    let range: RangeResponse = conn
        .unary("/etcdserverpb.KV/Range", &RangeRequest { key: b"/pressure/0".to_vec(), ..Default::default() })
        .await
        .expect("range after the burst");
    assert!(range.header.is_some());
    took
}

#[test]
fn pipelined_watch_creates_are_all_answered() {
    let server = Server::start(target_kind());
    let n = 100_000;
    let took = run(pipelined_creates(server.client_addr(), n));
    eprintln!("{:?}: {n} pipelined creations in {took:?}", server.kind());
}

/// A connection and a lease granted on it (TTL 10 minutes).
async fn granted(addr: SocketAddr) -> (Conn, i64) {
    let conn = Conn::connect(addr).await;
    let lease: LeaseGrantResponse = conn
        .unary("/etcdserverpb.Lease/LeaseGrant", &LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .expect("grant");
    (conn, lease.id)
}

#[test]
fn pipelined_lease_keepalives_are_all_answered() {
    let server = Server::start(target_kind());
    run(async {
        let (conn, id) = granted(server.client_addr()).await;
        let n = 20_000;
        let (mut sender, body) = conn.call("/etcdserverpb.Lease/LeaseKeepAlive").await;
        let writer = tokio::spawn(async move {
            for _ in 0..n {
                sender.send(&LeaseKeepAliveRequest { id }, false).await;
            }
            sender
        });
        let mut body = body.await.expect("response task");
        let mut reader = Reader::default();
        for answered in 0..n {
            let Some(resp) = reader.next::<LeaseKeepAliveResponse>(&mut body).await else {
                panic!("keep-alive stream ended after {answered} of {n}; connection: {:?}", conn.ended());
            };
            assert_eq!(resp.id, id);
            assert!(resp.ttl > 0, "lease not renewed: {resp:?}");
        }
        let _sender = writer.await.expect("writer");
        assert_eq!(conn.ended(), None, "the connection ended");
    });
}

#[test]
fn concurrent_unary_calls_on_one_connection_are_all_answered() {
    let server = Server::start(target_kind());
    run(async {
        let conn = Arc::new(Conn::connect(server.client_addr()).await);
        let put: PutResponse = conn
            .unary("/etcdserverpb.KV/Put", &PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })
            .await
            .expect("put");
        assert!(put.header.is_some());
        let n = 5_000;
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..n {
            let conn = conn.clone();
            calls.spawn(async move {
                if i % 10 == 0 {
                    let key = format!("k{i}").into_bytes();
                    conn.unary::<_, PutResponse>("/etcdserverpb.KV/Put", &PutRequest { key, value: b"v".to_vec(), ..Default::default() })
                        .await
                        .map(|_| 1)
                } else {
                    conn.unary::<_, RangeResponse>("/etcdserverpb.KV/Range", &RangeRequest { key: b"k".to_vec(), ..Default::default() })
                        .await
                        .map(|r| r.kvs.len())
                }
            });
        }
        let mut answered = 0;
        while let Some(result) = calls.join_next().await {
            let got = result.expect("call task").expect("unary call failed");
            assert_eq!(got, 1);
            answered += 1;
        }
        assert_eq!(answered, n);
        assert_eq!(conn.ended(), None, "the connection ended");
    });
}

/// Pipelines `n` requests made by `request` on one call to `path` without reading any
/// answer until the writer stalls, then reads `n` answers and passes each to `check`.
/// Fails if the server read everything without answering (no backpressure), or if the
/// connection ended.
async fn held_back_then_answered<Req, Resp>(
    addr: SocketAddr,
    path: &str,
    n: usize,
    request: impl Fn(usize) -> Req + Send + 'static,
    mut check: impl FnMut(Resp),
) where
    Req: prost::Message + 'static,
    Resp: prost::Message + Default,
{
    // small receive windows: answers the client does not read back up quickly
    let conn = Conn::connect_with_windows(addr, 64 * 1024, 64 * 1024).await;
    let (mut sender, body) = conn.call(path).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            for i in 0..n {
                sender.send(&request(i), false).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sender
        }
    });
    // The writer stalls once the server stops reading (flow control). Quiescence can only
    // be observed over time: no progress for a whole second, or everything sent.
    let mut last = usize::MAX;
    let stalled_at = loop {
        let now = sent.load(Ordering::Relaxed);
        if now == n || now == last {
            break now;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(stalled_at < n, "the server read all {n} requests without any being answered");
    assert_eq!(conn.ended(), None, "the connection ended while the client was held back");
    eprintln!("{path}: held back after {stalled_at} of {n} requests");
    let mut body = body.await.expect("response task");
    let mut reader = Reader::default();
    for answered in 0..n {
        let Some(resp) = reader.next::<Resp>(&mut body).await else {
            panic!("{path}: the call ended after {answered} of {n} answers; connection: {:?}", conn.ended());
        };
        check(resp);
    }
    let _sender = writer.await.expect("writer");
    assert_eq!(conn.ended(), None, "the connection ended");
}

#[test]
fn a_watch_client_that_does_not_read_is_held_back_not_disconnected() {
    let server = Server::start(target_kind());
    let mut ids = HashSet::new();
    run(held_back_then_answered(server.client_addr(), "/etcdserverpb.Watch/Watch", 100_000, create, |resp: WatchResponse| {
        assert!(resp.created && !resp.canceled, "{resp:?}");
        assert!(ids.insert(resp.watch_id), "watch ID {} answered twice", resp.watch_id);
    }));
}

#[test]
fn a_keepalive_client_that_does_not_read_is_held_back_not_disconnected() {
    let server = Server::start(target_kind());
    run(async {
        let (_conn, id) = granted(server.client_addr()).await;
        held_back_then_answered(
            server.client_addr(),
            "/etcdserverpb.Lease/LeaseKeepAlive",
            100_000,
            move |_| LeaseKeepAliveRequest { id },
            |resp: LeaseKeepAliveResponse| assert!(resp.id == id && resp.ttl > 0, "{resp:?}"),
        )
        .await;
    });
}

/// Creations per second for 100,000 pipelined creations on one stream, cairn then etcd.
#[test]
#[ignore = "measurement for BENCHMARKS.md"]
fn pipelined_creates_rate() {
    let n = 100_000;
    for kind in [Kind::Cairn, Kind::Etcd] {
        let server = Server::start(kind);
        let took = run(pipelined_creates(server.client_addr(), n));
        println!("{kind:?}: {n} pipelined creations on one stream in {took:.2?} = {:.0}/s", n as f64 / took.as_secs_f64());
    }
}

/// `etcd_debugging_mvcc_watcher_total` from the server's `/metrics` on its client URL.
fn watchers(addr: SocketAddr) -> u64 {
    let (status, _, body) = common::http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no watcher gauge in:\n{body}"))
}

/// A client pipelines watch creations without reading until it is held back, then goes
/// away: by resetting its stream (`reset_only`, the connection stays) or by closing the
/// connection. The server must let go of the stream and every watch on it.
async fn a_held_back_client_goes_away(addr: SocketAddr, reset_only: bool) {
    let conn = Conn::connect_with_windows(addr, 64 * 1024, 64 * 1024).await;
    let (mut sender, body) = conn.call("/etcdserverpb.Watch/Watch").await;
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            for i in 0..1_000_000 {
                sender.send(&create(i), false).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // held back: no progress for a whole second
    let mut last = usize::MAX;
    while sent.load(Ordering::Relaxed) != last {
        last = sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before = tokio::task::spawn_blocking(move || watchers(addr)).await.expect("metrics");
    assert!(before > 0, "the held-back stream holds watches");
    // dropping both halves of the call resets the stream (RST_STREAM CANCEL)
    writer.abort();
    let _ = writer.await;
    drop(body);
    if !reset_only {
        drop(conn);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = tokio::task::spawn_blocking(move || watchers(addr)).await.expect("metrics");
        if now == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{now} of {before} watches still registered 20 s after the client went away (reset only: {reset_only})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_held_back_watch_stream_that_is_reset_releases_its_watches() {
    let server = Server::start(target_kind());
    run(a_held_back_client_goes_away(server.client_addr(), true));
}

#[test]
fn a_held_back_watch_connection_that_closes_releases_its_watches() {
    let server = Server::start(target_kind());
    run(a_held_back_client_goes_away(server.client_addr(), false));
}
