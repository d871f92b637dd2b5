//! etcd's check that a peer's client certificate was issued for the address the peer
//! connects from (etcd `pkg/transport/listener_tls.go`, `checkCertSAN`), applied by peer
//! listeners after the TLS handshake unless `--experimental-peer-skip-client-san-verification`.
//!
//! The rules, as etcd's (remote = the connection's source IP):
//! - a certificate with neither an IP nor a DNS subject alternative name passes;
//! - an IP SAN equal to the remote IP passes (IPv4 and IPv4-mapped IPv6 compare equal, as
//!   Go's `net.IP.Equal`); a certificate with IP SANs, none equal and no DNS SAN, is refused
//!   with Go's `x509: certificate is valid for 127.0.0.9, not 127.0.0.1`;
//! - otherwise its DNS SANs decide: the remote IP's reverse-lookup name (trailing dot
//!   stripped) equal to a DNS SAN, or ending in a wildcard's suffix (`*.example.com` →
//!   `.example.com`), passes; then each non-wildcard DNS SAN is looked up and passes if one
//!   of its addresses is the remote IP. Else refused with
//!   `tls: "127.0.0.1" does not match any of DNSNames ["a" "b"]`, followed by
//!   ` (<the last lookup error>)` when a lookup failed.
//!
//! Lookups use the system resolver (`/etc/hosts`, then DNS, through getnameinfo and
//! getaddrinfo); they block, so they run on tokio's blocking pool, never on a runtime
//! thread, and a connection waits for them at most [`LOOKUP_TIMEOUT`] (etcd's have no
//! bound of their own) before it is refused. Unlike Go's `LookupAddr`, which returns every
//! name of an address, getnameinfo gives one name, the first `/etc/hosts` or the PTR
//! record gives.

use std::ffi::CStr;
use std::net::{IpAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use x509_parser::extensions::GeneralName;

/// How long a connection waits for the DNS lookups of its certificate's names.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer's client certificate was refused; the messages are etcd's (Go's).
#[derive(Debug, thiserror::Error)]
pub enum SanError {
    /// IP SANs only, none the remote address.
    #[error("x509: certificate is valid for {valid}, not {host}")]
    IpMismatch {
        /// The certificate's IP SANs, comma-separated.
        valid: String,
        /// The remote address.
        host: IpAddr,
    },
    /// No DNS SAN resolves to (or from) the remote address.
    #[error("tls: \"{host}\" does not match any of DNSNames [{}]{}", go_quoted(names), lookup.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    DnsMismatch {
        /// The remote address.
        host: IpAddr,
        /// The certificate's DNS SANs.
        names: Vec<String>,
        /// The last lookup that failed, if one did.
        lookup: Option<String>,
    },
    /// The certificate's SAN extension does not parse.
    #[error("x509: cannot parse the certificate's subject alternative names: {0}")]
    Parse(String),
}

/// Go's `%q` of a list of strings, without the brackets: `"a" "b"`.
fn go_quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(" ")
}

/// The IP and DNS subject alternative names of a certificate.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sans {
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// DNS SANs.
    pub dns: Vec<String>,
}

impl Sans {
    /// The SANs of the DER certificate `der`.
    pub fn of(der: &[u8]) -> Result<Sans, SanError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| SanError::Parse(e.to_string()))?;
        let mut sans = Sans::default();
        let Some(ext) = cert.subject_alternative_name().map_err(|e| SanError::Parse(e.to_string()))? else {
            return Ok(sans);
        };
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(n) => sans.dns.push((*n).to_owned()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*b).map_err(|e| SanError::Parse(e.to_string()))?),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*b).map_err(|e| SanError::Parse(e.to_string()))?),
                        n => return Err(SanError::Parse(format!("an IP address of {n} bytes"))),
                    };
                    sans.ips.push(ip);
                }
                _ => {}
            }
        }
        Ok(sans)
    }
}

