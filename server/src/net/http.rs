//! The metrics listeners (`--listen-metrics-urls`): `/health`, `/livez`, `/readyz` for
//! liveness probes (kubeadm probes `GET http://127.0.0.1:2381/health`) and `/metrics` in
//! Prometheus' text format, with etcd's metric families (`crate::metrics`).
//!
//! `/livez` and `/readyz` are etcd 3.5's: named checks, each also on its own path
//! (`/livez/serializable_read`; `/readyz/data_corruption`, `/readyz/serializable_read`,
//! `/readyz/linearizable_read`); the root path runs every check not named by an
//! `exclude=` parameter (an unknown name is ignored, as etcd). Success is 200 `ok\n`, with
//! `?verbose` preceded by one `[+]name ok` line per check run; failure is 503 with the
//! `[+]`/`[-]name failed: reason` lines. The checks: `serializable_read` reads the local
//! store (a one-key, keys-only range, as etcd's); `linearizable_read` needs a member that
//! has not halted and a known leader (what a
//! ReadIndex round needs; a leader without quorum steps down within an election timeout);
//! `data_corruption` fails while the CORRUPT alarm is raised.
//!
//! A deliberately minimal HTTP/1.1 responder: read one request head, answer it, close the
//! connection (`Connection: close`). Probes and scrapers open a connection per request or
//! reconnect after a close, so keep-alive, bodies and chunking are not needed. Plain HTTP
//! only; an `https://` metrics URL is a startup error.
//!
//! Health and the gauges of state (leader, sizes, revisions, keys, watches) are read from the
//! member at request time; counters and histograms are counted where the work happens
//! (`crate::metrics`).

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{AlarmType, RangeRequest};
use cairn_proto::json::{json_string, JsonStyle};
use cairn_storage::watch::WatchHub;
use cairn_storage::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::metrics::Metrics;
use crate::error::{ConfigError, ServerError};
use crate::net::listen::ClientUrl;

/// Largest request head read; a longer one is answered 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses `--listen-metrics-urls`. `https://` is refused: TLS for metrics is not supported yet.
pub(crate) fn parse_urls(urls: &[String]) -> Result<Vec<ClientUrl>, ConfigError> {
    urls.iter()
        .map(|url| {
            let parsed = ClientUrl::parse(url).map_err(|e| match e {
                ConfigError::Url { url, reason, .. } => ConfigError::Url {
                    flag: "listen-metrics-urls",
                    url,
                    reason,
                },
                other => other,
            })?;
            if parsed.tls {
                return Err(ConfigError::Url {
                    flag: "listen-metrics-urls",
                    url: url.clone(),
                    reason: "https is not supported yet for metrics; use http://",
                });
            }
            Ok(parsed)
        })
        .collect()
}

/// Binds every metrics URL; a bind failure is a startup error. Returns the bound URLs (for
/// the log) with their listeners.
pub(crate) async fn bind(urls: &[ClientUrl]) -> Result<Vec<(String, TcpListener)>, ServerError> {
    let mut bound = Vec::with_capacity(urls.len());
    for url in urls {
        bound.push(url.bind_reporting().await?);
    }
    Ok(bound)
}

/// A member's health as the endpoints report it.
#[derive(Debug, Clone, Default)]
pub struct MemberHealth {
    /// Why the member's node failed for good (a sticky WAL or store error), if it did.
    pub failed: Option<Arc<str>>,
    /// A leader is known.
    pub has_leader: bool,
    /// This member is the leader.
    pub is_leader: bool,
    /// This member is a learner.
    pub is_learner: bool,
}

/// What the endpoints report on; cheap to clone.
#[derive(Clone)]
pub(crate) struct StatusSource {
    /// The store the metrics are read from.
    pub(crate) store: Arc<Store>,
    /// The watch hub (watcher and stream gauges).
    pub(crate) hub: WatchHub,
    /// The member's metrics, rendered by `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// The member's health: a failed node, and what it knows of the leader.
    pub(crate) health: Arc<dyn Fn() -> MemberHealth + Send + Sync>,
}

