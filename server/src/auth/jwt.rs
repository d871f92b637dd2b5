//! JWT tokens (etcd's `--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`).
//!
//! As etcd's `tokenJWT`: a token is a JWT signed with the private key, its claims the user
//! name, the auth revision at login and an expiry `ttl` after it (etcd's default 5 minutes,
//! no refresh on use, no leeway). Any member holding the public key checks a token by
//! itself: no state is shared, so tokens survive restarts, and a member with only
//! `pub-key` verifies tokens but cannot issue them (Authenticate fails there, as in etcd).
//! A token whose auth revision is older than the store's is refused where permissions are
//! checked ("revision of auth store is old"), so a permission change forces a new login.
//! `pub-key` may be a public key or a certificate (PEM), as etcd's e2e fixtures use.
//! Signing methods: RS256/384/512, PS256/384/512, ES256/384 and EdDSA.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::startup::config::parse_go_duration;

/// etcd's default JWT lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Why `--auth-token jwt,…` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// An option that is not `pub-key`, `priv-key`, `sign-method` or `ttl`, or a bad value.
    #[error("--auth-token: {0}")]
    Option(String),
    /// A key file that cannot be read.
    #[error("--auth-token: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key that does not suit the signing method.
    #[error("--auth-token: {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: jsonwebtoken::errors::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Issues and checks JWT tokens (module docs).
pub struct JwtTokens {
    algorithm: Algorithm,
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens").field("algorithm", &self.algorithm).field("ttl", &self.ttl).finish()
    }
}

impl JwtTokens {
    /// From `--auth-token`: `None` for `simple`, the JWT tokens for `jwt,…`.
    pub fn from_flag(spec: &str) -> Result<Option<JwtTokens>, JwtError> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or("") {
            "simple" => return Ok(None),
            "jwt" => {}
            other => return Err(JwtError::Option(format!("unknown token kind {other:?} (simple or jwt)"))),
        }
        let (mut public, mut private, mut method, mut ttl) = (None, None, None, DEFAULT_TTL);
        for part in parts.filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| JwtError::Option(format!("{part:?} is not key=value")))?;
            match k {
                "pub-key" => public = Some(PathBuf::from(v)),
                "priv-key" => private = Some(PathBuf::from(v)),
                "sign-method" => method = Some(v.to_string()),
                "ttl" => ttl = parse_go_duration(v).map_err(|e| JwtError::Option(format!("ttl: {e}")))?,
                other => return Err(JwtError::Option(format!("unknown jwt option {other:?}"))),
            }
        }
        let method = method.ok_or_else(|| JwtError::Option("jwt needs sign-method".into()))?;
        let algorithm = algorithm(&method)?;
        let public = public.ok_or_else(|| JwtError::Option("jwt needs pub-key".into()))?;
        let verifying = decoding_key(algorithm, &public)?;
        let signing = private.map(|p| encoding_key(algorithm, &p)).transpose()?;
        Ok(Some(JwtTokens { algorithm, signing, verifying, ttl }))
    }

    /// A token for `username` logged in at auth revision `revision`; `None` on a member
    /// without the private key.
    pub fn assign(&self, username: &str, revision: u64) -> Option<String> {
        let key = self.signing.as_ref()?;
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_add(self.ttl).as_secs();
        let claims = Claims { username: username.to_string(), revision, exp };
        match encode(&Header::new(self.algorithm), &claims, key) {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::error!(error = %e, "signing a JWT failed");
                None
            }
        }
    }

    /// The user and auth revision of a valid, unexpired token.
    pub fn info(&self, token: &str) -> Option<(String, u64)> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = decode::<Claims>(token, &self.verifying, &validation).ok()?;
        Some((data.claims.username, data.claims.revision))
    }
}

fn algorithm(method: &str) -> Result<Algorithm, JwtError> {
    Ok(match method {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(JwtError::Option(format!("unsupported sign-method {other:?}"))),
    })
}

