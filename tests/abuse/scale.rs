//! Large answers: a Range over a 200,000-key store, and a watch on the whole keyspace
//! while writes stream in, with one watcher that keeps up and one that never reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    request_op, response_op, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, WatchCreateRequest,
    WatchRequest, WatchResponse,
};

use crate::common::{target_kind, Server};
use crate::raw::{Conn, Reader};
use crate::run;
use crate::support::{rss_bytes, Control};

/// Writes keys `prefix{first..first+n}` (zero-padded) with `value_len`-byte values, in
/// Txns of 128 puts, 8 Txns in flight on one connection.
async fn fill(addr: SocketAddr, prefix: &str, first: usize, n: usize, value_len: usize) {
    let conn = Arc::new(Conn::connect(addr).await);
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut txns = tokio::task::JoinSet::new();
    for start in (first..first + n).step_by(128) {
        let conn = conn.clone();
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let success = (start..(start + 128).min(first + n))
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: format!("{prefix}{i:07}").into_bytes(),
                    value: vec![b'v'; value_len],
                    ..Default::default()
                })),
            })
            .collect();
        txns.spawn(async move {
            let _permit = permit;
            conn.unary::<_, TxnResponse>("/etcdserverpb.KV/Txn", &TxnRequest { success, ..Default::default() })
                .await
                .expect("a txn of puts");
        });
    }
    while let Some(done) = txns.join_next().await {
        done.expect("txn task");
    }
}

/// 200,000 keys of 100 bytes: three concurrent Ranges over all of them (about 27 MB each)
/// are answered whole while the control client keeps being answered; a Range with a
/// limit of 1,000 answers 1,000 keys, `more` and the full count.
#[test]
fn ranges_over_a_200k_key_store_with_and_without_limit() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    let pid = server.pid().expect("server pid");
    run(async {
        let n = 200_000;
        let started = Instant::now();
        fill(addr, "/scale/", 0, n, 100).await;
        eprintln!("{:?}: {n} keys written in {:.1?}", server.kind(), started.elapsed());
        let mut control = Control::start(addr).await;
        let before = rss_bytes(pid);
        let everything = RangeRequest { key: b"/scale/".to_vec(), range_end: b"/scale0".to_vec(), ..Default::default() };
        let mut ranges = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let everything = everything.clone();
            ranges.spawn(async move {
                let conn = Conn::connect(addr).await;
                let started = Instant::now();
                let all: RangeResponse = conn.unary("/etcdserverpb.KV/Range", &everything).await.expect("range over everything");
                (all, started.elapsed())
            });
        }
        let mut peak = before;
        while let Some(done) = ranges.join_next().await {
            let (all, took) = done.expect("range task");
            peak = peak.max(rss_bytes(pid));
            assert_eq!((all.count, all.kvs.len(), all.more), (n as i64, n, false));
            assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key), "keys in order");
            eprintln!("{:?}: a range over {n} keys in {took:.1?}", server.kind());
        }
        control.wait_rounds(5).await;
        let limited = RangeRequest { limit: 1000, ..everything };
        let conn = Conn::connect(addr).await;
        let some: RangeResponse = conn.unary("/etcdserverpb.KV/Range", &limited).await.expect("range with a limit");
        assert_eq!((some.count, some.kvs.len(), some.more), (n as i64, 1000, true));
        assert_eq!(some.kvs[999].key, &b"/scale/0000999"[..]);
        let report = control.finish(1).await;
        eprintln!(
            "{:?}: control during the ranges {report:?}; RSS {} MiB before, {} MiB at most after a range",
            server.kind(),
            before >> 20,
            peak >> 20
        );
        assert!(peak.saturating_sub(before) < 1 << 30, "RSS grew by {} MiB", (peak - before) >> 20);
    });
}

/// 200,000 keys of 100 bytes: three concurrent read-only Txns, each a Range over all of
/// them (about 27 MB) nested one level down, are answered whole while the control client
/// keeps being answered (a read-only Txn is a read, and is read off the runtime threads as
/// a Range is).
#[test]
fn read_only_txns_over_a_200k_key_store() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    run(async {
        let n = 200_000;
        fill(addr, "/scale/", 0, n, 100).await;
        let mut control = Control::start(addr).await;
        let everything = RangeRequest { key: b"/scale/".to_vec(), range_end: b"/scale0".to_vec(), ..Default::default() };
        let nested = TxnRequest {
            success: vec![RequestOp { request: Some(request_op::Request::RequestRange(everything)) }],
            ..Default::default()
        };
        let txn = TxnRequest { success: vec![RequestOp { request: Some(request_op::Request::RequestTxn(nested)) }], ..Default::default() };
        let mut txns = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let txn = txn.clone();
            txns.spawn(async move {
                let conn = Conn::connect(addr).await;
                let started = Instant::now();
                let resp: TxnResponse = conn.unary("/etcdserverpb.KV/Txn", &txn).await.expect("read-only txn over everything");
                (resp, started.elapsed())
            });
        }
        while let Some(done) = txns.join_next().await {
            let (resp, took) = done.expect("txn task");
            let range = match resp.responses.first().and_then(|r| r.response.as_ref()) {
                Some(response_op::Response::ResponseTxn(t)) => match t.responses.first().and_then(|r| r.response.as_ref()) {
                    Some(response_op::Response::ResponseRange(r)) => r.clone(),
                    other => panic!("inner answer {other:?}"),
                },
                other => panic!("answer {other:?}"),
            };
            assert_eq!((range.count, range.kvs.len(), range.more), (n as i64, n, false));
            eprintln!("{:?}: a read-only txn over {n} keys in {took:.1?}", server.kind());
        }
        control.wait_rounds(5).await;
        let report = control.finish(1).await;
        eprintln!("{:?}: control during the txns {report:?}", server.kind());
    });
}