impl StatusSource {
    fn snapshot(&self) -> Snapshot {
        let health = (self.health)();
        let watch = self.hub.stats();
        Snapshot {
            metrics: Some(self.metrics.clone()),
            watchers: watch.watches,
            watch_streams: watch.streams,
            slow_watchers: watch.unsynced,
            readable: self.store.range(&RangeRequest { key: vec![0], keys_only: true, limit: 1, serializable: true, ..Default::default() }).err().map(|e| e.to_string()),
            halted: health.failed,
            has_leader: health.has_leader,
            is_leader: health.is_leader,
            is_learner: health.is_learner,
            db_size: self.store.db_size(),
            db_size_in_use: self.store.db_size_in_use(),
            revision: self.store.revision(),
            compact_revision: self.store.compact_revision(),
            keys: self.store.index_len(),
            alarms: self.store.alarms().get(AlarmType::None).iter().map(|a| alarm_name(a.alarm)).collect(),
        }
    }
}

/// Serves every listener until `stop` turns true (or its sender is dropped). Connections
/// still being answered then are dropped: each answer is one small write.
pub(crate) async fn serve(
    listeners: Vec<(String, TcpListener)>,
    source: StatusSource,
    stop: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for (url, listener) in listeners {
        info!(url = %url, "serving /metrics and /health");
        tasks.spawn(accept_loop(listener, source.clone(), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, source: StatusSource, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let source = source.clone();
                    connections.spawn(async move {
                        if let Err(e) = answer(stream, &source).await {
                            debug!(peer = %peer, error = %e, "metrics connection failed");
                        }
                    });
                }
                // Per-connection failures (reset before accept, out of descriptors): keep
                // accepting, as Go's http.Server does after a short pause.
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Resolves once `stop` turns true, or its sender is gone (then stop as well).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard is dropped here, not held across the caller's awaits.
    let _stopped = stop.wait_for(|stop| *stop).await;
}

/// Reads one request head, writes the answer, closes.
async fn answer(mut stream: TcpStream, source: &StatusSource) -> std::io::Result<()> {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Head::TooLarge)) => Response::text(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        Ok(Ok(Head::Malformed)) => Response::text(400, "Bad Request", "malformed request\n"),
        Ok(Ok(Head::Request { method, path, query })) => route(&method, &path, &query, || source.snapshot()),
    };
    stream.write_all(&response.encode()).await?;
    stream.shutdown().await
}

enum Head {
    Request { method: String, path: String, query: String },
    Malformed,
    TooLarge,
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Malformed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(parse_request_line(&buf));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

/// `METHOD SP target SP HTTP/x.y`; the target splits into path and query string.
fn parse_request_line(head: &[u8]) -> Head {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Head::Malformed;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None)
            if version.starts_with("HTTP/1.") && !method.is_empty() =>
        {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            Head::Request {
                method: method.to_owned(),
                path: path.to_owned(),
                query: query.to_owned(),
            }
        }
        _ => Head::Malformed,
    }
}

/// The values one answer reports.
#[derive(Clone, Default)]
struct Snapshot {
    /// Where `/metrics` renders from (`None` in tests of the health routes).
    metrics: Option<Arc<Metrics>>,
    watchers: usize,
    watch_streams: usize,
    slow_watchers: usize,
    /// Why a local read failed, if it did.
    readable: Option<String>,
    halted: Option<Arc<str>>,
    has_leader: bool,
    is_leader: bool,
    is_learner: bool,
    db_size: u64,
    db_size_in_use: u64,
    revision: i64,
    compact_revision: i64,
    keys: usize,
    /// The active alarms' type names (`NOSPACE`, `CORRUPT`), one per raised alarm.
    alarms: Vec<&'static str>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

/// Answers a request that came in on a client URL beside gRPC (see `client_http.rs`):
/// its status, content type and body, as the metrics listeners answer it.
pub(crate) fn answer_parts(source: &StatusSource, method: &str, path: &str, query: &str) -> (u16, &'static str, String) {
    let r = route(method, path, query, || source.snapshot());
    (r.status, r.content_type, r.body)
}

/// Answers one request; `snapshot` is called only for routes that report values.
fn route(method: &str, path: &str, query: &str, snapshot: impl FnOnce() -> Snapshot) -> Response {
    let probe = Probe::parse(path);
    let known = matches!(path, "/health" | "/metrics") || probe.is_some();
    if !known {
        return Response::text(404, "Not Found", "404 page not found\n");
    }
    if method != "GET" {
        return Response::text(405, "Method Not Allowed", "Method Not Allowed\n");
    }
    match path {
        "/health" => health(&snapshot(), &HealthQuery::parse(query)),
        "/metrics" => Response {
            status: 200,
            reason: "OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics(&snapshot()),
        },
        _ => match probe {
            Some(probe) => probe.answer(&snapshot(), query),
            None => Response::text(404, "Not Found", "404 page not found\n"),
        },
    }
}

/// The checks of `/livez` and `/readyz`, in the order they run.
const LIVEZ_CHECKS: &[&str] = &["serializable_read"];
const READYZ_CHECKS: &[&str] = &["data_corruption", "serializable_read", "linearizable_read"];

/// A `/livez` or `/readyz` request: the root (every check but the excluded) or one check.
struct Probe {
    checks: &'static [&'static str],
    /// One check's path; `None` for the root.
    only: Option<&'static str>,
}

