//! Certificates that are rotated without a restart, as etcd picks them up.
//!
//! etcd reads its certificate and key again at every handshake, so a certificate renewed
//! on disk (cert-manager, kubeadm's `certs renew`) is served to new connections at once.
//! [`ServerTls`] does the same with less work per connection: before a handshake, at most
//! once per [`RELOAD_CHECK`], it compares the length and modification time of every file it
//! was built from (certificate, key, trusted CA, CRL) with what they were, and when one
//! changed it builds the whole rustls configuration again. Connections already open keep
//! the certificate they were accepted with. A replacement that does not load (a key written
//! before its certificate, a half-copied file) is logged and the previous configuration
//! stays in use; the files are looked at again at the next check.
//!
//! [`ClientCertFiles`] does the same for the certificate a member presents when it dials
//! its peers (`--peer-cert-file`, `--peer-key-file`): rustls asks it at every handshake.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::SignatureScheme;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::error::ServerError;
use crate::net::tls::{build_acceptor, read_certs, read_key, TlsError, TlsFlags};

/// How often, at most, the files are looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A file's identity as the check sees it: inode, length and modification time (`None`
/// when it cannot be read, e.g. in the middle of a rename). The inode catches a file
/// renamed over the old one within the file system's timestamp granularity.
type Fingerprint = Option<(u64, u64, SystemTime)>;

/// The TLS acceptor of one listener kind, following its files (see the module docs).
/// Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    flags: TlsFlags,
    hosts: Vec<String>,
    check_every: Duration,
    /// Guards the acceptor in use and what it was built from. Held for a `stat` per file
    /// once per `check_every` (and for a rebuild when a file changed); nothing else is
    /// locked while it is held.
    state: Mutex<State>,
}

struct State {
    acceptor: TlsAcceptor,
    files: Vec<(PathBuf, Fingerprint)>,
    checked: Instant,
}

impl ServerTls {
    /// The acceptor for listeners configured by `flags`, or `None` without a certificate.
    /// `hosts` go into an auto-TLS certificate.
    pub fn new(flags: TlsFlags, hosts: Vec<String>) -> Result<Option<ServerTls>, ServerError> {
        ServerTls::checking_every(flags, hosts, RELOAD_CHECK)
    }

    fn checking_every(flags: TlsFlags, hosts: Vec<String>, check_every: Duration) -> Result<Option<ServerTls>, ServerError> {
        // fingerprints first: a file replaced while we build is then seen at the next check
        let files = fingerprints(&flags);
        let Some(acceptor) = build_acceptor(&flags, &hosts)? else { return Ok(None) };
        let state = Mutex::new(State { acceptor, files, checked: Instant::now() });
        Ok(Some(ServerTls { inner: Arc::new(Inner { flags, hosts, check_every, state }) }))
    }

    /// The acceptor for the next handshake, rebuilt first if a file changed.
    pub fn acceptor(&self) -> TlsAcceptor {
        let inner = &*self.inner;
        let mut state = inner.state.lock();
        if state.checked.elapsed() >= inner.check_every {
            state.checked = Instant::now();
            let now = fingerprints(&inner.flags);
            if now != state.files {
                match build_acceptor(&inner.flags, &inner.hosts) {
                    Ok(Some(acceptor)) => {
                        info!(files = ?now.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(), "reloaded TLS certificates");
                        state.acceptor = acceptor;
                        state.files = now;
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "TLS files changed but do not load; still serving the previous certificate"),
                }
            }
        }
        state.acceptor.clone()
    }
}

/// The client certificate presented to peers, following its files (see the module docs).
#[derive(Debug)]
pub struct ClientCertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    check_every: Duration,
    /// Guards the certificate in use and what it was loaded from. Held for a `stat` per
    /// file once per `check_every` (and for a reload when one changed); nothing else is
    /// locked while it is held.
    state: Mutex<ClientState>,
}

#[derive(Debug)]
struct ClientState {
    key: Arc<CertifiedKey>,
    files: Vec<(PathBuf, Fingerprint)>,
    checked: Instant,
}

impl ClientCertFiles {
    /// The certificate in `cert` with the private key in `key`, signing with `provider`.
    pub fn new(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>) -> Result<ClientCertFiles, TlsError> {
        ClientCertFiles::checking_every(cert, key, provider, RELOAD_CHECK)
    }

