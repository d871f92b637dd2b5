//! The metrics listener (`--listen-metrics-urls`) end to end: kubeadm's liveness probe
//! (`GET /health`), the `/livez` and `/readyz` probes, Prometheus' `/metrics` with etcd's
//! metric names, and 404 for anything else; the same endpoints (and `/version`) on the
//! client URL beside gRPC, as etcd serves them. Plain HTTP/1.1 over a `TcpStream`.

mod common;

use common::{http_get as get, target_kind, Kind, Options, Server};

/// The value of an unlabelled sample `name` in a Prometheus text body.
fn sample(body: &str, name: &str) -> i64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} sample in\n{body}"))
        .trim()
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("{name}: {e}")) as i64
}

#[test]
fn health_metrics_and_not_found() {
    let metrics = common::free_addr();
    let server = Server::start_with(
        Kind::Cairn,
        Options {
            extra_args: vec![format!("--listen-metrics-urls=http://{metrics}")],
            ..Options::default()
        },
    );

    let (status, head, body) = get(metrics, "/health");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    for probe in ["/livez", "/readyz"] {
        assert_eq!(get(metrics, probe).0, 200, "{probe}");
    }

    let (status, _, before) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        "etcd_server_version{server_version=\"3.5.13\"} 1",
        "# TYPE etcd_debugging_mvcc_current_revision gauge",
    ] {
        assert!(
            before.lines().any(|l| l == name),
            "missing {name:?} in\n{before}"
        );
    }
    // present, read from the store (a fresh store may report 0 bytes)
    assert!(sample(&before, "etcd_mvcc_db_total_size_in_bytes") >= 0);
    let rev = sample(&before, "etcd_debugging_mvcc_current_revision");
    let keys = sample(&before, "etcd_debugging_mvcc_keys_total");

    server.ctl_ok(&["put", "metrics-key", "v"]);
    let (_, _, after) = get(metrics, "/metrics");
    assert!(
        sample(&after, "etcd_debugging_mvcc_current_revision") > rev,
        "{after}"
    );
    assert_eq!(
        sample(&after, "etcd_debugging_mvcc_keys_total"),
        keys + 1,
        "{after}"
    );

    assert_eq!(get(metrics, "/nope").0, 404);
}

#[test]
fn https_metrics_url_is_a_startup_error() {
    let out = std::process::Command::new(Kind::Cairn.binary())
        .arg(format!(
            "--data-dir={}",
            tempfile::tempdir().unwrap().path().join("d").display()
        ))
        .arg(format!(
            "--listen-client-urls=http://{}",
            common::free_addr()
        ))
        .arg(format!(
            "--advertise-client-urls=http://{}",
            common::free_addr()
        ))
        .arg(format!(
            "--listen-metrics-urls=https://{}",
            common::free_addr()
        ))
        .output()
        .expect("run cairn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("listen-metrics-urls") && stderr.contains("not supported yet"),
        "{stderr}"
    );
}

/// etcd serves `/health`, `/metrics` and `/version` on its client URLs too (gRPC and
/// HTTP/1.1 on one port); probes and etcd's own tests use them there.
#[test]
fn health_metrics_and_version_on_the_client_url() {
    let server = Server::start(target_kind());
    let client = server.client_addr();
    let (status, head, body) = get(client, "/health");
    assert_eq!(status, 200, "{head}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(health["health"], "true", "{body}");
    let (status, _, metrics) = get(client, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.lines().any(|l| l.starts_with("etcd_server_has_leader 1")), "{metrics}");
    let (status, _, version) = get(client, "/version");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&version).unwrap_or_else(|e| panic!("{e}: {version}"));
    assert!(v["etcdserver"].as_str().is_some_and(|s| s.starts_with("3.")), "{version}");
    // gRPC keeps working on the same port
    server.ctl_ok(&["put", "k", "v"]);
    assert_eq!(server.ctl_ok(&["get", "k", "--print-value-only"]).trim(), "v");
}
