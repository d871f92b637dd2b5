//! Connections that cost the server without asking anything of it: thousands of idle
//! ones, ones that dribble their bytes, ones that stop mid-frame, and one that opens
//! streams and never reads what comes back.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use cairn_proto::etcdserverpb::{PutRequest, PutResponse, RangeRequest, RangeResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::common::{target_kind, Server};
use crate::raw::Conn;
use crate::run;
use crate::support::{call, code, rss_bytes, Control};

/// The client connection preface and an empty SETTINGS frame.
const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Raises this process's soft open-file limit to its hard limit (the server, started
/// after, inherits it); returns the limit.
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// An idle HTTP/2 connection: preface and SETTINGS sent, the server's first frame header
/// read (so the server has taken the connection on), then nothing.
async fn idle_connection(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(PREFACE_AND_SETTINGS).await?;
    let mut header = [0u8; 9];
    tcp.read_exact(&mut header).await?;
    assert_eq!(header[3], 0x4, "the server's first frame is its SETTINGS");
    Ok(tcp)
}

/// 10,000 idle HTTP/2 connections (or as many as the open-file limit allows, reported):
/// the control client keeps being answered, and the server's memory grows by a bounded
/// amount per connection.
#[test]
fn ten_thousand_idle_connections() {
    let limit = raise_open_files();
    // this process holds one descriptor per connection, the server another; leave room
    let n = 10_000.min(limit.saturating_sub(512) as usize);
    if n < 10_000 {
        eprintln!("the open-file limit is {limit}: {n} connections instead of 10,000");
    }
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    let pid = server.pid().expect("server pid");
    run(async {
        let mut control = Control::start(addr).await;
        let before = rss_bytes(pid);
        let gate = Arc::new(tokio::sync::Semaphore::new(128));
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..n {
            let gate = gate.clone();
            opening.spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore");
                idle_connection(addr).await
            });
        }
        let mut idle = Vec::with_capacity(n);
        while let Some(opened) = opening.join_next().await {
            idle.push(opened.expect("task").expect("an idle connection"));
        }
        let after = rss_bytes(pid);
        let per_connection = after.saturating_sub(before) / n as u64;
        eprintln!(
            "{:?}: {n} idle connections: RSS {} -> {} MiB, {per_connection} bytes per connection",
            server.kind(),
            before >> 20,
            after >> 20
        );
        assert!(per_connection <= 64 * 1024, "{per_connection} bytes of RSS per idle connection");
        control.wait_rounds(20).await;
        let report = control.finish(1).await;
        eprintln!("control client: {report:?}");
        drop(idle);
        // and the server still takes new clients
        Control::start(addr).await.finish(1).await;
    });
}

/// A stream whose writes go out one byte at a time, `gap` apart.
struct Dribble {
    inner: TcpStream,
    gap: Duration,
    pause: Option<Pin<Box<Sleep>>>,
}

impl AsyncWrite for Dribble {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(pause) = self.pause.as_mut() {
            ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..1]))?;
        let gap = self.gap;
        self.pause = Some(Box::pin(tokio::time::sleep(gap)));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Dribble {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

use std::future::Future as _;

/// Fifty clients dribble their preface, SETTINGS, HEADERS and messages one byte every
/// 2 ms: each is answered correctly in the end, and the control client is never held up.
#[test]
fn clients_dribbling_byte_by_byte_are_answered_and_hold_no_one_up() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    run(async {
        let control = Control::start(addr).await;
        let mut dribblers = tokio::task::JoinSet::new();
        for i in 0..50 {
            dribblers.spawn(async move {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                let io = Dribble { inner: tcp, gap: Duration::from_millis(2), pause: None };
                let conn = Conn::over(io, 1 << 20, 1 << 20).await;
                let key = format!("/dribble/{i}").into_bytes();
                let put = PutRequest { key: key.clone(), value: b"slow".to_vec(), ..Default::default() };
                conn.unary::<_, PutResponse>("/etcdserverpb.KV/Put", &put).await.expect("dribbled put");
                let got: RangeResponse = conn
                    .unary("/etcdserverpb.KV/Range", &RangeRequest { key, ..Default::default() })
                    .await
                    .expect("dribbled range");
                assert_eq!(got.kvs.len(), 1);
                assert_eq!(got.kvs[0].value, &b"slow"[..]);
            });
        }
        while let Some(done) = dribblers.join_next().await {
            done.expect("a dribbling client");
        }
        let report = control.finish(1).await;
        eprintln!("{:?}: control client during 50 dribbling clients: {report:?}", server.kind());
    });
}