    fn checking_every(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>, check_every: Duration) -> Result<ClientCertFiles, TlsError> {
        let files = fingerprint_all([cert.clone(), key.clone()]);
        let certified = load_certified(&cert, &key, &provider)?;
        let state = Mutex::new(ClientState { key: certified, files, checked: Instant::now() });
        Ok(ClientCertFiles { cert, key, provider, check_every, state })
    }

    /// The certificate for the next handshake, loaded again first if a file changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock();
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let now = fingerprint_all([self.cert.clone(), self.key.clone()]);
            if now != state.files {
                match load_certified(&self.cert, &self.key, &self.provider) {
                    Ok(key) => {
                        info!(cert_file = %self.cert.display(), "reloaded the peer client certificate");
                        state.key = key;
                        state.files = now;
                    }
                    Err(e) => warn!(error = %e, "peer client certificate files changed but do not load; still presenting the previous one"),
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesClientCert for ClientCertFiles {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn load_certified(cert: &std::path::Path, key: &std::path::Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(cert)?;
    let signing = provider.key_provider.load_private_key(read_key(key)?).map_err(TlsError::Rustls)?;
    let certified = CertifiedKey::new(certs, signing);
    // a key that does not match the certificate would fail every handshake: refuse it here
    certified.keys_match().map_err(TlsError::Rustls)?;
    Ok(Arc::new(certified))
}

fn fingerprint_all(files: impl IntoIterator<Item = PathBuf>) -> Vec<(PathBuf, Fingerprint)> {
    files
        .into_iter()
        .map(|p| {
            let fp = std::fs::metadata(&p).ok().and_then(|m| Some((m.ino(), m.len(), m.modified().ok()?)));
            (p, fp)
        })
        .collect()
}

fn fingerprints(flags: &TlsFlags) -> Vec<(PathBuf, Fingerprint)> {
    let auto = || [flags.fixture_dir.join("cert.pem"), flags.fixture_dir.join("key.pem")];
    let files: Vec<PathBuf> = match (&flags.cert_file, &flags.key_file) {
        (Some(c), Some(k)) => [Some(c.clone()), Some(k.clone()), flags.trusted_ca_file.clone(), flags.crl_file.clone()]
            .into_iter()
            .flatten()
            .collect(),
        _ if flags.auto_tls => auto().to_vec(),
        _ => Vec::new(),
    };
    fingerprint_all(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls_policy::TlsPolicy;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    use tokio_rustls::TlsConnector;

    /// A self-signed certificate for `localhost` written to `cert`/`key`; its DER.
    fn write_cert(cert: &Path, key: &Path) -> CertificateDer<'static> {
        let g = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        // replace, as tools do: write aside, then rename over
        std::fs::write(cert.with_extension("new"), g.cert.pem()).unwrap();
        std::fs::rename(cert.with_extension("new"), cert).unwrap();
        std::fs::write(key.with_extension("new"), g.signing_key.serialize_pem()).unwrap();
        std::fs::rename(key.with_extension("new"), key).unwrap();
        g.cert.der().clone()
    }

    fn flags(dir: &Path) -> TlsFlags {
        TlsFlags {
            cert_file: Some(dir.join("cert.pem")),
            key_file: Some(dir.join("key.pem")),
            client_cert_auth: false,
            trusted_ca_file: None,
            auto_tls: false,
            fixture_dir: dir.join("fixtures"),
            crl_file: None,
            policy: TlsPolicy::default(),
        }
    }

    /// Handshakes with `tls` over an in-memory pipe; the certificate the server presented.
    async fn presented(tls: &ServerTls, trust: &CertificateDer<'static>) -> Result<CertificateDer<'static>, String> {
        let mut roots = RootCertStore::empty();
        roots.add(trust.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client, server) = tokio::io::duplex(64 << 10);
        let acceptor = tls.acceptor();
        let serve = tokio::spawn(async move {
            if let Ok(mut s) = acceptor.accept(server).await {
                let _ = s.write_all(b"x").await;
                let _ = s.shutdown().await;
            }
        });
        let connector = TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = connector.connect(name, client).await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        let cert = c.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned().ok_or("no certificate")?;
        serve.await.unwrap();
        Ok(cert.into_owned())
    }

    #[tokio::test]
    async fn a_rotated_certificate_is_served_to_new_connections() {
        let dir = tempfile::tempdir().unwrap();
        let f = flags(dir.path());
        let first = write_cert(f.cert_file.as_ref().unwrap(), f.key_file.as_ref().unwrap());
        let tls = ServerTls::checking_every(f.clone(), Vec::new(), Duration::ZERO).unwrap().expect("TLS");
        assert_eq!(presented(&tls, &first).await.unwrap(), first);

        let second = write_cert(f.cert_file.as_ref().unwrap(), f.key_file.as_ref().unwrap());
        assert_ne!(first, second);
        assert_eq!(presented(&tls, &second).await.unwrap(), second, "the new certificate after rotation");
        // a client trusting only the old one is refused now
        assert!(presented(&tls, &first).await.is_err());
    }

    #[tokio::test]
    async fn a_broken_replacement_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let f = flags(dir.path());
        let first = write_cert(f.cert_file.as_ref().unwrap(), f.key_file.as_ref().unwrap());
        let tls = ServerTls::checking_every(f.clone(), Vec::new(), Duration::ZERO).unwrap().expect("TLS");
        std::fs::write(f.key_file.as_ref().unwrap(), "not a key").unwrap();
        assert_eq!(presented(&tls, &first).await.unwrap(), first);
        // fixed later: picked up
        let second = write_cert(f.cert_file.as_ref().unwrap(), f.key_file.as_ref().unwrap());
        assert_eq!(presented(&tls, &second).await.unwrap(), second);
    }

    #[tokio::test]
    async fn files_are_looked_at_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let f = flags(dir.path());
        let first = write_cert(f.cert_file.as_ref().unwrap(), f.key_file.as_ref().unwrap());
        let tls = ServerTls::checking_every(f.clone(), Vec::new(), Duration::from_secs(3600)).unwrap().expect("TLS");
        write_cert(f.cert_file.as_ref().unwrap(), f.key_file.as_ref().unwrap());
        assert_eq!(presented(&tls, &first).await.unwrap(), first, "not looked at again within the interval");
    }

    /// Handshakes as a client presenting `files` with a server that accepts any client
    /// certificate in `trusted`; the certificate the client presented.
    async fn presented_by_client(files: Arc<ClientCertFiles>, trusted: &[CertificateDer<'static>]) -> Result<CertificateDer<'static>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let mut client_roots = RootCertStore::empty();
        for c in trusted {
            client_roots.add(c.clone()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone()).build().unwrap();
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(server_cert.signing_key.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_cert.cert.der().clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(server_cert.cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(files);
        let (c, s) = tokio::io::duplex(64 << 10);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let serve = tokio::spawn(async move {
            let mut s = acceptor.accept(s).await.map_err(|e| e.to_string())?;
            s.write_all(b"x").await.map_err(|e| e.to_string())?;
            let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned().ok_or("no client certificate")?;
            Ok::<_, String>(cert.into_owned())
        });
        let connector = TlsConnector::from(Arc::new(client));
        let connected = connector.connect(ServerName::try_from("localhost").unwrap(), c).await;
        if let Ok(mut c) = connected {
            let mut byte = [0u8; 1];
            let _ = c.read_exact(&mut byte).await;
        }
        serve.await.unwrap()
    }

    #[tokio::test]
    async fn a_rotated_peer_client_certificate_is_presented_to_new_connections() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("peer.pem"), dir.path().join("peer-key.pem"));
        let first = write_cert(&cert, &key);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = Arc::new(ClientCertFiles::checking_every(cert.clone(), key.clone(), provider, Duration::ZERO).unwrap());
        let second = {
            let g = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            (g.cert.der().clone(), g.cert.pem(), g.signing_key.serialize_pem())
        };
        let trusted = [first.clone(), second.0.clone()];
        assert_eq!(presented_by_client(files.clone(), &trusted).await.unwrap(), first);
        // rotated on disk: the next handshake presents the new one
        std::fs::write(&cert, &second.1).unwrap();
        std::fs::write(&key, &second.2).unwrap();
        assert_eq!(presented_by_client(files.clone(), &trusted).await.unwrap(), second.0);
        // a half-written replacement (a key of another certificate) is not taken
        write_cert(&dir.path().join("other.pem"), &key);
        assert_eq!(presented_by_client(files.clone(), &trusted).await.unwrap(), second.0);
    }
}
