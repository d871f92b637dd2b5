//! etcd's status for a request over the gRPC size limit.
//!
//! Requests larger than `--max-request-bytes` plus gRPC's 512 KiB allowance are refused while
//! decoding. grpc-go (etcd) answers RESOURCE_EXHAUSTED `grpc: received message larger than
//! max (N vs. M)`; tonic answers OUT_OF_RANGE `Error, decoded message length too large: ...`.
//! [`LimitStatusLayer`] rewrites tonic's answer into etcd's, in the response headers (a
//! unary call's error comes back "trailers-only") and in the trailers (a stream's error
//! after its headers: a Watch or LeaseKeepAlive request over the limit, or a prefix
//! declaring 4 GiB, which tonic refuses from the prefix alone, before buffering anything).
//!
//! (A Txn nested past what cairn decodes is answered with etcd's error by the codec
//! itself, `cairn_proto::codec`.)

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::future::{MapOk, TryFutureExt};
use http::{HeaderMap, HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";
const GRPC_OUT_OF_RANGE: &str = "11";
const GRPC_RESOURCE_EXHAUSTED: &str = "8";

/// Wraps the gRPC router with [`LimitStatus`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitStatusLayer;

impl<S> Layer<S> for LimitStatusLayer {
    type Service = LimitStatus<S>;

    fn layer(&self, inner: S) -> LimitStatus<S> {
        LimitStatus { inner }
    }
}

/// Rewrites tonic's "message too large" status into grpc-go's.
#[derive(Debug, Clone)]
pub struct LimitStatus<S> {
    inner: S,
}

impl<S, Req, B> Service<Req> for LimitStatus<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<LimitBody<B>>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(Response<B>) -> Response<LimitBody<B>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.inner.call(request).map_ok(rewrite_response::<B>)
    }
}

fn rewrite_response<B>(response: Response<B>) -> Response<LimitBody<B>> {
    rewrite(response).map(|inner| LimitBody { inner })
}

pin_project_lite::pin_project! {
    /// A response body whose trailers get [`rewrite_headers`].
    pub struct LimitBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B: Body> Body for LimitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(frame.map(|f| {
            f.map(|mut frame| {
                if let Some(trailers) = frame.trailers_mut() {
                    rewrite_headers(trailers);
                }
                frame
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    rewrite_headers(response.headers_mut());
    response
}

/// Rewrites a gRPC status in `headers` (response headers or trailers) into etcd's.
fn rewrite_headers(headers: &mut HeaderMap) {
    let status = headers.get("grpc-status").and_then(|v| v.to_str().ok());
    if status != Some(GRPC_OUT_OF_RANGE) {
        return;
    }
    let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Some((found, limit)) = parse_tonic_message(&percent_decode(message)) else {
        return;
    };
    let etcd = format!("grpc: received message larger than max ({found} vs. {limit})");
    if let Ok(value) = HeaderValue::from_str(&etcd) {
        headers.insert("grpc-status", HeaderValue::from_static(GRPC_RESOURCE_EXHAUSTED));
        headers.insert("grpc-message", value);
    }
}

/// Undoes grpc-message's percent-encoding (tonic encodes spaces, among others).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(found, limit)` from tonic's message, if it is that message.
fn parse_tonic_message(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix(TONIC_TOO_LARGE)?;
    let (found, rest) = rest.split_once(' ')?;
    let limit = rest
        .strip_prefix("bytes, the limit is: ")?
        .strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &str, message: &str) -> Response<()> {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_str(status).unwrap());
        r.headers_mut()
            .insert("grpc-message", HeaderValue::from_str(message).unwrap());
        r
    }

    #[test]
    fn too_large_becomes_resource_exhausted() {
        let r = rewrite(response(
            "11",
            "Error, decoded message length too large: found 2621451 bytes, the limit is: 2097152 bytes",
        ));
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(
            r.headers()["grpc-message"],
            "grpc: received message larger than max (2621451 vs. 2097152)"
        );
    }

    #[test]
    fn percent_encoded_messages_are_understood() {
        let r = rewrite(response(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%203%20bytes,%20the%20limit%20is:%202%20bytes",
        ));
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(
            r.headers()["grpc-message"],
            "grpc: received message larger than max (3 vs. 2)"
        );
        assert_eq!(percent_decode("100%25 %zz%4"), "100% %zz%4");
    }

    #[test]
    fn trailers_are_rewritten_too() {
        use http_body_util::BodyExt;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("11"));
        trailers.insert(
            "grpc-message",
            HeaderValue::from_static("Error, decoded message length too large: found 4294967295 bytes, the limit is: 2097152 bytes"),
        );
        let body = http_body_util::StreamBody::new(futures::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ]));
        let collected = futures::executor::block_on(LimitBody { inner: body }.collect()).unwrap();
        let trailers = collected.trailers().expect("trailers");
        assert_eq!(trailers["grpc-status"], "8");
        assert_eq!(trailers["grpc-message"], "grpc: received message larger than max (4294967295 vs. 2097152)");
    }

    #[test]
    fn other_statuses_are_untouched() {
        let r = rewrite(response(
            "11",
            "etcdserver: mvcc: required revision is a future revision",
        ));
        assert_eq!(r.headers()["grpc-status"], "11");
        let r = rewrite(response(
            "3",
            "Error, decoded message length too large: found 1 bytes, the limit is: 0 bytes",
        ));
        assert_eq!(r.headers()["grpc-status"], "3");
        let r = rewrite(Response::new(()));
        assert!(r.headers().get("grpc-status").is_none());
    }
}
