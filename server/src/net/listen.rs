//! Client URLs (`--listen-client-urls`): parsing and binding one TCP listener per URL.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::error::{ConfigError, ServerError};

/// One parsed `--listen-client-urls` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientUrl {
    /// The URL as given.
    pub url: String,
    /// `https://` (TLS) rather than `http://`.
    pub tls: bool,
    /// The host, without IPv6 brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ClientUrl {
    /// Parses `http://host:port` or `https://host:port` (a trailing `/` is allowed).
    pub fn parse(url: &str) -> Result<ClientUrl, ConfigError> {
        let bad = |reason| ConfigError::Url {
            flag: "listen-client-urls",
            url: url.to_owned(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if url.starts_with("unix://") || url.starts_with("unixs://") {
            return Err(bad("unix sockets are not supported yet"));
        } else {
            return Err(bad("expected an http:// or https:// URL"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('?') {
            return Err(bad("a listen URL has no path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6
                .split_once("]:")
                .ok_or_else(|| bad("expected [ipv6]:port"))?;
            (host, port)
        } else {
            authority
                .rsplit_once(':')
                .ok_or_else(|| bad("expected host:port"))?
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = port.parse::<u16>().map_err(|_| bad("invalid port"))?;
        Ok(ClientUrl {
            url: url.to_owned(),
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// The scheme-qualified URL of an address this listener is bound to.
    pub fn bound_url(&self, addr: SocketAddr) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, addr)
    }

    /// Binds (see [`ClientUrl::bind`]) and returns the listener with the URL it actually
    /// listens on (port 0 resolved), for the log.
    pub async fn bind_reporting(&self) -> Result<(String, TcpListener), ServerError> {
        let listener = self.bind().await?;
        let addr = listener.local_addr().map_err(|source| ServerError::Listen { url: self.url.clone(), source })?;
        Ok((self.bound_url(addr), listener))
    }

    /// Resolves the host (IPv4 first, like Go's listener for `localhost`) and binds.
    pub async fn bind(&self) -> Result<TcpListener, ServerError> {
        let resolve_err = |source| ServerError::Resolve {
            url: self.url.clone(),
            source,
        };
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(resolve_err)?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = addrs.first().copied().ok_or_else(|| {
            resolve_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })?;
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen {
                url: self.url.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcd_style_urls() {
        let u = ClientUrl::parse("http://127.0.0.1:2379").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 2379));
        let u = ClientUrl::parse("https://localhost:2379/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "localhost", 2379));
        let u = ClientUrl::parse("http://[::1]:0").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 0));
        for bad in [
            "127.0.0.1:2379",
            "http://127.0.0.1",
            "http://:1",
            "http://h:99999",
            "unix://x",
            "http://h:1/p",
        ] {
            assert!(ClientUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn binds_and_reports_the_bound_port() {
        let u = ClientUrl::parse("http://localhost:0").unwrap();
        let listener = u.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        assert_eq!(u.bound_url(addr), format!("http://{addr}"));
    }
}
