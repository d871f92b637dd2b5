//! What every abuse scenario needs: the server's resident memory, a healthy control
//! client that must keep being answered while the abuse runs, and gRPC calls whose
//! status (not only success) the test reads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use cairn_proto::etcdserverpb::{PutRequest, PutResponse, RangeRequest, RangeResponse};

use crate::raw::{frame, Conn};

/// How long the control client's calls may take while the abuse runs (etcd's clients
/// use a few seconds; a stalled server shows as a call over this).
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(5);

/// The resident set size of process `pid` in bytes (VmRSS in /proc/PID/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// A client doing put-then-get on its own connection until stopped; every call must be
/// answered correctly within [`CONTROL_DEADLINE`].
pub struct Control {
    stop: Arc<AtomicBool>,
    /// Rounds answered so far.
    rounds: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<Report, String>>,
}

/// What the control client saw.
#[derive(Debug)]
pub struct Report {
    /// Put-then-get rounds answered.
    pub rounds: u64,
    /// The slowest round.
    pub slowest: Duration,
}

impl Control {
    /// Starts the control client against `addr`; it has answered one round when this
    /// returns.
    pub async fn start(addr: SocketAddr) -> Control {
        let conn = Conn::connect(addr).await;
        round(&conn, 0).await.expect("the control client's first round");
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(1));
        let task = tokio::spawn({
            let stop = stop.clone();
            let rounds = rounds.clone();
            async move {
                let mut report = Report { rounds: 1, slowest: Duration::ZERO };
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    round(&conn, report.rounds).await?;
                    report.slowest = report.slowest.max(started.elapsed());
                    report.rounds += 1;
                    rounds.store(report.rounds, Ordering::Relaxed);
                }
                Ok(report)
            }
        });
        Control { stop, rounds, task }
    }

    /// Waits until the client has been answered `more` more times (while the abuse
    /// goes on), failing past the scenario's own deadline or if the client failed.
    pub async fn wait_rounds(&mut self, more: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + more;
        while self.rounds.load(Ordering::Relaxed) < target {
            if self.task.is_finished() {
                panic!("the control client stopped: {:?}", (&mut self.task).await);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the client after one more round; fails the test if any round failed or
    /// missed its deadline, or if the client never got a round in after `min_rounds`.
    pub async fn finish(self, min_rounds: u64) -> Report {
        // one more round after the abuse, whatever it did
        self.stop.store(true, Ordering::Relaxed);
        let report = self.task.await.expect("control task").unwrap_or_else(|e| panic!("control client: {e}"));
        assert!(report.rounds >= min_rounds, "the control client was answered only {} times: {report:?}", report.rounds);
        report
    }
}

/// One put of a fresh value and a get that must see it, each within the deadline.
async fn round(conn: &Conn, i: u64) -> Result<(), String> {
    let value = format!("v{i}").into_bytes();
    let put = PutRequest { key: b"/control".to_vec(), value: value.clone(), ..Default::default() };
    let call = conn.unary::<_, PutResponse>("/etcdserverpb.KV/Put", &put);
    tokio::time::timeout(CONTROL_DEADLINE, call).await.map_err(|_| format!("put {i} not answered in {CONTROL_DEADLINE:?}"))??;
    let get = RangeRequest { key: b"/control".to_vec(), ..Default::default() };
    let call = conn.unary::<_, RangeResponse>("/etcdserverpb.KV/Range", &get);
    let got = tokio::time::timeout(CONTROL_DEADLINE, call).await.map_err(|_| format!("get {i} not answered in {CONTROL_DEADLINE:?}"))??;
    match got.kvs.first() {
        Some(kv) if kv.value == value => Ok(()),
        other => Err(format!("get {i} read {other:?}")),
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The messages the server sent (without their 5-byte prefixes).
    pub messages: Vec<Bytes>,
    /// grpc-status (`None`: the server sent none, e.g. the stream was reset).
    pub code: Option<u32>,
    /// grpc-message, percent-decoded.
    pub message: String,
}

/// Sends `body` (gRPC-framed bytes, or anything) on a call to `path`, ends the request
/// if `end`, and reads the answer to its end (status from the trailers, or from the headers of a
/// "trailers-only" answer).
pub async fn call_bytes(conn: &Conn, path: &str, body: Bytes, end: bool) -> Ended {
    let (mut sender, response) = conn.call_with_headers(path).await;
    // the server may answer (and close the stream) before it read everything
    let _ = sender.send_large(body, end).await;
    let response = response.await.expect("response task");
    let (parts, mut body) = response.into_parts();
    let mut buf = BytesMut::new();
    let mut reset = false;
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
            }
            Err(_) => {
                reset = true;
                break;
            }
        }
    }
    let trailers = if reset { None } else { body.trailers().await.ok().flatten() };
    let headers = trailers.as_ref().filter(|t| t.contains_key("grpc-status")).unwrap_or(&parts.headers);
    // tonic reads grpc-status and the percent-encoded grpc-message as any client does
    let status = tonic::Status::from_header_map(headers);
    let code = status.as_ref().map(|s| s.code() as u32);
    let message = status.map(|s| s.message().to_owned()).unwrap_or_default();
    let mut messages = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        messages.push(buf.split_to(len).freeze());
    }
    Ended { messages, code, message }
}

/// A unary call of `request`, answered with its status.
pub async fn call<M: prost::Message>(conn: &Conn, path: &str, request: &M) -> Ended {
    call_bytes(conn, path, frame(request), true).await
}

/// gRPC status codes the scenarios name.
pub mod code {
    pub const OK: u32 = 0;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const INTERNAL: u32 = 13;
}