fn read(path: &PathBuf) -> Result<Vec<u8>, JwtError> {
    std::fs::read(path).map_err(|source| JwtError::Read { path: path.clone(), source })
}

/// The public key of `path`: a public key PEM, or a certificate's.
fn decoding_key(algorithm: Algorithm, path: &PathBuf) -> Result<DecodingKey, JwtError> {
    let pem = read(path)?;
    let pem = match certificate_public_key(&pem) {
        Some(spki) => spki,
        None => pem,
    };
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => DecodingKey::from_rsa_pem(&pem),
    };
    key.map_err(|source| JwtError::Key { path: path.clone(), source })
}

fn encoding_key(algorithm: Algorithm, path: &PathBuf) -> Result<EncodingKey, JwtError> {
    let pem = read(path)?;
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    };
    key.map_err(|source| JwtError::Key { path: path.clone(), source })
}

/// A certificate PEM's subject public key, as a `PUBLIC KEY` PEM; `None` if `pem` holds
/// no certificate.
fn certificate_public_key(pem: &[u8]) -> Option<Vec<u8>> {
    let der = rustls_pemfile::certs(&mut &pem[..]).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).ok()?);
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ES256 key pair and a certificate of it, written to `dir`.
    fn keys(dir: &std::path::Path) -> (String, String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let (private, public, certificate) = (dir.join("k.pem"), dir.join("p.pem"), dir.join("c.pem"));
        std::fs::write(&private, key.serialize_pem()).unwrap();
        std::fs::write(&public, key.public_key_pem()).unwrap();
        std::fs::write(&certificate, cert.pem()).unwrap();
        let s = |p: PathBuf| p.display().to_string();
        (s(private), s(public), s(certificate))
    }

    #[test]
    fn tokens_name_the_user_and_revision_and_verify_with_the_public_key_or_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public, certificate) = keys(dir.path());
        let issuer = JwtTokens::from_flag(&format!("jwt,pub-key={public},priv-key={private},sign-method=ES256"))
            .unwrap()
            .expect("jwt");
        let token = issuer.assign("alice", 7).expect("signed");
        assert_eq!(issuer.info(&token), Some(("alice".to_string(), 7)));
        // a member with only the certificate verifies it, and cannot issue
        let verifier = JwtTokens::from_flag(&format!("jwt,pub-key={certificate},sign-method=ES256")).unwrap().unwrap();
        assert_eq!(verifier.info(&token), Some(("alice".to_string(), 7)));
        assert_eq!(verifier.assign("alice", 7), None);
        // tampered or foreign tokens are refused
        let mut forged = token.clone();
        forged.pop();
        assert_eq!(issuer.info(&forged), None);
        assert_eq!(issuer.info("not.a.token"), None);
        let other = tempfile::tempdir().unwrap();
        let (p2, k2, _) = keys(other.path());
        let stranger = JwtTokens::from_flag(&format!("jwt,pub-key={k2},priv-key={p2},sign-method=ES256")).unwrap().unwrap();
        assert_eq!(issuer.info(&stranger.assign("alice", 7).unwrap()), None);
    }

    #[test]
    fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public, _) = keys(dir.path());
        let t = JwtTokens::from_flag(&format!("jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl=0s"))
            .unwrap()
            .unwrap();
        // exp is whole seconds: a zero TTL has expired once the second turns
        let token = t.assign("bob", 1).unwrap();
        let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        while SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() <= start {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(t.info(&token), None);
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(JwtTokens::from_flag("simple").unwrap().is_none());
        for bad in ["jwt", "jwt,sign-method=RS256", "jwt,pub-key=/nonexistent,sign-method=RS256", "jwt,pub-key=x,sign-method=XX1", "bogus", "jwt,color=red"] {
            assert!(JwtTokens::from_flag(bad).is_err(), "{bad}");
        }
    }
}