impl Probe {
    fn parse(path: &str) -> Option<Probe> {
        let (root, checks) = match path.split('/').nth(1)? {
            "livez" => ("/livez", LIVEZ_CHECKS),
            "readyz" => ("/readyz", READYZ_CHECKS),
            _ => return None,
        };
        match path.strip_prefix(root)? {
            "" => Some(Probe { checks, only: None }),
            sub => {
                let name = sub.strip_prefix('/')?;
                checks.iter().find(|c| **c == name).map(|c| Probe { checks, only: Some(*c) })
            }
        }
    }

    /// Why `check` fails on `s`, if it does.
    fn failure(check: &str, s: &Snapshot) -> Option<String> {
        match check {
            "data_corruption" => s.alarms.contains(&"CORRUPT").then(|| "alarm activated: CORRUPT".to_owned()),
            "serializable_read" => s.readable.clone(),
            _ if s.halted.is_some() => s.readable.clone().or_else(|| Some("etcdserver: the member has stopped".to_owned())),
            _ if !s.has_leader => Some("etcdserver: no leader".to_owned()),
            _ => None,
        }
    }

    fn answer(&self, s: &Snapshot, query: &str) -> Response {
        let excluded: Vec<&str> = match self.only {
            Some(_) => Vec::new(),
            None => query_values(query, "exclude"),
        };
        let mut lines = String::new();
        let mut failed = false;
        let run = self.checks.iter().filter(|c| self.only.is_none_or(|o| o == **c)).filter(|c| !excluded.contains(c));
        for check in run {
            match Self::failure(check, s) {
                Some(why) => {
                    failed = true;
                    lines.push_str(&format!("[-]{check} failed: {why}\n"));
                }
                None => lines.push_str(&format!("[+]{check} ok\n")),
            }
        }
        if failed {
            // Go's http.Error: the text and a newline
            lines.push('\n');
            return Response::text(503, "Service Unavailable", &lines);
        }
        let verbose = query.split('&').any(|p| p == "verbose" || p.starts_with("verbose="));
        if verbose {
            lines.push_str("ok\n");
            Response::text(200, "OK", &lines)
        } else {
            Response::text(200, "OK", "ok\n")
        }
    }
}

/// Every value of parameter `key` in a query string (empty values skipped, as etcd).
fn query_values<'q>(query: &'q str, key: &str) -> Vec<&'q str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v)
        .collect()
}

/// What a `/health` probe asks (etcd 3.5's query parameters): `serializable=true` judges
/// the member by what it can serve locally, so a member without a leader is still healthy
/// (kubeadm's liveness probe asks this, so that kubelet does not restart every member
/// while quorum is lost); `exclude=ALARM` (repeatable) ignores that alarm.
#[derive(Debug, Default, PartialEq, Eq)]
struct HealthQuery {
    serializable: bool,
    exclude: Vec<String>,
}

impl HealthQuery {
    fn parse(query: &str) -> HealthQuery {
        let mut q = HealthQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "serializable" => q.serializable = value == "true",
                "exclude" => q.exclude.push(value.to_owned()),
                _ => {}
            }
        }
        q
    }
}

/// An alarm type's name as etcd's `/health` and `exclude=` spell it.
fn alarm_name(alarm: i32) -> &'static str {
    AlarmType::try_from(alarm).map_or("UNKNOWN", |t| t.as_str_name())
}

