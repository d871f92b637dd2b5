//! Accepted connections, as the streams tonic serves: plain TCP or TLS, each wrapped in
//! [`Coalesce`] (writes sent in bursts), [`PingGuard`] (plain-text client listeners:
//! `--grpc-keepalive-min-time`) and [`AuthorityFix`]. Peer listeners also check a client certificate's addresses against
//! the connection's source after the handshake ([`PeerSanCheck`]), as etcd's do.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use tracing::{debug, warn};

use crate::net::authority::AuthorityFix;
use crate::net::coalesce::Coalesce;
use crate::net::peer_san::{PeerSanCheck, Sans};
use crate::net::ping_guard::PingGuard;
use crate::net::ping_policy::PingPolicy;
use crate::net::tls_reload::ServerTls;

/// A client's TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const HANDSHAKEN_QUEUE: usize = 128;
/// Pause after an accept error (e.g. out of file descriptors) instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A connection as hyper sees it.
pub(crate) type Conn<IO> = AuthorityFix<PingGuard<Coalesce<IO>>>;

fn wrap<IO>(io: IO, pings: Option<PingPolicy>) -> Conn<IO> {
    AuthorityFix::new(PingGuard::new(Coalesce::new(io), pings))
}

/// Plain-TCP connections from `listener`; `pings`: the policy their clients' PINGs are
/// held to (`None`: any number).
pub(crate) fn plain(
    listener: TcpListener,
    pings: Option<PingPolicy>,
) -> impl Stream<Item = io::Result<Conn<TcpStream>>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(|io| wrap(io, pings)))
}

/// TLS connections from `listener`, their PINGs unlimited (etcd holds no https client to
/// the min-time). Handshakes run concurrently, each in its own task, so a slow or silent
/// client delays nobody else; so do the `san` checks of client certificates (peer
/// listeners). The listening socket closes when the returned stream is dropped (tonic drops
/// it at shutdown).
pub(crate) fn tls(
    listener: TcpListener,
    tls: ServerTls,
    san: Option<PeerSanCheck>,
) -> impl Stream<Item = io::Result<Conn<TlsStream<TcpStream>>>> {
    let (tx, rx) = mpsc::channel(HANDSHAKEN_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            let san = san.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        if let Some(san) = &san {
                            if !san_allows(san, &tls, peer).await {
                                return;
                            }
                        }
                        if tx.send(Ok(wrap(tls, None))).await.is_err() {
                            debug!(%peer, "server stopped during the TLS handshake");
                        }
                    }
                    // etcd logs rejected handshakes (bad client certificates) as warnings too.
                    Ok(Err(e)) => {
                        warn!(%peer, error = %e, "rejected a client connection: TLS handshake failed")
                    }
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Whether the client certificate of `tls` (if any) may connect from `peer`; a refusal is
/// logged as etcd logs it ("rejected connection", with the certificate's addresses).
async fn san_allows(san: &PeerSanCheck, tls: &TlsStream<TcpStream>, peer: SocketAddr) -> bool {
    let conn = tls.get_ref().1;
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else { return true };
    let result = match Sans::of(cert) {
        Ok(sans) => san.check(&sans, peer.ip()).await.map_err(|e| (sans, e)),
        Err(e) => Err((Sans::default(), e)),
    };
    let Err((sans, error)) = result else { return true };
    let ips: Vec<String> = sans.ips.iter().map(ToString::to_string).collect();
    warn!(
        remote_addr = %peer,
        server_name = conn.server_name().unwrap_or(""),
        ip_addresses = ?ips,
        dns_names = ?sans.dns,
        error = %error,
        "rejected connection"
    );
    false
}
