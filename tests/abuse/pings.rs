//! `--grpc-keepalive-min-time`: a client that pings faster than the minimum while it has a
//! stream open is sent GOAWAY ENHANCE_YOUR_CALM "too_many_pings" on the fourth early ping
//! (grpc-go's three strikes) and disconnected, while other connections go on; one that
//! pings a little slower than the minimum is never disconnected. Without an open stream
//! the least time between pings is 2 h. TLS connections are not held to it, as in etcd.
//! Same on etcd.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_proto::etcdserverpb::{watch_request, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest, WatchResponse};
use h2::RecvStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::common::{free_addr, target_kind, Options, RawServer, Server};
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

/// A client socket that keeps every byte the server sent, and takes no write error: the
/// server closes right after its GOAWAY, and grpc-go's may have sent a PING the client
/// answers after that close; h2 would then stop at the write error before it read the
/// GOAWAY already received.
struct Recorder<IO> {
    tcp: IO,
    received: Arc<Mutex<Vec<u8>>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Recorder<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        this.received.lock().unwrap().extend_from_slice(&buf.filled()[before..]);
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Recorder<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf) {
            Poll::Ready(Err(_)) => Poll::Ready(Ok(buf.len())),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx).map(|_| Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx).map(|_| Ok(()))
    }
}

/// The payload of h2's own (user) PINGs (`h2::frame::Ping::USER`, not exported), which
/// tells their ACKs from those of grpc-go's BDP pings.
const H2_USER_PING: [u8; 8] = [0x3b, 0x7c, 0xdb, 0x7a, 0x0b, 0x87, 0x16, 0xb4];

/// What the server sent before its GOAWAY, and the GOAWAY.
#[derive(Debug)]
struct Seen {
    /// ACKs of the client's own PINGs (h2's user payload) before the GOAWAY.
    acks_before_goaway: usize,
    /// The GOAWAY's error code and debug data.
    goaway: Option<(u32, Vec<u8>)>,
}

fn frames_seen(received: &[u8]) -> Seen {
    let mut seen = Seen { acks_before_goaway: 0, goaway: None };
    let mut at = 0;
    while let Some(h) = received.get(at..at + 9) {
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let Some(payload) = received.get(at + 9..at + 9 + len) else { break };
        match (h[3], h[4]) {
            (0x6, 0x1) if payload == H2_USER_PING => seen.acks_before_goaway += 1,
            (0x7, _) if payload.len() >= 8 => {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                seen.goaway = Some((code, payload[8..].to_vec()));
                break;
            }
            _ => {}
        }
        at += 9 + len;
    }
    seen
}

async fn ping_acked(conn: &mut Conn, i: usize) {
    match tokio::time::timeout(ANSWER_DEADLINE, conn.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("ping {i} was not answered: {e}"),
        Err(_) => panic!("ping {i} was not answered in {ANSWER_DEADLINE:?}"),
    }
}

/// Pings every 50 ms over `io` (with a Watch stream open if `with_stream`) and checks that
/// the server answers four pings, then sends GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and
/// closes the connection.
async fn ping_fast_until_goaway<IO>(io: IO, with_stream: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut conn = Conn::over(Recorder { tcp: io, received: received.clone() }, 1 << 20, 1 << 20).await;
    // with the stream: the first PING is not judged (the watch's answer reset the strikes);
    // without one, the first PING of a connection is not either. The next three are
    // strikes (sooner than min-time with a stream, than 2 h without), and the third closes
    let _watch = if with_stream { Some(open_watch(&conn).await) } else { None };
    for i in 1..=3 {
        ping_acked(&mut conn, i).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (its ACK may or may not surface through h2, which sees the connection end)
    let _ = tokio::time::timeout(ANSWER_DEADLINE, conn.ping()).await;
    let why = conn.wait_ended(ANSWER_DEADLINE).await.expect("the connection ends after the fourth early ping");
    let seen = frames_seen(&received.lock().unwrap());
    assert_eq!(seen.goaway, Some((0xb, b"too_many_pings".to_vec())), "GOAWAY ENHANCE_YOUR_CALM too_many_pings; h2: {why}");
    // all four pings answered, the fourth one too, before the GOAWAY
    assert_eq!(seen.acks_before_goaway, 4, "{seen:?}");
    assert!(conn.ping().await.is_err(), "the connection is closed");
}

#[test]
fn pings_faster_than_min_time_get_goaway_too_many_pings() {
    let server = start();
    let addr = server.client_addr();
    run(async move {
        let control = Control::start(addr).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        ping_fast_until_goaway(tcp, true).await;
        // the other connection was served all along, and still is
        let report = control.finish(2).await;
        let fresh = Conn::connect(addr).await;
        let got = fresh.unary::<_, RangeResponse>("/etcdserverpb.KV/Range", &RangeRequest { key: b"/control".to_vec(), ..Default::default() }).await;
        assert!(got.is_ok(), "{got:?}; control: {report:?}");
    });
    drop(server);
}

/// Without an open stream a client may ping once per 2 h only, whatever the min-time.
#[test]
fn pings_without_a_stream_get_goaway_too_many_pings() {
    let server = start();
    let addr = server.client_addr();
    run(async move {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        ping_fast_until_goaway(tcp, false).await;
    });
    drop(server);
}

/// Not over TLS: etcd 3.4 (and 3.5 without `--listen-client-http-urls`) serves gRPC on an
/// https client URL through Go's net/http HTTP/2 server (`grpcServer.ServeHTTP`,
/// embed/serve.go), where grpc-go's keepalive policy does not run, so every ping is
/// answered; cairn does the same, so a client that works with etcd there works with cairn.
#[test]
fn pings_over_tls_are_not_held_to_the_min_time() {
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_addr(), free_addr());
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec![client.ip().to_string()]).expect("certificate");
    let (cert_file, key_file) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_file, cert.pem()).expect("write certificate");
    std::fs::write(&key_file, signing_key.serialize_pem()).expect("write key");
    let args = vec![
        "--name=tls".to_owned(),
        format!("--data-dir={}", dir.path().join("data").display()),
        format!("--listen-client-urls=https://{client}"),
        format!("--advertise-client-urls=https://{client}"),
        format!("--listen-peer-urls=http://{peer}"),
        format!("--initial-advertise-peer-urls=http://{peer}"),
        format!("--initial-cluster=tls=http://{peer}"),
        format!("--cert-file={}", cert_file.display()),
        format!("--key-file={}", key_file.display()),
        "--grpc-keepalive-min-time=1s".to_owned(),
    ];
    let kind = target_kind();
    let mut server = RawServer::spawn(kind, &args);
    server.wait_ready();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    run(async move {
        let tcp = TcpStream::connect(client).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::from(client.ip()), tcp)
            .await
            .expect("TLS handshake");
        let mut conn = Conn::over(tls, 1 << 20, 1 << 20).await;
        let _watch = open_watch(&conn).await;
        for i in 1..=8 {
            ping_acked(&mut conn, i).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(conn.ended(), None, "etcd does not hold TLS clients to the min-time");
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
