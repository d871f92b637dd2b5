//! go-grpc-prometheus's server metrics, as etcd registers them: `grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_msg_received_total` and
//! `grpc_server_msg_sent_total`, labelled `grpc_type` (`unary`, `server_stream`,
//! `bidi_stream`), `grpc_service`, `grpc_method` and (handled) `grpc_code` (Go's code names:
//! `OK`, `Canceled`, `InvalidArgument`...). Every method's series exist from the start
//! (with every code), as go-grpc-prometheus pre-registers them.
//!
//! [`GrpcMetricsLayer`] wraps the client router and counts by the request's path:
//! - started when the call arrives;
//! - a message received for each gRPC message in a bidi stream's request body (one when a
//!   unary or server-streaming call starts, as go-grpc-prometheus counts it), a message sent
//!   for each one in the response body (each message is a 5-byte prefix and its payload;
//!   the layer follows the prefixes across data frames without copying);
//! - handled once, with the code of the call's end: `grpc-status` in the response headers
//!   (a trailers-only answer, e.g. an error before any message) or in the trailers; a
//!   response body dropped before its trailers (the client cancelled, the connection
//!   broke) counts as `Canceled`, which is what etcd's handlers return then.
//!
//! With `--metrics extensive` (etcd: `grpc_prometheus.EnableHandlingTimeHistogram()`),
//! `grpc_server_handling_seconds` too: a histogram (Prometheus' default buckets, 5 ms to
//! 10 s) of the time from a call's arrival to its end (the status sent, or the client
//! gone), by method; at the default `basic` level it is neither measured nor exported.
//!
//! Paths of no known method (plain HTTP on the client URLs, unknown methods) are not
//! counted. The method table is built once; counting is atomic adds on series it holds, and
//! a unary call costs no allocation beyond the router's own.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use std::future::Future;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use super::registry::{Counter, Family, Histogram};

/// Go's names of the gRPC status codes, by code.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// go-grpc-prometheus' handling-time buckets (Prometheus' `DefBuckets`), in seconds.
const HANDLING_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// The methods cairn serves on client URLs: (service, method, grpc_type).
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Downgrade", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
];

/// One method's series.
pub(crate) struct MethodSeries {
    /// The client sends a stream (bidi_stream): its messages are counted from the request
    /// body; a unary or server_stream call receives exactly one, counted when it starts (as
    /// go-grpc-prometheus counts it, before the handler runs).
    client_streams: bool,
    started: Arc<Counter>,
    received: Arc<Counter>,
    sent: Arc<Counter>,
    /// By code.
    handled: [Arc<Counter>; 17],
    /// Observed only with `--metrics extensive`.
    handling: Arc<Histogram>,
}

/// The four families and the method table.
pub(crate) struct GrpcMetrics {
    pub(crate) started: Family<Counter>,
    pub(crate) handled: Family<Counter>,
    pub(crate) msg_received: Family<Counter>,
    pub(crate) msg_sent: Family<Counter>,
    pub(crate) handling: Family<Histogram>,
    /// `--metrics extensive`: `handling` is measured and exported.
    extensive: Arc<AtomicBool>,
    /// By request path (`/etcdserverpb.KV/Put`); never changed after `new`.
    methods: Arc<HashMap<String, Arc<MethodSeries>>>,
}

impl GrpcMetrics {
    pub(crate) fn new() -> GrpcMetrics {
        let labels: &'static [&'static str] = &["grpc_method", "grpc_service", "grpc_type"];
        let started = Family::new("grpc_server_started_total", "Total number of RPCs started on the server.", labels, Counter::default);
        let handled = Family::new(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_code", "grpc_method", "grpc_service", "grpc_type"],
            Counter::default,
        );
        let msg_received =
            Family::new("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.", labels, Counter::default);
        let msg_sent = Family::new("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", labels, Counter::default);
        let bounds: Arc<[f64]> = Arc::from(HANDLING_BUCKETS.as_slice());
        let handling = Family::new(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            labels,
            move || Histogram::new(bounds.clone()),
        );
        let methods = METHODS
            .iter()
            .map(|&(service, method, kind)| {
                let series = MethodSeries {
                    client_streams: kind.starts_with("bidi") || kind.starts_with("client"),
                    started: started.with(&[method, service, kind]),
                    received: msg_received.with(&[method, service, kind]),
                    sent: msg_sent.with(&[method, service, kind]),
                    handled: CODE_NAMES.map(|code| handled.with(&[code, method, service, kind])),
                    handling: handling.with(&[method, service, kind]),
                };
                (format!("/{service}/{method}"), Arc::new(series))
            })
            .collect();
        let extensive = Arc::new(AtomicBool::new(false));
        GrpcMetrics { started, handled, msg_received, msg_sent, handling, extensive, methods: Arc::new(methods) }
    }

    /// `--metrics extensive`: measure and export `grpc_server_handling_seconds` from now on.
    pub(crate) fn enable_handling_time(&self) {
        self.extensive.store(true, Ordering::Relaxed);
    }

    /// Whether `grpc_server_handling_seconds` is measured and exported.
    pub(crate) fn handling_time_enabled(&self) -> bool {
        self.extensive.load(Ordering::Relaxed)
    }

    /// The layer counting into these series.
    pub(crate) fn layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer { methods: self.methods.clone(), extensive: self.extensive.clone() }
    }
}