/// Name lookups for the DNS rule; blocking calls (run on the blocking pool).
pub trait Resolve: Send + Sync + 'static {
    /// The names of `ip` (reverse lookup).
    fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, String>;
    /// The addresses of `name` (forward lookup).
    fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver: getnameinfo and getaddrinfo (`/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, String> {
        reverse_lookup(ip).map(|n| vec![n])
    }

    fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        (name, 0u16)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .map_err(|e| format!("lookup {name}: {e}"))
    }
}

/// getnameinfo with `NI_NAMEREQD`: the name of `ip`, or why there is none.
fn reverse_lookup(ip: IpAddr) -> Result<String, String> {
    // NI_MAXHOST of glibc
    let mut host = [0 as libc::c_char; 1025];
    let rc = match ip {
        IpAddr::V4(v4) => {
            // SAFETY: sockaddr_in is plain old data; all-zero is a valid value
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) };
            // SAFETY: a sockaddr_in of family AF_INET
            unsafe { name_info(&sa, &mut host) }
        }
        IpAddr::V6(v6) => {
            // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr = libc::in6_addr { s6_addr: v6.octets() };
            // SAFETY: a sockaddr_in6 of family AF_INET6
            unsafe { name_info(&sa, &mut host) }
        }
    };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated string for any code
        let why = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(format!("lookup {ip}: {}", why.to_string_lossy()));
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// getnameinfo of the socket address `sa`, the name written into `host`; its return code.
///
/// # Safety
/// `T` is `sockaddr_in` or `sockaddr_in6`, with its family field set to match.
unsafe fn name_info<T>(sa: &T, host: &mut [libc::c_char]) -> libc::c_int {
    // SAFETY: `sa` is a whole socket address of the length given (the caller's promise);
    // `host` is writable for its length; no service buffer is asked for
    unsafe {
        libc::getnameinfo(
            std::ptr::from_ref(sa).cast::<libc::sockaddr>(),
            std::mem::size_of::<T>() as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    }
}

/// The check a peer listener runs after each handshake (see the module docs).
#[derive(Clone)]
pub struct PeerSanCheck {
    resolver: Arc<dyn Resolve>,
    timeout: Duration,
}

impl std::fmt::Debug for PeerSanCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSanCheck").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Default for PeerSanCheck {
    /// The system resolver, [`LOOKUP_TIMEOUT`].
    fn default() -> Self {
        PeerSanCheck::new(Arc::new(SystemResolver), LOOKUP_TIMEOUT)
    }
}

impl PeerSanCheck {
    /// Looking names up with `resolver`, waiting at most `timeout` for it.
    pub fn new(resolver: Arc<dyn Resolve>, timeout: Duration) -> PeerSanCheck {
        PeerSanCheck { resolver, timeout }
    }

    /// Whether a certificate with `sans` may connect from `remote`.
    pub async fn check(&self, sans: &Sans, remote: IpAddr) -> Result<(), SanError> {
        let host = remote.to_canonical();
        if sans.ips.is_empty() && sans.dns.is_empty() {
            return Ok(());
        }
        if !sans.ips.is_empty() {
            if sans.ips.iter().any(|ip| ip.to_canonical() == host) {
                return Ok(());
            }
            if sans.dns.is_empty() {
                let valid = sans.ips.iter().map(|ip| ip.to_canonical().to_string()).collect::<Vec<_>>().join(", ");
                return Err(SanError::IpMismatch { valid, host });
            }
        }
        let resolver = self.resolver.clone();
        let names = sans.dns.clone();
        let lookup = tokio::task::spawn_blocking(move || host_in_dns(&*resolver, host, &names));
        let lookup = match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(last_error))) => last_error,
            Ok(Err(join)) => Some(format!("lookup failed: {join}")),
            Err(_) => Some(format!("lookup timed out after {:?}", self.timeout)),
        };
        Err(SanError::DnsMismatch { host, names: sans.dns.clone(), lookup })
    }
}

/// The DNS rule (module docs): `Ok` when a name matches, else the last lookup error.
fn host_in_dns(resolver: &dyn Resolve, host: IpAddr, dns: &[String]) -> Result<(), Option<String>> {
    let (wildcards, names): (Vec<&String>, Vec<&String>) = dns.iter().partition(|n| n.starts_with("*."));
    let mut last_error = None;
    match resolver.reverse(host) {
        Ok(found) => {
            for name in found {
                let name = name.strip_suffix('.').unwrap_or(&name);
                if wildcards.iter().any(|w| name.ends_with(&w[1..])) || names.iter().any(|n| n.as_str() == name) {
                    return Ok(());
                }
            }
        }
        Err(e) => last_error = Some(e),
    }
    for name in names {
        match resolver.forward(name) {
            Ok(addrs) if addrs.iter().any(|a| a.to_canonical() == host) => return Ok(()),
            Ok(_) => {}
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    /// Names and addresses from two tables; a name not in them fails its lookup.
    #[derive(Default)]
    struct Table {
        reverse: HashMap<IpAddr, Vec<String>>,
        forward: HashMap<String, Vec<IpAddr>>,
    }

    impl Resolve for Table {
        fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, String> {
            self.reverse.get(&ip).cloned().ok_or_else(|| format!("lookup {ip}: no such host"))
        }
        fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
            self.forward.get(name).cloned().ok_or_else(|| format!("lookup {name}: no such host"))
        }
    }

    /// Blocks until the test ends: a resolver that never answers in time.
    struct Hangs(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

    impl Resolve for Hangs {
        fn reverse(&self, _: IpAddr) -> Result<Vec<String>, String> {
            let _ = self.0.lock().unwrap().recv();
            Err("released".into())
        }
        fn forward(&self, _: &str) -> Result<Vec<IpAddr>, String> {
            Err("unused".into())
        }
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sans(ips: &[&str], dns: &[&str]) -> Sans {
        Sans { ips: ips.iter().map(|s| ip(s)).collect(), dns: dns.iter().map(|s| (*s).to_owned()).collect() }
    }

    fn check(table: Table) -> PeerSanCheck {
        PeerSanCheck::new(Arc::new(table), Duration::from_secs(5))
    }

    #[test]
    fn sans_are_read_from_the_certificate() {
        let g = rcgen::generate_simple_self_signed(vec!["127.0.0.9".to_owned(), "peer.example".to_owned(), "::1".to_owned()]).unwrap();
        let got = Sans::of(g.cert.der()).unwrap();
        assert_eq!(got, sans(&["127.0.0.9", "::1"], &["peer.example"]));
        assert!(Sans::of(b"not a certificate").is_err());
    }

    #[tokio::test]
    async fn ip_sans_are_compared_with_the_remote_address() {
        let c = check(Table::default());
        assert!(c.check(&sans(&[], &[]), LOCAL).await.is_ok(), "no SAN: passes");
        assert!(c.check(&sans(&["10.0.0.1", "127.0.0.1"], &[]), LOCAL).await.is_ok());
        assert!(c.check(&sans(&["127.0.0.1"], &[]), ip("::ffff:127.0.0.1")).await.is_ok(), "v4-mapped");
        let err = c.check(&sans(&["127.0.0.9", "::1"], &[]), LOCAL).await.unwrap_err();
        assert_eq!(err.to_string(), "x509: certificate is valid for 127.0.0.9, ::1, not 127.0.0.1");
    }

    #[tokio::test]
    async fn dns_sans_are_resolved_both_ways() {
        let mut t = Table::default();
        t.reverse.insert(LOCAL, vec!["node1.example.com.".to_owned()]);
        t.forward.insert("peer.example".to_owned(), vec![ip("10.0.0.5"), LOCAL]);
        let c = check(t);
        // reverse: exact name (trailing dot stripped) or wildcard suffix
        assert!(c.check(&sans(&[], &["node1.example.com"]), LOCAL).await.is_ok());
        assert!(c.check(&sans(&[], &["*.example.com"]), LOCAL).await.is_ok());
        // forward: a name that resolves to the remote address
        assert!(c.check(&sans(&[], &["peer.example"]), LOCAL).await.is_ok());
        // an IP SAN that does not match falls through to the DNS SANs
        assert!(c.check(&sans(&["127.0.0.9"], &["peer.example"]), LOCAL).await.is_ok());
        // no match: the last lookup error is quoted
        let err = c.check(&sans(&["127.0.0.9"], &["*.other.org", "missing.example"]), LOCAL).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "tls: \"127.0.0.1\" does not match any of DNSNames [\"*.other.org\" \"missing.example\"] (lookup missing.example: no such host)"
        );
        let err = c.check(&sans(&[], &["peer.example"]), ip("10.9.9.9")).await.unwrap_err();
        assert!(err.to_string().ends_with("(lookup 10.9.9.9: no such host)"), "{err}");
    }

    #[tokio::test]
    async fn a_lookup_that_hangs_is_bounded() {
        let (release, hang) = std::sync::mpsc::channel();
        let c = PeerSanCheck::new(Arc::new(Hangs(std::sync::Mutex::new(hang))), Duration::from_millis(50));
        let err = c.check(&sans(&[], &["peer.example"]), LOCAL).await.unwrap_err();
        assert!(err.to_string().contains("lookup timed out"), "{err}");
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn the_system_resolver_knows_localhost() {
        // /etc/hosts names 127.0.0.1 localhost on every system this runs on
        let c = PeerSanCheck::default();
        assert!(c.check(&sans(&[], &["localhost"]), LOCAL).await.is_ok());
        assert!(SystemResolver.forward("localhost").unwrap().contains(&LOCAL));
    }
}
