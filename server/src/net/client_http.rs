//! Plain HTTP on the client URLs, beside gRPC, as etcd serves it there: `/health`,
//! `/livez`, `/readyz` and `/metrics` (answered as the metrics listeners answer them, see
//! `http.rs`) and `/version`. Probes and scrapers often use the client port
//! (`curl http://127.0.0.1:2379/health`), and etcd's own tests do.
//!
//! The client listeners accept HTTP/1.1 as well as HTTP/2 (hyper tells them apart by the
//! HTTP/2 preface); every request no gRPC service claims reaches [`answer`], the router's
//! fallback. A gRPC request for an unknown method still gets gRPC's UNIMPLEMENTED.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;

use crate::net::http::{answer_parts, StatusSource};
use crate::startup::config::ETCD_VERSION;
use crate::member::CLUSTER_VERSION;

/// The router's fallback (see the module docs); `source` is `None` for a server without
/// a member (nothing to report: 404).
pub(crate) async fn answer(source: Option<StatusSource>, req: Request) -> Response {
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    let method = req.method().as_str();
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let (status, content_type, body) = match (path, &source) {
        ("/version", _) if method == "GET" => (200, "application/json", version_json()),
        (_, Some(source)) => answer_parts(source, method, path, query),
        (_, None) => (404, "text/plain; charset=utf-8", "404 page not found\n".to_owned()),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// etcd's `/version` body.
fn version_json() -> String {
    format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}.0\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, grpc: bool) -> Request {
        let mut b = http::Request::builder().method("GET").uri(path);
        if grpc {
            b = b.header("content-type", "application/grpc");
        }
        b.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn version_and_unknown_paths() {
        let r = answer(None, get("/version", false)).await;
        assert_eq!(r.status(), 200);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(&body[..], format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"3.5.0\"}}").as_bytes());
        assert_eq!(answer(None, get("/nope", false)).await.status(), 404);
        // a gRPC call nobody serves stays a gRPC answer
        let r = answer(None, get("/etcdserverpb.Nope/Call", true)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("grpc-status").map(|v| v.to_str().unwrap()), Some("12"));
    }
}
