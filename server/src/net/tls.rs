//! Client TLS with rustls: certificate files, client-certificate authentication, and
//! `--auto-tls` self-signed certificates.
//!
//! As in etcd:
//! - `--cert-file`/`--key-file` give the server identity (PEM);
//! - `--client-cert-auth` requires every client to present a certificate signed by
//!   `--trusted-ca-file`;
//! - `--auto-tls` (when no certificate is given) uses a self-signed certificate kept in
//!   `<data-dir>/fixtures/client/{cert,key}.pem`, generated on first start and reused after;
//!   client-certificate authentication does not apply to it (etcd ignores it too);
//! - `--client-crl-file` refuses client certificates the list revokes;
//! - a client certificate that is itself in the trusted CA file is accepted, as Go does
//!   (see `tls_verify.rs`);
//! - `--tls-min-version`, `--tls-max-version`, `--cipher-suites`: see `tls_policy.rs`;
//! - certificates rotated on disk are served to new connections: see `tls_reload.rs`.
//!
//! The server does the TLS handshake itself (not through tonic) so that the decrypted stream
//! can pass through [`crate::net::authority::AuthorityFix`] before hyper sees it. ALPN offers
//! `h2`, which recent grpc-go clients require. Unlike Go, rustls refuses X.509 v1
//! certificates (ones made without extensions) as client or server certificates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::startup::config::Config;
use crate::error::{ConfigError, ServerError};
use crate::net::tls_policy::TlsPolicy;
use crate::net::tls_reload::ServerTls;
use crate::net::tls_verify::GoClientVerifier;

/// TLS material that could not be read, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: &'static str,
    },
    /// The auto-TLS certificate could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, key or CA.
    #[error("invalid client TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA or CRL file.
    #[error("invalid --trusted-ca-file or CRL file: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// `--tls-min-version`, `--tls-max-version` or `--cipher-suites` cannot be honoured.
    #[error("{0}")]
    Policy(String),
}

/// The TLS acceptor for `https://` client listeners, or `None` when no certificate is
/// configured. `hosts` (the listeners' host names) go into an auto-TLS certificate.
pub fn client_tls(
    config: &Config,
    data_dir: &Path,
    hosts: &[String],
) -> Result<Option<ServerTls>, ServerError> {
    let flags = TlsFlags {
        cert_file: config.cert_file.clone(),
        key_file: config.key_file.clone(),
        client_cert_auth: config.client_cert_auth,
        trusted_ca_file: config.trusted_ca_file.clone(),
        auto_tls: config.auto_tls,
        fixture_dir: data_dir.join("fixtures").join("client"),
        crl_file: config.client_crl_file.clone(),
        policy: TlsPolicy::from_config(config)?,
    };
    ServerTls::new(flags, hosts.to_vec())
}

/// The TLS flags of one listener kind (client: `--cert-file` ...; peer: `--peer-cert-file` ...).
#[derive(Clone, Debug)]
pub struct TlsFlags {
    /// The certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM).
    pub key_file: Option<PathBuf>,
    /// Require a certificate from the other side, signed by `trusted_ca_file`.
    pub client_cert_auth: bool,
    /// The CA that signs the other side's certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// Generate a self-signed certificate when none is given.
    pub auto_tls: bool,
    /// Where the auto-TLS certificate is kept.
    pub fixture_dir: PathBuf,
    /// Revoked certificates (PEM CRL), refused when the other side presents one.
    pub crl_file: Option<PathBuf>,
    /// Versions and cipher suites offered.
    pub policy: TlsPolicy,
}

