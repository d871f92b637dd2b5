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

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::error::ServerError;
use crate::net::tls::{build_acceptor, TlsFlags};

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
    files
        .into_iter()
        .map(|p| {
            let fp = std::fs::metadata(&p).ok().and_then(|m| Some((m.ino(), m.len(), m.modified().ok()?)));
            (p, fp)
        })
        .collect()
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
}
