//! `--tls-min-version`, `--tls-max-version` and `--cipher-suites`: which TLS versions and
//! TLS 1.2 cipher suites client and peer listeners offer.
//!
//! As in etcd (Go's crypto/tls): cipher suites are given by Go's names and restrict TLS 1.2
//! only (TLS 1.3's suites are not configurable); an unknown name is an error
//! ("unexpected TLS cipher suite"). Go knows suites rustls refuses to implement (CBC, RC4,
//! 3DES, RSA key exchange): naming one is accepted with a warning and it is left out, so a
//! client asking only for it fails its handshake — as it would against etcd with a list
//! that lacks it. TLS 1.0 and 1.1 are refused: rustls speaks 1.2 and 1.3 only.

use std::sync::Arc;

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::{self, SupportedCipherSuite, SupportedProtocolVersion};
use tracing::warn;

use crate::net::tls::TlsError;
use crate::startup::config::Config;

/// Go's TLS 1.2 suite names (crypto/tls) that rustls implements, with its suite.
const SUPPORTED: &[(&str, SupportedCipherSuite)] = &[
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
];

/// Go's suite names rustls does not implement (accepted with a warning, left out).
const GO_ONLY: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    // TLS 1.3's suites: Go accepts their names and ignores them (always enabled)
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The versions and suites every TLS listener of this server offers.
#[derive(Clone, Debug)]
pub struct TlsPolicy {
    /// Offered protocol versions (at least one).
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// The crypto provider, its suites restricted by `--cipher-suites`.
    pub provider: Arc<CryptoProvider>,
}

impl Default for TlsPolicy {
    /// TLS 1.2 and 1.3 with rustls's default suites (no flags set).
    fn default() -> Self {
        TlsPolicy { versions: vec![&rustls::version::TLS13, &rustls::version::TLS12], provider: Arc::new(ring::default_provider()) }
    }
}

impl TlsPolicy {
    /// The policy `--tls-min-version`, `--tls-max-version` and `--cipher-suites` ask for.
    pub fn from_config(config: &Config) -> Result<TlsPolicy, TlsError> {
        TlsPolicy::new(&config.tls_min_version, config.tls_max_version.as_deref(), &config.cipher_suites)
    }

    /// See [`TlsPolicy::from_config`]; an empty `min` means TLS 1.2.
    pub fn new(min: &str, max: Option<&str>, suites: &[String]) -> Result<TlsPolicy, TlsError> {
        let min = version_rank(min, "--tls-min-version")?.unwrap_or(2);
        let max = match max {
            Some(m) => version_rank(m, "--tls-max-version")?.unwrap_or(3),
            None => 3,
        };
        if min > max {
            return Err(TlsError::Policy("--tls-min-version is greater than --tls-max-version".into()));
        }
        let versions: Vec<&'static SupportedProtocolVersion> = [(3, &rustls::version::TLS13), (2, &rustls::version::TLS12)]
            .into_iter()
            .filter(|(rank, _)| (min..=max).contains(rank))
            .map(|(_, v)| v)
            .collect();
        let mut provider = ring::default_provider();
        let names: Vec<&str> = suites.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if !names.is_empty() {
            let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
            for name in names {
                match SUPPORTED.iter().find(|(go, _)| *go == name) {
                    Some((_, suite)) if !chosen.contains(suite) => chosen.push(*suite),
                    Some(_) => {}
                    None if GO_ONLY.contains(&name) => {
                        warn!(cipher_suite = name, "cipher suite not supported by rustls; left out");
                    }
                    None => return Err(TlsError::Policy(format!("unexpected TLS cipher suite {name:?}"))),
                }
            }
            if chosen.is_empty() && min <= 2 && max == 2 {
                return Err(TlsError::Policy("none of --cipher-suites is supported for TLS 1.2".into()));
            }
            // TLS 1.3's suites stay, as in Go
            provider.cipher_suites.retain(|s| s.version() == &rustls::version::TLS13 || chosen.contains(s));
        }
        Ok(TlsPolicy { versions, provider: Arc::new(provider) })
    }
}

/// 2 for TLS 1.2, 3 for TLS 1.3, `None` for an empty value; older versions are refused.
fn version_rank(name: &str, flag: &str) -> Result<Option<u8>, TlsError> {
    match name {
        "" => Ok(None),
        "TLS1.2" => Ok(Some(2)),
        "TLS1.3" => Ok(Some(3)),
        "TLS1.0" | "TLS1.1" => Err(TlsError::Policy(format!("{flag} {name} is not supported: cairn speaks TLS1.2 and TLS1.3"))),
        _ => Err(TlsError::Policy(format!("{flag}: unknown TLS version {name:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &TlsPolicy) -> Vec<String> {
        p.provider.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect()
    }

    #[test]
    fn defaults_offer_both_versions_and_every_suite() {
        let p = TlsPolicy::new("TLS1.2", None, &[]).unwrap();
        assert_eq!(p.versions.len(), 2);
        assert_eq!(p.provider.cipher_suites.len(), ring::default_provider().cipher_suites.len());
    }

    #[test]
    fn cipher_suites_restrict_tls12_only() {
        let p = TlsPolicy::new("", None, &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(), "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA".into()]).unwrap();
        let n = names(&p);
        assert!(n.iter().any(|s| s == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), "{n:?}");
        assert!(!n.iter().any(|s| s == "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"), "{n:?}");
        assert!(n.iter().any(|s| s.starts_with("TLS13_")), "TLS 1.3 suites stay: {n:?}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = TlsPolicy::new("", None, &["TLS_NOT_A_SUITE".into()]).unwrap_err().to_string();
        assert!(err.contains("unexpected TLS cipher suite"), "{err}");
        assert!(TlsPolicy::new("TLS1.0", None, &[]).is_err());
        assert!(TlsPolicy::new("TLS1.3", Some("TLS1.2"), &[]).is_err());
        assert!(TlsPolicy::new("", Some("TLS1.2"), &["TLS_RSA_WITH_AES_128_CBC_SHA".into()]).is_err());
        let only13 = TlsPolicy::new("TLS1.3", None, &[]).unwrap();
        assert_eq!(only13.versions.len(), 1);
    }
}