fn watch_everything() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })),
    }
}

/// A watch on every key while 20,000 puts of 1 KiB stream in (16 in flight): a watcher
/// that reads keeps up and sees every event; a watcher that never reads is held by flow
/// control, costs bounded memory, and when it starts reading gets every event, in order,
/// none lost. The control client is answered throughout.
#[test]
fn a_whole_keyspace_watch_while_writes_stream_in() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    let pid = server.pid().expect("server pid");
    run(async {
        let mut control = Control::start(addr).await;
        let reader_conn = Conn::connect(addr).await;
        let (mut sender, body) = reader_conn.call("/etcdserverpb.Watch/Watch").await;
        sender.send(&watch_everything(), false).await;
        let mut body = body.await.expect("watch response");
        let mut reader = Reader::default();
        let created = reader.next::<WatchResponse>(&mut body).await.expect("created");
        assert!(created.created);
        let start_rev = created.header.expect("header").revision + 1;

        let deaf_conn = Conn::connect_with_windows(addr, 65_535, 65_535).await;
        let (mut deaf_sender, deaf_body) = deaf_conn.call("/etcdserverpb.Watch/Watch").await;
        let mut create = watch_everything();
        if let Some(RequestUnion::CreateRequest(c)) = create.request_union.as_mut() {
            c.start_revision = start_rev;
        }
        deaf_sender.send(&create, false).await;

        let before = rss_bytes(pid);
        let n = 20_000;
        // one put per request, 16 in flight: one revision per put
        let writer = tokio::spawn(async move {
            let conn = Arc::new(Conn::connect(addr).await);
            let gate = Arc::new(tokio::sync::Semaphore::new(16));
            let mut puts = tokio::task::JoinSet::new();
            for i in 0..n {
                let conn = conn.clone();
                let permit = gate.clone().acquire_owned().await.expect("semaphore");
                puts.spawn(async move {
                    let _permit = permit;
                    let put = PutRequest { key: format!("/stream/{i:07}").into_bytes(), value: vec![b'w'; 1024], ..Default::default() };
                    conn.unary::<_, cairn_proto::etcdserverpb::PutResponse>("/etcdserverpb.KV/Put", &put).await.expect("put");
                });
            }
            while let Some(done) = puts.join_next().await {
                done.expect("put task");
            }
        });
        // the control client's puts interleave: revisions increase, /stream/ keys are counted
        read_events_in_order(&mut body, &mut reader, b"/stream/", n).await.expect("the reading watcher");
        writer.await.expect("writer");
        control.wait_rounds(5).await;
        let during = rss_bytes(pid);
        eprintln!(
            "{:?}: {n} puts of 1 KiB with a deaf whole-keyspace watcher: RSS {} -> {} MiB",
            server.kind(),
            before >> 20,
            during >> 20
        );
        assert!(during.saturating_sub(before) < 256 << 20, "RSS grew by {} MiB", (during - before) >> 20);
        assert_eq!(deaf_conn.ended(), None, "the deaf watcher's connection was closed");
        // the deaf watcher (created at the reading one's start revision) wakes up and
        // reads: every event, in order
        let mut deaf_body = deaf_body.await.expect("deaf watch response");
        let mut deaf_reader = Reader::default();
        read_events_in_order(&mut deaf_body, &mut deaf_reader, b"/stream/", n).await.expect("the watcher that read late");
        let report = control.finish(1).await;
        eprintln!("control client during the stream: {report:?}");
    });
}

/// Reads a watch stream until the `n` keys `prefix{0..n}` (zero-padded) each arrived
/// exactly once, with revisions increasing across every event (other writers' included).
async fn read_events_in_order(body: &mut h2::RecvStream, reader: &mut Reader, prefix: &[u8], n: usize) -> Result<(), String> {
    let mut seen = vec![false; n];
    let mut count = 0;
    let mut last_rev = 0;
    while count < n {
        let Some(resp) = reader.next::<WatchResponse>(body).await else {
            return Err(format!("the stream ended after {count} of {n} events"));
        };
        if resp.canceled {
            return Err(format!("the watch was canceled after {count} of {n} events: {resp:?}"));
        }
        for ev in resp.events {
            let kv = ev.kv.expect("event kv");
            if kv.mod_revision <= last_rev {
                return Err(format!("revision {} after {last_rev}", kv.mod_revision));
            }
            last_rev = kv.mod_revision;
            let Some(i) = kv.key.strip_prefix(prefix) else { continue };
            let i: usize = std::str::from_utf8(i).ok().and_then(|s| s.parse().ok()).ok_or("bad key")?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(format!("key {i} twice"));
            }
            count += 1;
        }
    }
    Ok(())
}