/// Connections that stop mid-way and stay open: half a preface, a preface and a frame
/// header declaring 1,000 bytes of HEADERS followed by ten, a DATA frame cut short on an
/// open call. The server keeps serving the control client, and stays up.
#[test]
fn connections_cut_mid_frame_hold_no_one_up() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    let pid = server.pid().expect("server pid");
    run(async {
        let mut control = Control::start(addr).await;
        let before = rss_bytes(pid);
        let mut stuck = Vec::new();
        for i in 0..300 {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            match i % 3 {
                0 => tcp.write_all(&PREFACE_AND_SETTINGS[..12]).await.expect("half a preface"),
                1 => {
                    tcp.write_all(PREFACE_AND_SETTINGS).await.expect("preface");
                    // HEADERS, 1,000 bytes, END_HEADERS, stream 1; then ten of them
                    tcp.write_all(&[0x00, 0x03, 0xe8, 0x01, 0x04, 0, 0, 0, 1]).await.expect("frame header");
                    tcp.write_all(&[0x82; 10]).await.expect("part of a header block");
                }
                _ => {
                    stuck.push(None);
                    let conn = Conn::connect(addr).await;
                    let (mut sender, _response) = conn.call("/etcdserverpb.KV/Put").await;
                    // a gRPC prefix declaring 100 bytes, and 3 of them
                    let data = bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 0x0a, 0x01, b'k']);
                    sender.send_large(data, false).await.expect("part of a message");
                    stuck.push(Some((conn, sender)));
                    continue;
                }
            }
            stuck.push(None);
            // keep the socket open
            std::mem::forget(tcp);
        }
        // the control client keeps being answered with all of them stuck
        control.wait_rounds(50).await;
        let report = control.finish(1).await;
        let after = rss_bytes(pid);
        eprintln!(
            "{:?}: 300 connections cut mid-frame: control {report:?}, RSS {} -> {} MiB",
            server.kind(),
            before >> 20,
            after >> 20
        );
        assert!(after.saturating_sub(before) < 64 << 20, "RSS grew by {} MiB", (after - before) >> 20);
        drop(stuck);
    });
}

/// A client opens 100 Range calls for a 1 MiB value on one connection and never reads:
/// its connection window (64 KiB) runs out at once. The server holds what it already
/// made for those calls (bounded: about one response per open call) and keeps serving
/// the control client; when the client goes away the server is still up.
#[test]
fn a_client_that_never_reads_its_responses_is_held_by_flow_control() {
    let server = Server::start(target_kind());
    let addr = server.client_addr();
    let pid = server.pid().expect("server pid");
    run(async {
        let setup = Conn::connect(addr).await;
        let big = PutRequest { key: b"/big".to_vec(), value: vec![b'x'; 1 << 20], ..Default::default() };
        // larger than a stream window: sent in pieces
        let ended = call(&setup, "/etcdserverpb.KV/Put", &big).await;
        assert_eq!(ended.code, Some(code::OK), "put the big value: {ended:?}");
        let mut control = Control::start(addr).await;
        let before = rss_bytes(pid);
        let deaf = Conn::connect_with_windows(addr, 65_535, 65_535).await;
        let calls = 100;
        let mut responses = Vec::new();
        for _ in 0..calls {
            let (mut sender, response) = deaf.call_with_headers("/etcdserverpb.KV/Range").await;
            sender.send(&RangeRequest { key: b"/big".to_vec(), ..Default::default() }, true).await;
            responses.push(response);
        }
        // every call was answered (headers), none of the bodies is read
        let mut bodies = Vec::new();
        for r in responses {
            bodies.push(r.await.expect("response headers"));
        }
        control.wait_rounds(20).await;
        let report = control.finish(1).await;
        let after = rss_bytes(pid);
        let grown = after.saturating_sub(before);
        eprintln!(
            "{:?}: {calls} unread 1 MiB responses: RSS {} -> {} MiB; control {report:?}",
            server.kind(),
            before >> 20,
            after >> 20
        );
        // at most a few copies of each held response
        assert!(grown < calls as u64 * (4 << 20), "RSS grew by {} MiB", grown >> 20);
        assert_eq!(deaf.ended(), None, "the server closed the slow reader's connection");
        drop(bodies);
        drop(deaf);
        Control::start(addr).await.finish(1).await;
    });
}
