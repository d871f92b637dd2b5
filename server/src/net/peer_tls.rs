//! Peer TLS (`--peer-cert-file --peer-key-file --peer-client-cert-auth
//! --peer-trusted-ca-file --peer-auto-tls`): the acceptor for `https://` peer listeners and
//! the client configuration for connections to other members.
//!
//! As in etcd, a member presents its peer certificate both as a server and as a client, and
//! verifies other members against `--peer-trusted-ca-file`. With `--peer-auto-tls` and no
//! CA, peer traffic is encrypted but certificates are not verified, as in etcd (a warning
//! says so at start-up); `--peer-crl-file` refuses revoked peer certificates. The dialling
//! side follows `--cipher-suites` and the TLS versions as the listeners do, and presents the
//! certificate as the files are at each handshake (`ClientCertFiles`), so a rotated peer
//! certificate is used without a restart. After the handshake, peer listeners check that a
//! peer's client certificate names the address it connects from (`peer_san.rs`), unless
//! `--experimental-peer-skip-client-san-verification`.

use std::path::Path;
use std::sync::Arc;

use cairn_raft_node::transport::PeerTls;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tracing::warn;

use crate::startup::config::Config;
use crate::error::ServerError;
use crate::net::listen::ClientUrl;
use crate::net::tls::{read_certs, TlsError, TlsFlags};
use crate::net::tls_reload::{ClientCertFiles, ServerTls};
use crate::net::tls_policy::TlsPolicy;

/// The acceptor for peer listeners and the client TLS for dialling peers; each `None`
/// when not configured.
pub fn peer_tls(
    config: &Config,
    data_dir: &Path,
    listen: &[ClientUrl],
) -> Result<(Option<ServerTls>, Option<PeerTls>), ServerError> {
    let flags = TlsFlags {
        cert_file: config.peer_cert_file.clone(),
        key_file: config.peer_key_file.clone(),
        client_cert_auth: config.peer_client_cert_auth,
        trusted_ca_file: config.peer_trusted_ca_file.clone(),
        auto_tls: config.peer_auto_tls,
        fixture_dir: data_dir.join("fixtures").join("peer"),
        crl_file: config.peer_crl_file.clone(),
        policy: TlsPolicy::from_config(config)?,
    };
    let hosts: Vec<String> = listen.iter().map(|u| u.host.clone()).collect();
    let acceptor = ServerTls::new(flags.clone(), hosts)?;
    let dials_tls = config.initial_advertise_peer_urls.iter().any(|u| u.starts_with("https://"))
        || config.initial_cluster().contains("https://");
    if !dials_tls && flags.trusted_ca_file.is_none() && flags.cert_file.is_none() {
        return Ok((acceptor, None));
    }
    let Some(ca) = &flags.trusted_ca_file else {
        if flags.auto_tls && flags.cert_file.is_none() {
            // as etcd: auto-TLS peers encrypt but cannot verify each other's self-signed
            // certificates
            warn!("--peer-auto-tls without --peer-trusted-ca-file: peer certificates are not verified");
            return Ok((acceptor, Some(PeerTls::unverified())));
        }
        if dials_tls {
            return Err(ServerError::Identity(
                "https:// peer URLs need --peer-trusted-ca-file (or --peer-auto-tls)".into(),
            ));
        }
        return Ok((acceptor, None));
    };
    Ok((acceptor, Some(PeerTls::Verified(Arc::new(dial_config(&flags, ca)?)))))
}

/// The rustls configuration for dialling peers: verified against `ca`, presenting the
/// peer certificate (followed on disk) when one is configured.
fn dial_config(flags: &TlsFlags, ca: &Path) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert)?;
    }
    let policy = &flags.policy;
    let builder = ClientConfig::builder_with_provider(policy.provider.clone())
        .with_protocol_versions(&policy.versions)?
        .with_root_certificates(roots);
    let mut config = match (&flags.cert_file, &flags.key_file) {
        (Some(cert), Some(key)) => {
            let files = ClientCertFiles::new(cert.clone(), key.clone(), policy.provider.clone())?;
            builder.with_client_cert_resolver(Arc::new(files))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
