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
        "--cipher-suites=TLS_AES_128_GCM_SHA256",
    ])
    .unwrap();
    // flags that work (snapshot count, peer TLS, quota, cluster state) are not reported
    assert_eq!(c.ignored, vec!["--cipher-suites"]);
    assert_eq!(c.quota_backend_bytes, 8589934592);
}

#[test]
fn the_ignored_list_and_help_come_from_one_table() {
    let command = <Config as clap::CommandFactory>::command();
    let ids = super::ignored_flag_ids(&command);
    for used in ["snapshot_count", "quota_backend_bytes", "heartbeat_interval", "election_timeout", "listen_peer_urls", "peer_cert_file"] {
        assert!(!ids.iter().any(|i| i == used), "{used} works and must not be listed as ignored");
    }
    for ignored in ["auto_compaction_mode", "tls_min_version"] {
        assert!(ids.iter().any(|i| i == ignored), "{ignored} has no effect yet and must be listed");
    }
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
