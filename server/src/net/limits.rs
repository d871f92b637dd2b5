//! etcd's status for a request over the gRPC size limit.
//!
//! Requests larger than `--max-request-bytes` plus gRPC's 512 KiB allowance are refused while
//! decoding. grpc-go (etcd) answers RESOURCE_EXHAUSTED `grpc: received message larger than
//! max (N vs. M)`; tonic answers OUT_OF_RANGE `Error, decoded message length too large: ...`.
//! [`LimitStatusLayer`] rewrites tonic's answer into etcd's. It sees unary calls, whose
//! error comes back in the response headers ("trailers-only"), which is where KV, Cluster
//! and Maintenance requests are.

use std::task::{Context, Poll};

use futures::future::{MapOk, TryFutureExt};
use http::{HeaderValue, Response};
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
    type Response = Response<B>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(Response<B>) -> Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.inner.call(request).map_ok(rewrite::<B>)
    }
}

fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) != Some(GRPC_OUT_OF_RANGE) {
        return response;
    }
    let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return response;
    };
    let Some((found, limit)) = parse_tonic_message(&percent_decode(message)) else {
        return response;
    };
    let etcd = format!("grpc: received message larger than max ({found} vs. {limit})");
    if let Ok(value) = HeaderValue::from_str(&etcd) {
        headers.insert(
            "grpc-status",
            HeaderValue::from_static(GRPC_RESOURCE_EXHAUSTED),
        );
        headers.insert("grpc-message", value);
    }
    response
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