/// The TLS acceptor for listeners configured by `flags` as the files are now, or `None`
/// without a certificate (listeners use [`ServerTls`], which follows the files).
pub(crate) fn build_acceptor(flags: &TlsFlags, hosts: &[String]) -> Result<Option<TlsAcceptor>, ServerError> {
    let config = flags;
    let (certs, key) = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            if config.auto_tls {
                warn!("--auto-tls is ignored: --cert-file and --key-file are set");
            }
            (read_certs(cert)?, read_key(key)?)
        }
        (None, None) if config.auto_tls => auto_tls_files(&config.fixture_dir, hosts)?,
        (None, None) => {
            if config.client_cert_auth {
                warn!("--client-cert-auth has no effect without a server certificate");
            }
            return Ok(None);
        }
        _ => return Err(ConfigError::CertKeyPair.into()),
    };
    let provider = config.policy.provider.clone();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&config.policy.versions)
        .map_err(TlsError::Rustls)?;
    let builder = if config.client_cert_auth && config.cert_file.is_some() {
        let ca = config
            .trusted_ca_file
            .as_ref()
            .ok_or(ConfigError::ClientCertAuthWithoutCa)?;
        let mut roots = RootCertStore::empty();
        let ca_certs = read_certs(ca)?;
        for cert in &ca_certs {
            roots.add(cert.clone()).map_err(TlsError::Rustls)?;
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if let Some(crl) = &config.crl_file {
            verifier = verifier.with_crls(read_crls(crl)?);
        }
        let verifier = verifier.build().map_err(TlsError::Verifier)?;
        builder.with_client_cert_verifier(Arc::new(GoClientVerifier::new(verifier, ca_certs)))
    } else {
        if config.client_cert_auth {
            warn!("--client-cert-auth is ignored with --auto-tls, as in etcd");
        }
        builder.with_no_client_auth()
    };
    let mut server_config = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Rustls)?;
    server_config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server_config))))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no PEM certificate found",
        });
    }
    Ok(certs)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read(path)?;
    let crls = rustls_pemfile::crls(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    if !crls.is_empty() {
        return Ok(crls);
    }
    // a DER file (etcd, through Go's x509.ParseCRL, takes both forms): one ASN.1 SEQUENCE
    if pem.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(pem)]);
    }
    Err(TlsError::Pem { path: path.to_owned(), what: "no certificate revocation list (PEM or DER) found" })
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_owned(),
            what: "no PEM private key found",
        })
}

/// Loads the self-signed certificate in `dir`, generating it on first use.
fn auto_tls_files(
    dir: &Path,
    hosts: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        info!(dir = %dir.display(), "using the existing auto-TLS certificate");
        return Ok((read_certs(&cert_path)?, read_key(&key_path)?));
    }
    let mut names: Vec<String> = hosts.to_vec();
    if !names.iter().any(|h| h == "localhost") {
        names.push("localhost".to_owned());
    }
    let generated = rcgen::generate_simple_self_signed(names.clone())?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
    write_private(&cert_path, generated.cert.pem().as_bytes())?;
    info!(dir = %dir.display(), hosts = ?names, "generated a self-signed client certificate (--auto-tls)");
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|_| {
        TlsError::Pem {
            path: key_path,
            what: "generated key is not PKCS#8",
        }
    })?;
    Ok((vec![generated.cert.der().clone()], key))
}

/// Writes a file readable by its owner only (the key is secret).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options.open(path).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    result.map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The common name (CN) of a DER certificate's subject (`--client-cert-auth` maps it to
/// the user); `None` if the certificate does not parse or has no CN.
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        crate::startup::config::parse_for_test(args)
    }

    #[test]
    fn no_certificate_means_no_tls() {
        let dir = tempfile::tempdir().unwrap();
        assert!(client_tls(&config(&[]), dir.path(), &[]).unwrap().is_none());
    }

    #[test]
    fn auto_tls_generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&["--auto-tls"]);
        assert!(client_tls(&c, dir.path(), &["127.0.0.1".into()])
            .unwrap()
            .is_some());
        let cert = dir.path().join("fixtures/client/cert.pem");
        let first = std::fs::read(&cert).unwrap();
        assert!(client_tls(&c, dir.path(), &["127.0.0.1".into()])
            .unwrap()
            .is_some());
        assert_eq!(std::fs::read(&cert).unwrap(), first, "certificate reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join("fixtures/client/key.pem");
            assert_eq!(
                std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn certificate_files_and_client_auth() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let c = config(&["--cert-file", cert, "--key-file", key]);
        assert!(client_tls(&c, dir.path(), &[]).unwrap().is_some());

        let c = config(&["--cert-file", cert, "--key-file", key, "--client-cert-auth"]);
        let err = client_tls(&c, dir.path(), &[]).err().expect("an error");
        assert!(matches!(
            err,
            ServerError::Config(ConfigError::ClientCertAuthWithoutCa)
        ));

        let c = config(&[
            "--cert-file",
            cert,
            "--key-file",
            key,
            "--client-cert-auth",
            "--trusted-ca-file",
            cert,
        ]);
        assert!(client_tls(&c, dir.path(), &[]).unwrap().is_some());

        let c = config(&["--cert-file", cert]);
        let err = client_tls(&c, dir.path(), &[]).err().expect("an error");
        assert!(matches!(err, ServerError::Config(ConfigError::CertKeyPair)));

        let c = config(&["--cert-file", key, "--key-file", key]);
        assert!(matches!(
            client_tls(&c, dir.path(), &[]),
            Err(ServerError::Tls(TlsError::Pem { .. }))
        ));

        let c = config(&["--cert-file", "/nonexistent", "--key-file", key]);
        assert!(matches!(
            client_tls(&c, dir.path(), &[]),
            Err(ServerError::Tls(TlsError::Read { .. }))
        ));
    }
}
