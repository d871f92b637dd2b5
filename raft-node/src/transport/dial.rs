//! How a member dials its peers' `https://` URLs ([`PeerTls`]), for the Raft transport and
//! for the server's other peer calls (joining, lease forwarding).
//!
//! - [`PeerTls::Verified`]: a rustls configuration the server builds, verifying the peer
//!   against `--peer-trusted-ca-file` and presenting `--peer-cert-file` as the client
//!   identity (read again when the files change, so a rotated certificate is presented on
//!   new connections, as etcd reads its files at every handshake).
//! - [`PeerTls::Unverified`]: `--peer-auto-tls` without a CA, as etcd does it: the traffic is
//!   encrypted but the peer's self-signed certificate is not verified (Go's
//!   `InsecureSkipVerify`; the handshake's signatures are still checked against the
//!   certificate presented).
//!
//! Both are dialled by [`TlsConnector`] over rustls directly, not by tonic's TLS (which
//! always verifies and fixes the client identity when the channel is built); see
//! [`peer_endpoint`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Channel, Endpoint, Uri};

/// How `https://` peer URLs are dialled (see the module docs).
#[derive(Clone, Debug)]
pub enum PeerTls {
    /// Verify peers against a CA (and present a client certificate, if the configuration
    /// has one).
    Verified(Arc<ClientConfig>),
    /// Encrypt without verifying the peer's certificate (`--peer-auto-tls` without a CA).
    Unverified(Arc<ClientConfig>),
}

impl PeerTls {
    /// `--peer-auto-tls` without a CA: TLS that does not verify the peer.
    pub fn unverified() -> PeerTls {
        let provider = Arc::new(ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls's default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        PeerTls::Unverified(Arc::new(config))
    }
}

/// How one endpoint is connected (see [`peer_endpoint`]).
#[derive(Clone)]
pub enum Dial {
    /// In the clear, or with TLS for an `https://` URL when no peer TLS is configured
    /// (tonic then refuses it with its own error).
    Plain,
    /// TLS by [`TlsConnector`].
    Tls(TlsConnector),
}

impl PeerTls {
    fn config(&self) -> &Arc<ClientConfig> {
        match self {
            PeerTls::Verified(c) | PeerTls::Unverified(c) => c,
        }
    }
}

/// The endpoint for a peer `url` and how to connect it. For an `https://` URL with peer TLS
/// configured, the endpoint is given the `http://` form of the URL (tonic refuses `https://`
/// without its own TLS) and the connector does the TLS. Configure the endpoint (timeouts),
/// then [`Dial::connect`].
pub fn peer_endpoint(url: &str, tls: Option<&PeerTls>) -> Result<(Endpoint, Dial), tonic::transport::Error> {
    match (url.strip_prefix("https://"), tls) {
        (Some(rest), Some(tls)) => {
            let plain = format!("http://{rest}");
            Ok((Endpoint::from_shared(plain)?, Dial::Tls(TlsConnector::new(tls.config().clone()))))
        }
        _ => Ok((Endpoint::from_shared(url.to_owned())?, Dial::Plain)),
    }
}

impl Dial {
    /// Connects `endpoint` (from [`peer_endpoint`]).
    pub async fn connect(self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Dial::Plain => endpoint.connect().await,
            Dial::Tls(connector) => endpoint.connect_with_connector(connector).await,
        }
    }

    /// A channel to `endpoint` that connects on first use.
    pub fn connect_lazy(self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Dial::Plain => Ok(endpoint.connect_lazy()),
            Dial::Tls(connector) => Ok(endpoint.connect_with_connector_lazy(connector)),
        }
    }
}

/// Dials TCP, then TLS with a rustls configuration; the server name checked (when the
/// configuration verifies) is the URL's host. (tonic applies the endpoint's connect
/// timeout around it.)
#[derive(Clone)]
pub struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnector { tls: tokio_rustls::TlsConnector::from(config) }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {what}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|_| invalid("not a server name"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

/// Accepts any server certificate, checking only that the handshake was signed by it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