/// Counts calls through the wrapped router (see the module docs).
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Arc<HashMap<String, Arc<MethodSeries>>>,
    extensive: Arc<AtomicBool>,
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcCounting<S>;

    fn layer(&self, inner: S) -> GrpcCounting<S> {
        GrpcCounting { inner, methods: self.methods.clone(), extensive: self.extensive.clone() }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcCounting<S> {
    inner: S,
    methods: Arc<HashMap<String, Arc<MethodSeries>>>,
    extensive: Arc<AtomicBool>,
}

impl<S, RB> Service<Request<tonic::body::Body>> for GrpcCounting<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<RB>>,
    RB: HttpBody<Data = Bytes> + Unpin,
{
    type Response = Response<CountedBody<RB>>;
    type Error = S::Error;
    type Future = CountingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let series = self.methods.get(request.uri().path()).cloned();
        let since = (series.is_some() && self.extensive.load(Ordering::Relaxed)).then(Instant::now);
        let request = match &series {
            Some(s) => {
                s.started.inc();
                if s.client_streams {
                    let counter = s.received.clone();
                    request.map(|body| tonic::body::Body::new(CountedRequest { inner: body, frames: Frames::default(), counter }))
                } else {
                    s.received.inc();
                    request
                }
            }
            None => request,
        };
        CountingFuture { inner: self.inner.call(request), series, since }
    }
}

pin_project_lite::pin_project! {
    /// The router's answer, its body wrapped to count what is sent and how the call ends.
    pub struct CountingFuture<F> {
        #[pin]
        inner: F,
        series: Option<Arc<MethodSeries>>,
        // when the call arrived, with `--metrics extensive`
        since: Option<Instant>,
    }
}

impl<F, RB, E> Future for CountingFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<CountedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(response)) => response,
        };
        let (parts, inner) = response.into_parts();
        let mut body = CountedBody { inner, frames: Frames::default(), series: this.series.take(), since: this.since.take() };
        if let Some(code) = status_code(&parts.headers) {
            // trailers-only: the call ended with the headers
            body.finish(code);
        }
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// The code in `grpc-status`, if the headers carry one (`Unknown` for a value that is not
/// a known code).
fn status_code(headers: &HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    Some(v.to_str().ok().and_then(|s| s.parse::<usize>().ok()).filter(|c| *c < CODE_NAMES.len()).unwrap_or(UNKNOWN))
}

/// Follows gRPC's length-prefixed messages across data frames, counting message starts.
#[derive(Default)]
struct Frames {
    /// Payload bytes of the current message still to come.
    remaining: u64,
    /// The prefix read so far (5 bytes: flag, big-endian length).
    prefix: [u8; 5],
    prefix_len: usize,
}

impl Frames {
    /// Messages whose prefix completes in `data`.
    fn count(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                messages += 1;
                self.remaining = u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
                self.prefix_len = 0;
            }
        }
        messages
    }
}

/// A request body counting the messages read from it.
struct CountedRequest {
    inner: tonic::body::Body,
    frames: Frames,
    counter: Arc<Counter>,
}

impl HttpBody for CountedRequest {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = this.frames.count(data.chunk());
                if n > 0 {
                    this.counter.add(n);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body counting the messages sent and the code the call ends with.
pub struct CountedBody<B> {
    inner: B,
    frames: Frames,
    /// `None` once counted as handled (or never counted: not a known method).
    series: Option<Arc<MethodSeries>>,
    /// When the call arrived, if its handling time is measured.
    since: Option<Instant>,
}

impl<B> CountedBody<B> {
    fn finish(&mut self, code: usize) {
        if let Some(s) = self.series.take() {
            s.handled[code].inc();
            if let Some(since) = self.since.take() {
                s.handling.observe(since.elapsed().as_secs_f64());
            }
        }
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        // gone before its trailers: the call was cancelled
        self.finish(CANCELED);
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(series) = &this.series {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let n = this.frames.count(data.chunk());
                        if n > 0 {
                            series.sent.add(n);
                        }
                    } else if let Some(trailers) = frame.trailers_ref() {
                        let code = status_code(trailers).unwrap_or(UNKNOWN);
                        this.finish(code);
                    }
                }
                Poll::Ready(Some(Err(_))) => this.finish(UNKNOWN),
                // ended without trailers: no status was sent
                Poll::Ready(None) => this.finish(UNKNOWN),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_prefixes_are_followed_across_frames() {
        let mut f = Frames::default();
        // two messages (3 and 0 bytes) in one frame
        assert_eq!(f.count(&[0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0]), 2);
        // a prefix split over frames, its payload in a third
        assert_eq!(f.count(&[0, 0, 0]), 0);
        assert_eq!(f.count(&[1, 4]), 1);
        assert_eq!(f.count(&[9; 260]), 0);
        assert_eq!(f.count(&[9; 4]), 0);
        assert_eq!(f.count(&[0, 0, 0, 0, 1, 7]), 1);
    }

    #[test]
    fn every_method_is_preregistered_with_every_code() {
        let g = GrpcMetrics::new();
        let mut out = String::new();
        super::super::registry::Collect::render(&g.handled, &mut out);
        let lines = out.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(lines, METHODS.len() * CODE_NAMES.len());
        assert!(out.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0\n"
        ));
        let s = g.methods.get("/etcdserverpb.KV/Put").unwrap();
        s.handled[0].inc();
        let mut out = String::new();
        super::super::registry::Collect::render(&g.handled, &mut out);
        assert!(out.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"
        ));
    }
}
