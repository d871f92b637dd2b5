//! Networking: client and peer listeners (`listen`, `incoming`, `serve`), TLS (`tls`,
//! `peer_tls`, `tls_policy`, certificate reload in `tls_reload`, Go's
//! client-certificate rules in `tls_verify`, the peer client certificate's address check in
//! `peer_san`), the HTTP endpoints for probes and scrapers (`http`; on the
//! client URLs beside gRPC, `client_http`), and adapters that make hyper/tonic answer like
//! grpc-go (`authority`, `limits`, and `ping_guard` with the rules in `ping_policy`:
//! `--grpc-keepalive-min-time`), and `coalesce`, which sends the server's writes in bursts.

pub mod authority;
pub mod client_http;
pub mod coalesce;
pub mod http;
pub mod incoming;
pub mod limits;
pub mod listen;
pub mod peer_san;
pub mod peer_tls;
pub mod ping_guard;
pub mod ping_policy;
pub mod serve;
pub mod tls;
pub mod tls_policy;
pub mod tls_reload;
pub mod tls_verify;