/// etcd's `/health` body: `{"health":"true","reason":""}`, or 503 with a reason: a failed
/// node always; an active alarm not excluded (`ALARM NOSPACE`, etcd's `checkHealth`);
/// no leader (etcd's `RAFT NO LEADER`) unless the probe is serializable.
fn health(s: &Snapshot, q: &HealthQuery) -> Response {
    let alarm = s.alarms.iter().find(|a| !q.exclude.iter().any(|e| e == *a));
    let unhealthy = match &s.halted {
        Some(why) => Some(format!("write pipeline halted: {why}")),
        None if alarm.is_some() => alarm.map(|a| format!("ALARM {a}")),
        None if !s.has_leader && !q.serializable => Some("RAFT NO LEADER".to_owned()),
        None => None,
    };
    let (status, reason, body) = match unhealthy {
        None => (200, "OK", r#"{"health":"true","reason":""}"#.to_owned()),
        Some(why) => (
            503,
            "Service Unavailable",
            format!(r#"{{"health":"false","reason":{}}}"#, json_string(&why, JsonStyle::GoMarshal)),
        ),
    };
    Response {
        status,
        reason,
        content_type: "application/json",
        body,
    }
}

/// Prometheus text format (0.0.4): the member's metrics, with the gauges of state set from
/// `s` first (they are read when scraped, never stale).
fn metrics(s: &Snapshot) -> String {
    let Some(m) = &s.metrics else { return String::new() };
    m.has_leader.set(f64::from(u8::from(s.has_leader)));
    m.is_leader.set(f64::from(u8::from(s.is_leader)));
    m.is_learner.set(f64::from(u8::from(s.is_learner)));
    m.db_total_size.set(s.db_size as f64);
    m.db_total_size_in_use.set(s.db_size_in_use as f64);
    m.current_revision.set(s.revision as f64);
    m.compact_revision.set(s.compact_revision as f64);
    m.keys.set(s.keys as f64);
    m.watchers.set(s.watchers as f64);
    m.watch_streams.set(s.watch_streams as f64);
    m.slow_watchers.set(s.slow_watchers as f64);
    m.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            db_size: 4096,
            db_size_in_use: 1024,
            revision: 7,
            compact_revision: 3,
            keys: 2,
            has_leader: true,
            is_leader: true,
            metrics: Some(Arc::new(Metrics::new())),
            ..Snapshot::default()
        }
    }

    #[test]
    fn health_is_etcds_json_and_turns_503_when_halted() {
        let ok = route("GET", "/health", "", snap);
        assert_eq!(
            (ok.status, ok.content_type, ok.body.as_str()),
            (200, "application/json", r#"{"health":"true","reason":""}"#)
        );
        let halted = route("GET", "/health", "", || Snapshot {
            halted: Some(r#"disk "full""#.into()),
            ..snap()
        });
        assert_eq!(halted.status, 503);
        assert_eq!(
            halted.body,
            r#"{"health":"false","reason":"write pipeline halted: disk \"full\""}"#
        );
        for probe in ["/livez", "/readyz"] {
            let r = route("GET", probe, "", snap);
            assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        }
    }

    #[test]
    fn health_without_a_leader_depends_on_serializable() {
        let leaderless = || Snapshot { has_leader: false, is_leader: false, ..snap() };
        let r = route("GET", "/health", "", leaderless);
        assert_eq!((r.status, r.body.as_str()), (503, r#"{"health":"false","reason":"RAFT NO LEADER"}"#));
        // kubeadm's liveness probe
        let r = route("GET", "/health", "exclude=NOSPACE&serializable=true", leaderless);
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"health":"true","reason":""}"#));
        // an alarm makes the member unhealthy unless excluded
        let alarmed = || Snapshot { alarms: vec!["NOSPACE"], ..snap() };
        let r = route("GET", "/health", "", alarmed);
        assert_eq!((r.status, r.body.as_str()), (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#));
        let r = route("GET", "/health", "exclude=NOSPACE", alarmed);
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"health":"true","reason":""}"#));
        // a failed node is unhealthy to every probe
        let failed = || Snapshot { halted: Some("disk".into()), ..leaderless() };
        assert_eq!(route("GET", "/health", "serializable=true", failed).status, 503);
        let m = route("GET", "/metrics", "", leaderless);
        assert!(m.body.lines().any(|l| l == "etcd_server_has_leader 0"), "{}", m.body);
        assert!(m.body.lines().any(|l| l == "etcd_server_is_leader 0"), "{}", m.body);
        assert_eq!(
            HealthQuery::parse("exclude=NOSPACE&serializable=true&exclude=CORRUPT"),
            HealthQuery { serializable: true, exclude: vec!["NOSPACE".into(), "CORRUPT".into()] }
        );
    }

    #[test]
    fn livez_and_readyz_checks_as_etcd_3_5() {
        let r = route("GET", "/readyz", "verbose", snap);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n")
        );
        let leaderless = || Snapshot { has_leader: false, is_leader: false, ..snap() };
        // alive without a leader, not ready
        assert_eq!(route("GET", "/livez", "", leaderless).status, 200);
        let r = route("GET", "/readyz", "", leaderless);
        assert_eq!(
            (r.status, r.body.as_str()),
            (
                503,
                "[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: no leader\n\n"
            )
        );
        let r = route("GET", "/readyz", "exclude=linearizable_read&verbose", leaderless);
        assert_eq!((r.status, r.body.as_str()), (200, "[+]data_corruption ok\n[+]serializable_read ok\nok\n"));
        // one check's own path ignores exclude=
        let r = route("GET", "/readyz/linearizable_read", "exclude=linearizable_read", leaderless);
        assert_eq!(r.status, 503);
        let r = route("GET", "/readyz/serializable_read", "verbose", leaderless);
        assert_eq!((r.status, r.body.as_str()), (200, "[+]serializable_read ok\nok\n"));
        let corrupt = || Snapshot { alarms: vec!["CORRUPT"], ..snap() };
        let r = route("GET", "/readyz/data_corruption", "", corrupt);
        assert_eq!((r.status, r.body.as_str()), (503, "[-]data_corruption failed: alarm activated: CORRUPT\n\n"));
        let unreadable = || Snapshot { readable: Some("disk".into()), halted: Some("disk".into()), ..snap() };
        assert_eq!(route("GET", "/livez/serializable_read", "", unreadable).status, 503);
        assert_eq!(route("GET", "/livez/linearizable_read", "", snap).status, 404);
        assert_eq!(route("GET", "/livez/", "", snap).status, 404);
        assert_eq!(route("POST", "/readyz/data_corruption", "", snap).status, 405);
    }

    #[test]
    fn metrics_have_help_type_and_values() {
        let r = route("GET", "/metrics", "", snap);
        assert_eq!(r.status, 200);
        for line in [
            "etcd_server_has_leader 1",
            "etcd_server_is_leader 1",
            "etcd_server_version{server_version=\"3.5.13\"} 1",
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
            "etcd_mvcc_db_total_size_in_bytes 4096",
            "etcd_mvcc_db_total_size_in_use_in_bytes 1024",
            "etcd_debugging_mvcc_current_revision 7",
            "etcd_debugging_mvcc_compact_revision 3",
            "etcd_debugging_mvcc_keys_total 2",
            "# TYPE etcd_debugging_mvcc_current_revision gauge",
            "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.",
        ] {
            assert!(r.body.lines().any(|l| l == line), "missing {line:?} in\n{}", r.body);
        }
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(route("GET", "/nope", "", || panic!("not read")).status, 404);
        assert_eq!(route("POST", "/health", "", || panic!("not read")).status, 405);
        assert!(String::from_utf8(route("POST", "/metrics", "", snap).encode())
            .unwrap()
            .contains("Allow: GET\r\n"));
    }

    #[test]
    fn request_line_parsing() {
        match parse_request_line(b"GET /health?verbose HTTP/1.1\r\nHost: x\r\n\r\n") {
            Head::Request { method, path, query } => {
                assert_eq!((method.as_str(), path.as_str(), query.as_str()), ("GET", "/health", "verbose"))
            }
            _ => panic!("not parsed"),
        }
        for bad in [
            &b"GET /health\r\n\r\n"[..],
            b"GET  /health HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
        ] {
            assert!(matches!(parse_request_line(bad), Head::Malformed));
        }
    }

    #[test]
    fn https_metrics_urls_are_refused() {
        let err = parse_urls(&["https://127.0.0.1:2381".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen-metrics-urls") && err.contains("not supported yet"),
            "{err}"
        );
        let err = parse_urls(&["127.0.0.1:2381".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--listen-metrics-urls"), "{err}");
        assert_eq!(
            parse_urls(&["http://127.0.0.1:2381".into()]).unwrap()[0].port,
            2381
        );
    }
}
