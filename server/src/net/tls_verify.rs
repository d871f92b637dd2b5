//! Client-certificate verification as Go's crypto/x509 does it, where it differs from
//! rustls's WebPKI verifier.
//!
//! Go accepts a certificate that is itself in the trusted pool as a chain of one, even when
//! it is a CA certificate (basicConstraints CA:TRUE): etcd deployments and etcd's own e2e
//! fixtures (`CommonName-root.crt`, used as CA, server and client certificate at once) rely
//! on that. WebPKI refuses such a certificate as an end entity (`CaUsedAsEndEntity`).
//! [`GoClientVerifier`] asks WebPKI first and, only when WebPKI refuses, accepts a
//! certificate that is byte for byte one of the trusted roots and is within its validity
//! period (Go checks the period of every certificate of a chain). Everything else —
//! signatures of the handshake, CRLs for certificates WebPKI verifies, the CA names offered
//! — is WebPKI's.

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// See the module docs.
#[derive(Debug)]
pub struct GoClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    roots: Vec<CertificateDer<'static>>,
}

impl GoClientVerifier {
    /// `webpki` built from `roots` (and CRLs).
    pub fn new(webpki: Arc<dyn ClientCertVerifier>, roots: Vec<CertificateDer<'static>>) -> GoClientVerifier {
        GoClientVerifier { webpki, roots }
    }
}

/// Whether `der` parses and `now` lies within its validity period.
fn valid_at(der: &[u8], now: UnixTime) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let Ok(now) = i64::try_from(now.as_secs()) else { return false };
    let validity = cert.validity();
    validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp()
}

impl ClientCertVerifier for GoClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self.webpki.verify_client_cert(end_entity, intermediates, now) {
            Ok(v) => Ok(v),
            Err(e) => {
                let trusted = self.roots.iter().any(|r| r.as_ref() == end_entity.as_ref());
                if trusted && valid_at(end_entity, now) {
                    Ok(ClientCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::RootCertStore;

    /// A self-signed CA certificate (CA:TRUE), as etcd's `CommonName-root.crt`.
    fn ca_cert(not_after_year: i32) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "root");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        params.self_signed(&key).unwrap().der().clone()
    }

    fn verifier(roots: &[CertificateDer<'static>]) -> GoClientVerifier {
        let mut store = RootCertStore::empty();
        for r in roots {
            store.add(r.clone()).unwrap();
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider).build().unwrap();
        GoClientVerifier::new(webpki, roots.to_vec())
    }

    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap())
    }

    #[test]
    fn a_trusted_ca_certificate_is_accepted_as_a_client_certificate_as_go_does() {
        let ca = ca_cert(2999);
        let plain_webpki = {
            let mut store = RootCertStore::empty();
            store.add(ca.clone()).unwrap();
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider).build().unwrap()
        };
        assert!(plain_webpki.verify_client_cert(&ca, &[], now()).is_err(), "WebPKI alone refuses it");
        assert!(verifier(&[ca.clone()]).verify_client_cert(&ca, &[], now()).is_ok());
    }

    #[test]
    fn untrusted_or_expired_ones_are_still_refused() {
        let ca = ca_cert(2999);
        let other = ca_cert(2999);
        assert!(verifier(&[other]).verify_client_cert(&ca, &[], now()).is_err(), "not in the pool");
        let expired = ca_cert(2001);
        assert!(verifier(&[expired.clone()]).verify_client_cert(&expired, &[], now()).is_err(), "expired");
    }
}
