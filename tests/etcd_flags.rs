//! Starting cairn the way operators and harnesses start etcd: a cluster with auto-TLS peers
//! and no CA (etcd's own e2e suite does this for nearly every test), a member configured by
//! `--config-file` alone, etcd's JSON log lines and start-up milestones, auto-compaction.
//! Each test runs against cairn, or real etcd with `CAIRN_TEST_TARGET=etcd`.

mod common;

use std::time::Duration;

use common::{etcdctl_command, free_addr, target_kind, wait_for, Options, RawServer, Server};

/// etcd's start-up milestones (zap's wording) that harnesses (etcd's e2e suite) wait for.
const MILESTONES: [&str; 2] = ["published local member to cluster through raft", "enabled capabilities for version"];

fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl_command(endpoint, args).output().expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} against {endpoint}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_cluster_with_auto_tls_peers_and_no_ca_replicates() {
    let kind = target_kind();
    let tmp = tempfile::tempdir().unwrap();
    let clients: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let peers: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let initial: Vec<String> = (0..3).map(|i| format!("m{i}=https://{}", peers[i])).collect();
    let mut members: Vec<RawServer> = (0..3)
        .map(|i| {
            let client = format!("http://{}", clients[i]);
            let args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", tmp.path().join(format!("m{i}")).display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls=https://{}", peers[i]),
                format!("--initial-advertise-peer-urls=https://{}", peers[i]),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-token=auto-tls".to_owned(),
                "--peer-auto-tls".to_owned(),
                "--logger=zap".to_owned(),
            ];
            RawServer::spawn(kind, &args)
        })
        .collect();
    for m in &mut members {
        m.wait_ready();
    }
    let first = format!("http://{}", clients[0]);
    let last = format!("http://{}", clients[2]);
    etcdctl_ok(&first, &["put", "/tls/k", "over encrypted peers"]);
    // a linearizable read through another member: the entry crossed the TLS peer links
    let got = etcdctl_ok(&last, &["get", "/tls/k", "--print-value-only"]);
    assert_eq!(got.trim(), "over encrypted peers");
    let list = etcdctl_ok(&last, &["member", "list"]);
    assert_eq!(list.lines().filter(|l| l.contains("https://")).count(), 3, "{list}");
    for m in &members {
        let log = m.log();
        for milestone in MILESTONES {
            assert!(log.contains(milestone), "no {milestone:?} in:\n{log}");
        }
    }
}

#[test]
fn a_member_configured_by_a_yaml_file_alone() {
    let kind = target_kind();
    let tmp = tempfile::tempdir().unwrap();
    let client = format!("http://{}", free_addr());
    let peer = format!("http://{}", free_addr());
    let log_file = tmp.path().join("member.log");
    let yaml = format!(
        "name: from-file\ndata-dir: {data}\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n\
         listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n\
         initial-cluster: from-file={peer}\ninitial-cluster-token: yaml\nsnapshot-count: 5000\n\
         logger: zap\nlog-outputs: [stderr, {log}]\n",
        data = tmp.path().join("data").display(),
        log = log_file.display(),
    );
    let config = tmp.path().join("etcd.yaml");
    std::fs::write(&config, yaml).unwrap();
    // a flag beside the file is ignored (the file is the whole configuration)
    let mut m = RawServer::spawn(kind, &[format!("--config-file={}", config.display()), "--name=ignored".to_owned()]);
    m.wait_ready();
    etcdctl_ok(&client, &["put", "k", "v"]);
    let list = etcdctl_ok(&client, &["member", "list"]);
    assert!(list.contains("from-file"), "{list}");
    // the same JSON lines went to the file as to stderr
    let text = common::wait_for("the ready line in the log file", Duration::from_secs(5), || {
        let t = std::fs::read_to_string(&log_file).ok()?;
        t.contains(MILESTONES[1]).then_some(t)
    });
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["level", "ts", "caller", "msg"] {
            assert!(v.get(key).is_some_and(|x| x.is_string()), "no {key} in {line}");
        }
        seen += 1;
    }
    assert!(seen >= 3, "too few JSON lines:\n{text}");
    for milestone in MILESTONES {
        assert!(text.contains(milestone), "no {milestone:?} in:\n{text}");
    }
}

#[test]
fn flags_cairn_cannot_honour_stop_it_with_a_reason() {
    if target_kind() != common::Kind::Cairn {
        eprintln!("skipped for etcd: it honours these flags");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::Kind::Cairn.binary())
        .args([
            format!("--data-dir={}", tmp.path().join("d").display()),
            "--discovery=https://discovery.example/abc".to_owned(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--discovery") && err.contains("--initial-cluster"), "{err}");
}

#[test]
fn periodic_auto_compaction_keeps_the_retention_and_compacts_the_rest() {
    // a 1 s retention: a revision sample every 100 ms, the first compaction 1 s after start
    let server = Server::start_with(target_kind(), Options { extra_args: vec!["--auto-compaction-retention=1s".into()], ..Options::default() });
    let ep = server.endpoint();
    for i in 0..10 {
        etcdctl_ok(&ep, &["put", "k", &format!("v{i}")]); // revisions 2..=11
    }
    let compacted = |rev: i64| {
        let out = etcdctl_command(&ep, &["get", "k", &format!("--rev={rev}")]).output().expect("run etcdctl");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return false;
        }
        assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
        true
    };
    // with no more writes, every sample is revision 11 after a second: the leader compacts
    // up to it by itself
    wait_for("auto-compaction up to the last write", Duration::from_secs(20), || compacted(10).then_some(()));
    assert!(compacted(2));
    // the compacted revision itself stays readable
    assert_eq!(etcdctl_ok(&ep, &["get", "k", "--rev=11", "--print-value-only"]), "v9\n");
}

#[test]
fn an_unknown_auto_compaction_mode_stops_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let client = format!("http://{}", free_addr());
    let out = std::process::Command::new(target_kind().binary())
        .args([
            "--name=m".to_owned(),
            format!("--data-dir={}", tmp.path().join("m").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls=http://{}", free_addr()),
            "--auto-compaction-mode=sometimes".to_owned(),
            "--auto-compaction-retention=1".to_owned(),
        ])
        .output()
        .expect("run the server");
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    // etcd's words (cairn's JSON log escapes the quotes)
    assert!(log.contains("unknown auto-compaction-mode") && log.contains("sometimes"), "{log}");
}
