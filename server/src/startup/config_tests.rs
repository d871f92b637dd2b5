//! Tests of flag and environment parsing.

use super::*;

use super::TEST_ENV_LOCK as ENV_LOCK;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    let mut all = vec!["cairn"];
    all.extend_from_slice(args);
    Config::try_parse_args(all)
}

#[test]
fn defaults_match_etcd() {
    let _env = ENV_LOCK.lock();
    let c = parse(&[]).unwrap();
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir(), PathBuf::from("default.etcd"));
    assert_eq!(c.listen_client_urls, vec!["http://127.0.0.1:2379"]);
    assert_eq!(c.advertise_client_urls, vec!["http://localhost:2379"]);
    assert_eq!(c.initial_advertise_peer_urls, vec!["http://localhost:2380"]);
    assert_eq!(c.initial_cluster(), "default=http://localhost:2380");
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert_eq!(c.max_request_bytes, 1_572_864);
    assert_eq!(c.max_txn_ops, 128);
    assert!(!c.client_cert_auth && !c.auto_tls && !c.version);
    assert!(c.ignored.is_empty());
}

#[test]
fn flags_and_derived_defaults() {
    let _env = ENV_LOCK.lock();
    let c = parse(&[
        "--name",
        "n1",
        "--listen-client-urls=http://127.0.0.1:1,https://127.0.0.1:2",
        "--max-request-bytes",
        "100",
        "--max-txn-ops=5",
        "--log-level",
        "debug",
    ])
    .unwrap();
    assert_eq!(c.name, "n1");
    assert_eq!(c.data_dir(), PathBuf::from("n1.etcd"));
    assert_eq!(c.initial_cluster(), "n1=http://localhost:2380");
    assert_eq!(
        c.listen_client_urls,
        vec!["http://127.0.0.1:1", "https://127.0.0.1:2"]
    );
    assert_eq!((c.max_request_bytes, c.max_txn_ops), (100, 5));
    assert_eq!(c.log_level, "debug");
}

#[test]
fn boolean_forms() {
    let _env = ENV_LOCK.lock();
    assert!(parse(&["--client-cert-auth"]).unwrap().client_cert_auth);
    assert!(
        parse(&["--client-cert-auth=true"])
            .unwrap()
            .client_cert_auth
    );
    assert!(parse(&["--client-cert-auth=1"]).unwrap().client_cert_auth);
    assert!(
        !parse(&["--client-cert-auth=false"])
            .unwrap()
            .client_cert_auth
    );
    assert!(!parse(&["--client-cert-auth=F"]).unwrap().client_cert_auth);
    assert!(parse(&["--auto-tls", "--name", "x"]).unwrap().auto_tls);
    assert!(parse(&["--client-cert-auth=maybe"]).is_err());
    // As in Go: a bare boolean never consumes the next argument.
    assert!(parse(&["--client-cert-auth", "false"]).is_err());
}

