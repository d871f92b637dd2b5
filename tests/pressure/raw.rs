//! A raw HTTP/2 gRPC client on the `h2` crate that writes every gRPC message in its own
//! DATA frame, as Go's gRPC does, and as fast as the connection's flow control lets it:
//! tonic's client would coalesce pipelined messages into larger frames and hide what a Go
//! client does to a server.
//!
//! Shared by `tests/pressure` and `tests/abuse`; each uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// One HTTP/2 connection; its driver task reports how the connection ended.
pub struct Conn {
    send: SendRequest<Bytes>,
    /// `None` while the connection is up, then why it ended ("" for a clean end).
    pub ended: watch::Receiver<Option<String>>,
    /// The client's own PINGs ([`Conn::ping`]).
    pings: h2::PingPong,
}

impl Conn {
    /// Connects and starts the connection's driver task; responses are read
    /// concurrently, so the receive windows let them flow.
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::connect_with_windows(addr, 8 << 20, 64 << 20).await
    }

    /// Connects with these receive windows (per stream and for the connection).
    pub async fn connect_with_windows(addr: SocketAddr, stream_window: u32, connection_window: u32) -> Conn {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        Conn::over(tcp, stream_window, connection_window).await
    }

    /// An HTTP/2 connection over `io` (a TCP stream, or a wrapper that shapes its bytes).
    pub async fn over<T>(io: T, stream_window: u32, connection_window: u32) -> Conn
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(stream_window)
            .initial_connection_window_size(connection_window)
            // etcd answers in one DATA frame per message too; a client that does not read
            // them for a while must not close its own connection
            .data_frame_budget(usize::MAX / 2)
            .handshake::<_, Bytes>(io)
            .await
            .expect("h2 handshake");
        let pings = connection.ping_pong().expect("the connection's PingPong, taken once");
        let (ended_tx, ended) = watch::channel(None);
        tokio::spawn(async move {
            let why = match connection.await {
                Ok(()) => String::new(),
                Err(e) => format!("{e:?}"),
            };
            ended_tx.send_replace(Some(why));
        });
        Conn { send, ended, pings }
    }

    /// Sends a PING and waits for its ACK (an error if the connection ends first).
    pub async fn ping(&mut self) -> Result<(), String> {
        self.pings.ping(h2::Ping::opaque()).await.map(|_| ()).map_err(|e| format!("{e:?}"))
    }

    /// Waits until the connection ended, for at most `deadline`; why it ended.
    pub async fn wait_ended(&mut self, deadline: Duration) -> Option<String> {
        let ended = tokio::time::timeout(deadline, self.ended.wait_for(|e| e.is_some())).await;
        ended.ok().and_then(|e| e.ok()).and_then(|e| e.clone())
    }

    /// Why the connection ended, if it did.
    pub fn ended(&self) -> Option<String> {
        self.ended.borrow().clone()
    }

    /// Opens a gRPC call to `path` ("/etcdserverpb.Watch/Watch").
    pub async fn call(&self, path: &str) -> (Sender, tokio::task::JoinHandle<RecvStream>) {
        let (sender, response) = self.call_with_headers(path).await;
        (sender, tokio::spawn(async move { response.await.expect("response task").into_body() }))
    }

    /// Opens a gRPC call to `path`; the response comes with its headers (where a
    /// "trailers-only" answer carries its grpc-status).
    pub async fn call_with_headers(&self, path: &str) -> (Sender, tokio::task::JoinHandle<http::Response<RecvStream>>) {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://cairn{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut send = self.send.clone().ready().await.expect("connection ready");
        let (response, stream) = send.send_request(request, false).expect("send_request");
        let response = tokio::spawn(async move { response.await.expect("response headers") });
        (Sender { stream }, response)
    }

    /// One unary call: `request` to `path`, the decoded answer (or the grpc-status and message).
    pub async fn unary<Req: Message, Resp: Message + Default>(&self, path: &str, request: &Req) -> Result<Resp, String> {
        let (mut sender, body) = self.call(path).await;
        sender.send(request, true).await;
        let mut body = body.await.expect("response task");
        let mut reader = Reader::default();
        let resp = reader.next::<Resp>(&mut body).await;
        // read the call to its end: dropping it early resets the stream, and the server's
        // trailers then arrive for a stream the client forgot
        while let Some(rest) = body.data().await {
            rest.map_err(|e| format!("{e:?}"))?;
        }
        let trailers = body.trailers().await.map_err(|e| format!("{e:?}"))?.unwrap_or_default();
        match (resp, trailers.get("grpc-status").map(|s| s.as_bytes())) {
            (Some(resp), Some(b"0")) => Ok(resp),
            _ => Err(format!("{:?} {:?}", trailers.get("grpc-status"), trailers.get("grpc-message"))),
        }
    }
}

/// The request side of a call.
pub struct Sender {
    stream: SendStream<Bytes>,
}

/// `message` with gRPC's 5-byte prefix (not compressed, big-endian length).
pub fn frame<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(&u32::try_from(len).expect("message length").to_be_bytes());
    message.encode(&mut buf).expect("encode");
    buf.freeze()
}

impl Sender {
    /// Sends `message` in one DATA frame once flow control allows it.
    pub async fn send<M: Message>(&mut self, message: &M, end: bool) {
        self.send_bytes(frame(message), end).await
    }

    /// Sends `data` (framed or not) in one DATA frame once flow control allows it.
    pub async fn send_bytes(&mut self, data: Bytes, end: bool) {
        self.stream.reserve_capacity(data.len());
        while self.stream.capacity() < data.len() {
            match futures::future::poll_fn(|cx| self.stream.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("send capacity: {e:?}"),
                None => panic!("stream closed while sending"),
            }
        }
        self.stream.send_data(data, end).expect("send_data");
    }
}

impl Sender {
    /// Sends `data` in as many DATA frames as flow control needs (for messages larger
    /// than the server's stream window). Fails once the server closed or reset the
    /// stream (it may answer before it read everything).
    pub async fn send_large(&mut self, mut data: Bytes, end: bool) -> Result<(), String> {
        while !data.is_empty() {
            self.stream.reserve_capacity(data.len());
            let capacity = match futures::future::poll_fn(|cx| self.stream.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(format!("{e:?}")),
                None => return Err("stream closed".into()),
            };
            let piece = data.split_to(capacity.min(data.len()));
            let last = data.is_empty();
            self.stream.send_data(piece, end && last).map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    }
}

/// Reads gRPC messages from a response body.
#[derive(Default)]
pub struct Reader {
    buf: BytesMut,
}

impl Reader {
    /// The next message, or `None` at the end of the body (or on a stream error).
    pub async fn next<M: Message + Default>(&mut self, body: &mut RecvStream) -> Option<M> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let message = self.buf.split_to(len);
                    return Some(M::decode(message.freeze()).expect("decode response"));
                }
            }
            let chunk = body.data().await?.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            self.buf.extend_from_slice(&chunk);
        }
    }
}

/// How long any one pressure scenario may take.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `f` on a two-thread runtime (the server's machine has two cores), failing the
/// test if it takes longer than `deadline`.
pub fn run_within<F: std::future::Future>(deadline: Duration, f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async { tokio::time::timeout(deadline, f).await.expect("scenario exceeded its deadline") })
}
