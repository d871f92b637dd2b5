//! `--grpc-keepalive-min-time`: a client that pings faster than the minimum while it has a
//! stream open is sent GOAWAY ENHANCE_YOUR_CALM "too_many_pings" on the fourth early ping
//! (grpc-go's three strikes) and disconnected, while other connections go on; one that
//! pings a little slower than the minimum is never disconnected. Same on etcd.

use std::time::Duration;

use cairn_proto::etcdserverpb::{watch_request, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest, WatchResponse};
use h2::RecvStream;

use crate::common::{target_kind, Options, Server};
use crate::raw::{Conn, Reader, Sender};
use crate::run;
use crate::support::Control;

/// How long a PING's ACK, a watch's creation or the GOAWAY may take.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

fn start() -> Server {
    let extra_args = vec!["--grpc-keepalive-min-time".to_owned(), "1s".to_owned()];
    Server::start_with(target_kind(), Options { extra_args, ..Default::default() })
}

/// Opens a Watch stream and waits for its watch to be created, so the server counts the
/// stream as active (and has sent HEADERS and DATA on it, which resets the strikes once).
async fn open_watch(conn: &Conn) -> (Sender, RecvStream) {
    let (mut sender, body) = conn.call("/etcdserverpb.Watch/Watch").await;
    let create = WatchCreateRequest { key: b"/pings".to_vec(), ..Default::default() };
    let request = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
    sender.send(&request, false).await;
    let mut body = body.await.expect("watch response task");
    let created = tokio::time::timeout(ANSWER_DEADLINE, Reader::default().next::<WatchResponse>(&mut body))
        .await
        .expect("the watch is created in time")
        .expect("a WatchResponse");
    assert!(created.created, "{created:?}");
    (sender, body)
}

async fn ping_acked(conn: &mut Conn, i: usize) {
    match tokio::time::timeout(ANSWER_DEADLINE, conn.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("ping {i} was not answered: {e}"),
        Err(_) => panic!("ping {i} was not answered in {ANSWER_DEADLINE:?}"),
    }
}

#[test]
fn pings_faster_than_min_time_get_goaway_too_many_pings() {
    let server = start();
    let addr = server.client_addr();
    run(async move {
        let control = Control::start(addr).await;
        let mut conn = Conn::connect(addr).await;
        let (_sender, _body) = open_watch(&conn).await;
        // every 50 ms: the first PING is not judged (the watch's answer reset the strikes),
        // the next three are strikes; each is answered, and the third strike closes
        for i in 1..=4 {
            ping_acked(&mut conn, i).await;
            if i < 4 {
                assert_eq!(conn.ended(), None, "the connection ended after ping {i}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let why = conn.wait_ended(ANSWER_DEADLINE).await.expect("the connection ends after the fourth early ping");
        assert!(why.contains("ENHANCE_YOUR_CALM") && why.contains("too_many_pings") && why.contains("Remote"), "{why}");
        assert!(conn.ping().await.is_err(), "the connection is closed");
        // the other connection was served all along, and still is
        let report = control.finish(2).await;
        let fresh = Conn::connect(addr).await;
        let got = fresh.unary::<_, RangeResponse>("/etcdserverpb.KV/Range", &RangeRequest { key: b"/control".to_vec(), ..Default::default() }).await;
        assert!(got.is_ok(), "{got:?}; control: {report:?}");
    });
    drop(server);
}

#[test]
fn pings_just_slower_than_min_time_never_disconnect() {
    let server = start();
    let addr = server.client_addr();
    run(async move {
        let mut conn = Conn::connect(addr).await;
        let (_sender, _body) = open_watch(&conn).await;
        let mut last = tokio::time::Instant::now();
        for i in 1..=6 {
            // paced from the previous ACK, so every PING is at least 1.2 s after the last
            tokio::time::sleep_until(last + Duration::from_millis(1200)).await;
            last = tokio::time::Instant::now();
            ping_acked(&mut conn, i).await;
            assert_eq!(conn.ended(), None, "the connection ended after ping {i}");
        }
        let got = conn.unary::<_, RangeResponse>("/etcdserverpb.KV/Range", &RangeRequest { key: b"/pings".to_vec(), ..Default::default() }).await;
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(conn.ended(), None);
    });
    drop(server);
}