#[test]
fn single_dash_long_flags() {
    let _env = ENV_LOCK.lock();
    let c = parse(&["-name", "x", "-data-dir=/tmp/d", "-auto-tls"]).unwrap();
    assert_eq!(c.name, "x");
    assert_eq!(c.data_dir(), PathBuf::from("/tmp/d"));
    assert!(c.auto_tls);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let _env = ENV_LOCK.lock();
    let err = parse(&["--no-such-flag"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    let err = parse(&["--max-txn-ops=lots"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn version_flag_and_text() {
    let _env = ENV_LOCK.lock();
    assert!(parse(&["--version"]).unwrap().version);
    let text = Config::version_text();
    assert_eq!(text.lines().next(), Some("etcd Version: 3.5.13"));
    assert!(text.lines().nth(1).unwrap().starts_with("cairn Version: "));
}

#[test]
fn ignored_flags_are_reported() {
    let _env = ENV_LOCK.lock();
    let c = parse(&[
        "--snapshot-count=10000",
        "--peer-client-cert-auth",
        "--quota-backend-bytes=8589934592",
        "--experimental-watch-progress-notify-interval=5s",
        "--initial-cluster-state=existing",
        "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "--enable-v2",
        "--experimental-peer-skip-client-san-verification",
    ])
    .unwrap();
    // flags that work (snapshot count, peer TLS, quota, cluster state, cipher suites, the
    // peer SAN check's switch) are not reported
    assert_eq!(c.ignored, vec!["--enable-v2"]);
    assert_eq!(c.quota_backend_bytes, 8589934592);
    assert!(c.experimental_peer_skip_client_san_verification);
    assert!(!parse(&[]).unwrap().experimental_peer_skip_client_san_verification, "etcd checks SANs by default");
}

#[test]
fn grpc_keepalive_min_time_defaults_to_etcds_and_is_not_ignored() {
    use std::time::Duration;
    let _env = ENV_LOCK.lock();
    let c = parse(&[]).unwrap();
    assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(5));
    let c = parse(&["--grpc-keepalive-min-time=1.5s"]).unwrap();
    assert_eq!(c.grpc_keepalive_min_time, Duration::from_millis(1500));
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    assert!(parse(&["--grpc-keepalive-min-time=often"]).is_err());
}

#[test]
fn the_ignored_list_and_help_come_from_one_table() {
    let command = <Config as clap::CommandFactory>::command();
    let ids = super::ignored_flag_ids(&command);
    for used in ["snapshot_count", "quota_backend_bytes", "heartbeat_interval", "election_timeout", "listen_peer_urls", "peer_cert_file", "metrics", "experimental_peer_skip_client_san_verification", "auto_compaction_mode", "auto_compaction_retention", "grpc_keepalive_min_time"] {
        assert!(!ids.iter().any(|i| i == used), "{used} works and must not be listed as ignored");
    }
    assert!(ids.iter().any(|i| i == "enable_v2"), "enable_v2 has no effect yet and must be listed");
    let help = command.clone().render_long_help().to_string();
    assert_eq!(help.matches(super::IGNORED_MARK).count(), ids.len(), "every ignored flag says so in --help");
}

#[test]
fn watch_progress_notify_interval_flags() {
    use std::time::Duration;
    let _env = ENV_LOCK.lock();
    assert_eq!(
        parse(&[]).unwrap().watch_progress_notify_interval(),
        Duration::ZERO
    );
    let c = parse(&["--experimental-watch-progress-notify-interval=5s"]).unwrap();
    assert_eq!(c.watch_progress_notify_interval(), Duration::from_secs(5));
    let c = parse(&[
        "--experimental-watch-progress-notify-interval=5s",
        "--watch-progress-notify-interval=1m30s",
    ])
    .unwrap();
    assert_eq!(c.watch_progress_notify_interval(), Duration::from_secs(90));
    assert!(parse(&["--watch-progress-notify-interval=5"]).is_err());
    for (s, d) in [
        ("0", Duration::ZERO),
        ("100ms", Duration::from_millis(100)),
        ("1.5s", Duration::from_millis(1500)),
        ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
        ("10µs", Duration::from_micros(10)),
        ("-3s", Duration::ZERO),
    ] {
        assert_eq!(crate::startup::config::parse_go_duration(s), Ok(d), "{s}");
    }
    for bad in ["", "s", "1x", "1.2.3s", "5"] {
        assert!(crate::startup::config::parse_go_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn environment_variables() {
    let _env = ENV_LOCK.lock();
    let vars = [
        ("ETCD_NAME", "envname"),
        ("ETCD_DATA_DIR", "/tmp/envdir"),
        (
            "ETCD_LISTEN_CLIENT_URLS",
            "http://127.0.0.1:7,http://127.0.0.1:8",
        ),
        ("ETCD_CLIENT_CERT_AUTH", "true"),
        ("ETCD_MAX_TXN_OPS", "9"),
        ("ETCD_SNAPSHOT_COUNT", "5"),
        ("ETCD_VERSION", "3.4.0"),
    ];
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let from_env = parse(&[]);
    let flag_wins = parse(&["--name=flag", "--client-cert-auth=false"]);
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    let c = from_env.unwrap();
    assert_eq!(c.name, "envname");
    assert_eq!(c.data_dir(), PathBuf::from("/tmp/envdir"));
    assert_eq!(
        c.listen_client_urls,
        vec!["http://127.0.0.1:7", "http://127.0.0.1:8"]
    );
    assert!(c.client_cert_auth);
    assert_eq!(c.max_txn_ops, 9);
    assert!(!c.version, "ETCD_VERSION must not turn on --version");
    assert!(c.ignored.is_empty(), "--snapshot-count works: {:?}", c.ignored);
    let c = flag_wins.unwrap();
    assert_eq!(c.name, "flag");
    assert!(!c.client_cert_auth);
}

/// Every flag etcd 3.5's `--help` lists (server/etcdmain/help.go, v3.5.17), plus etcd 3.4's
/// that 3.5 dropped: each must parse, so no manifest written for etcd stops cairn.
const ETCD_FLAGS: &[&str] = &[
    "advertise-client-urls", "auth-token", "auth-token-ttl", "auto-compaction-mode", "auto-compaction-retention",
    "auto-tls", "backend-batch-interval", "backend-batch-limit", "backend-bbolt-freelist-type", "bcrypt-cost",
    "cert-file", "cipher-suites", "client-cert-allowed-hostname", "client-cert-auth", "client-cert-file",
    "client-crl-file", "client-key-file", "config-file", "cors", "data-dir", "debug", "discovery",
    "discovery-fallback", "discovery-proxy", "discovery-srv", "discovery-srv-name", "election-timeout",
    "enable-grpc-gateway", "enable-log-rotation", "enable-pprof", "enable-v2",
    "experimental-backend-bbolt-freelist-type", "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-compact-hash-check-enabled", "experimental-compact-hash-check-time",
    "experimental-compaction-batch-limit", "experimental-compaction-sleep-interval",
    "experimental-corrupt-check-time", "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-instance-id", "experimental-distributed-tracing-sampling-rate",
    "experimental-distributed-tracing-service-name", "experimental-downgrade-check-time",
    "experimental-enable-distributed-tracing", "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist", "experimental-enable-v2v3",
    "experimental-initial-corrupt-check", "experimental-memory-mlock",
    "experimental-peer-skip-client-san-verification", "experimental-snapshot-catchup-entries",
    "experimental-stop-grpc-service-on-defrag", "experimental-txn-mode-write-with-shared-buffer",
    "experimental-warning-apply-duration", "experimental-watch-progress-notify-interval",
    "force-new-cluster", "grpc-keepalive-interval", "grpc-keepalive-min-time", "grpc-keepalive-timeout",
    "heartbeat-interval", "host-whitelist", "initial-advertise-peer-urls", "initial-cluster",
    "initial-cluster-state", "initial-cluster-token", "initial-election-tick-advance", "key-file",
    "listen-client-http-urls", "listen-client-urls", "listen-metrics-urls", "listen-peer-urls", "log-level",
    "log-outputs", "log-package-levels", "log-rotation-config-json", "logger", "max-concurrent-streams",
    "max-request-bytes", "max-snapshots", "max-txn-ops", "max-wals", "metrics", "name", "peer-auto-tls",
    "peer-cert-allowed-cn", "peer-cert-allowed-hostname", "peer-cert-file", "peer-client-cert-auth",
    "peer-client-cert-file", "peer-client-key-file", "peer-crl-file", "peer-key-file", "peer-trusted-ca-file",
    "pre-vote", "proxy", "proxy-dial-timeout", "proxy-failure-wait", "proxy-read-timeout",
    "proxy-refresh-interval", "proxy-write-timeout", "quota-backend-bytes", "raft-read-timeout",
    "raft-write-timeout", "self-signed-cert-validity", "snapshot-count", "socket-reuse-address",
    "socket-reuse-port", "strict-reconfig-check", "tls-max-version", "tls-min-version", "trusted-ca-file",
    "unsafe-no-fsync", "v2-deprecation", "version", "wal-dir",
];

#[test]
fn every_etcd_flag_is_known() {
    let command = <Config as clap::CommandFactory>::command();
    let known: Vec<&str> = command.get_arguments().filter_map(|a| a.get_long()).collect();
    let missing: Vec<&&str> = ETCD_FLAGS.iter().filter(|f| !known.contains(f)).collect();
    assert!(missing.is_empty(), "etcd flags cairn does not accept: {missing:?}");
}

#[test]
fn the_e2e_harness_command_line_parses() {
    let _env = ENV_LOCK.lock();
    // what etcd's own e2e suite (tests/e2e/cluster_test.go) passes
    let c = parse(&[
        "--name", "test-0", "--listen-client-urls", "http://localhost:20000",
        "--advertise-client-urls", "http://localhost:20000", "--listen-peer-urls", "https://localhost:20001",
        "--initial-advertise-peer-urls", "https://localhost:20001", "--initial-cluster-token", "new",
        "--data-dir", "/tmp/x", "--snapshot-count", "100000", "--strict-reconfig-check=false",
        "--enable-v2", "--experimental-initial-corrupt-check", "--max-concurrent-streams", "100",
        "--peer-auto-tls", "--client-crl-file", "/tmp/crl.pem", "--client-cert-auth",
        "--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "--initial-cluster", "test-0=https://localhost:20001",
    ])
    .unwrap();
    assert_eq!(c.max_concurrent_streams, 100);
    assert_eq!(c.cipher_suites.len(), 2);
    assert_eq!(c.client_crl_file.as_deref(), Some(std::path::Path::new("/tmp/crl.pem")));
    assert!(!c.etcd_only.strict_reconfig_check);
    assert!(c.etcd_only.refused().is_none());
}

#[test]
fn flags_cairn_cannot_honour_are_refused() {
    let _env = ENV_LOCK.lock();
    for args in [&["--discovery=https://d/x"][..], &["--proxy=on"], &["--peer-cert-allowed-cn=etcd"]] {
        assert!(parse(args).unwrap().etcd_only.refused().is_some(), "{args:?}");
    }
    assert!(parse(&["--proxy=off"]).unwrap().etcd_only.refused().is_none());
    assert!(parse(&["--force-new-cluster"]).unwrap().etcd_only.refused().is_none());
}

#[test]
fn config_file_is_the_whole_configuration() {
    let _env = ENV_LOCK.lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd.yaml");
    std::fs::write(
        &path,
        "name: from-file\nsnapshot-count: 42\nlog-outputs: [stderr]\nlisten-client-urls: http://127.0.0.1:1,http://127.0.0.1:2\n\
         client-transport-security:\n  client-cert-auth: true\n  trusted-ca-file: ca.crt\nno-such-key: 1\n\
         peer-transport-security:\n  skip-client-san-verification: true\n",
    )
    .unwrap();
    let file = format!("--config-file={}", path.display());
    // flags beside the file are ignored, as in etcd
    let c = parse(&[&file, "--name", "from-flag"]).unwrap();
    assert_eq!(c.name, "from-file");
    assert_eq!(c.snapshot_count, 42);
    assert_eq!(c.listen_client_urls.len(), 2);
    assert!(c.client_cert_auth);
    assert_eq!(c.trusted_ca_file.as_deref(), Some(std::path::Path::new("ca.crt")));
    assert_eq!(c.unknown_file_keys, ["no-such-key"]);
    assert!(c.experimental_peer_skip_client_san_verification);
    assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
    std::fs::write(&path, "name: [unclosed\n").unwrap();
    assert!(parse(&[&file]).is_err());
    assert!(parse(&["--config-file", "/nonexistent/etcd.yaml"]).is_err());
}

#[test]
fn a_repeated_flag_takes_its_last_value_as_in_go() {
    let _env = ENV_LOCK.lock();
    let c = parse(&["--client-cert-auth", "--name=a", "--client-cert-auth", "--name=b"]).unwrap();
    assert!(c.client_cert_auth);
    assert_eq!(c.name, "b");
}
