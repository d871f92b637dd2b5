//! gRPC connections: one tonic `Channel` (one HTTP/2 connection) per `--conns`.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Normalizes an endpoint to a URI: adds `http://` when no scheme is given.
pub fn normalize_endpoint(ep: &str) -> String {
    let ep = ep.trim().trim_end_matches('/');
    if ep.starts_with("http://") || ep.starts_with("https://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    }
}

/// Opens `conns` channels, spreading them round-robin over `endpoints`.
pub async fn connect_all(endpoints: &[String], conns: usize) -> Result<Vec<Channel>, String> {
    let eps: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| normalize_endpoint(e))
        .collect();
    if eps.is_empty() {
        return Err("no endpoints given".into());
    }
    let mut out = Vec::with_capacity(conns);
    for i in 0..conns {
        let uri = &eps[i % eps.len()];
        out.push(connect_one(uri).await?);
    }
    Ok(out)
}

async fn connect_one(uri: &str) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(uri.to_string())
        .map_err(|e| format!("bad endpoint {uri}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Generous windows so that large values / many streams are not flow-control bound.
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20));
    ep.connect().await.map_err(|e| format!("connect {uri}: {e} ({e:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_endpoint("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(normalize_endpoint(" http://h:1/ "), "http://h:1");
        assert_eq!(normalize_endpoint("https://h:1"), "https://h:1");
    }
}
