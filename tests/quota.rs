//! The backend quota and the NOSPACE alarm as an operator meets them: a three-member
//! cluster with a 4 MiB `--quota-backend-bytes` is filled until a put fails with etcd's
//! "database space exceeded"; every member then lists the alarm (`etcdctl alarm list`),
//! reports it in `endpoint status` and `/health`, refuses puts and lease grants but serves
//! reads and deletes; after compact, `etcdctl defrag` on every member and `etcdctl alarm
//! disarm`, writes work again.
//! Runs against cairn; `CAIRN_TEST_TARGET=etcd` runs the same assertions against etcd.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::{MemberOptions, ProcCluster};
use common::{target_kind, wait_for, Kind};
use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions, Txn, TxnOp};

const QUOTA: u64 = 4 << 20;
const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// `GET path` from member `i`'s metrics URL: (HTTP status, body).
fn http_get(c: &ProcCluster, i: usize, path: &str) -> (u16, String) {
    let addr = c.metrics_addr(i).expect("started with a metrics URL");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to the metrics URL");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("set a read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the answer");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not HTTP: {raw:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {head:?}"));
    (status, body.trim().to_owned())
}

/// The alarm list once every member lists the same, non-empty one.
fn agreed_alarms(c: &ProcCluster) -> Vec<String> {
    wait_for("the same alarms on every member", Duration::from_secs(10), || {
        let lists: Vec<Vec<String>> = (0..3).map(|i| c.alarm_list(i)).collect();
        (!lists[0].is_empty() && lists.iter().all(|l| *l == lists[0])).then(|| lists[0].clone())
    })
}

/// (dbSize, errors) of member `i` from `etcdctl endpoint status`.
fn status(c: &ProcCluster, i: usize) -> (u64, Vec<String>) {
    let j = c.ctl_json(i, &["endpoint", "status"]);
    let st = &j[0]["Status"];
    let size = st["dbSize"].as_u64().unwrap_or_else(|| panic!("dbSize in {st}"));
    let errors = st["errors"].as_array().map_or_else(Vec::new, |a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect());
    (size, errors)
}

fn is_no_space(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::ResourceExhausted && s.message() == NO_SPACE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_raises_nospace_on_every_member_and_recovers_after_compact_defrag_disarm() {
    let opts = |metrics: bool| MemberOptions { metrics, extra_args: vec![format!("--quota-backend-bytes={QUOTA}")], ..Default::default() };
    let mut c = ProcCluster::start_with(target_kind(), 3, &[(0, opts(true)), (1, opts(true)), (2, opts(true))]);
    let ids: Vec<u64> = (0..3).map(|i| c.member_id(i).expect("member id")).collect();
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(Client::connect([c.endpoint(i)], None).await.expect("connect"));
    }

    // fill through member 0 until the quota refuses a put
    let value = vec![b'v'; 4096];
    let mut written = 0;
    let refused = loop {
        assert!(written < 4 * (QUOTA as usize) / 4096, "{written} puts of 4 KiB never hit a {QUOTA}-byte quota");
        match clients[0].put(format!("/fill/{written:05}"), value.clone(), None).await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(is_no_space(&refused), "the put over the quota fails with {NO_SPACE:?}: {refused:?}");
    assert!(written > 100, "the quota lets data in first ({written} puts)");

    // every member has the alarm (raised through Raft), lists it and reports it the same way
    let expected = agreed_alarms(&c);
    for line in &expected {
        let id = line.strip_prefix("memberID:").and_then(|r| r.strip_suffix(" alarm:NOSPACE ")).and_then(|id| id.parse::<u64>().ok());
        assert!(id.is_some_and(|id| ids.contains(&id)), "etcd's alarm line for a member of the cluster: {line:?}");
    }
    for i in 0..3 {
        let (_, errors) = status(&c, i);
        let mut errors = errors;
        errors.sort();
        assert_eq!(errors, expected, "member {i}'s status errors list the alarms");
        let (code, body) = http_get(&c, i, "/health");
        assert_eq!(code, 503, "member {i}'s /health: {body}");
        // etcd 3.4 (the reference installed) has neither the reason nor `exclude`; 3.5 has both
        if c.kind() == Kind::Cairn {
            assert_eq!(body, r#"{"health":"false","reason":"ALARM NOSPACE"}"#, "member {i}'s /health");
            let (code, _) = http_get(&c, i, "/health?exclude=NOSPACE");
            assert_eq!(code, 200, "member {i}'s /health excluding NOSPACE");
        }
    }

    // the alarm survives a restart (kill -9: from the store or the log replayed above it)
    c.kill9_and_restart(2);
    assert_eq!(agreed_alarms(&c), expected, "member 2 lists the alarms after a restart");
    clients[2] = Client::connect([c.endpoint(2)], None).await.expect("reconnect");

    // while the alarm is on: puts (any member), txns with puts and lease grants are refused
    // (a member whose own file is over the quota raises its own alarm too, as etcd's does)
    for (i, client) in clients.iter_mut().enumerate() {
        let e = client.put("/small", "x", None).await.expect_err("a put under NOSPACE");
        assert!(is_no_space(&e), "member {i}: {e:?}");
    }
    let expected = agreed_alarms(&c);
    let out = c.ctl(1, &["lease", "grant", "60"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("database space exceeded"), "{out:?}");
    let txn_put = Txn::new().and_then([TxnOp::put("/small", "x", None)]);
    let e = clients[2].txn(txn_put).await.expect_err("a txn with a put under NOSPACE");
    assert!(is_no_space(&e), "{e:?}");
    let txn_get = Txn::new().and_then([TxnOp::get("/fill/00000", None)]);
    assert!(clients[2].txn(txn_get).await.expect("a read-only txn under NOSPACE").succeeded());
    // reads and deletes work
    let count = clients[1].get("/fill/", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("read under NOSPACE");
    assert_eq!(count.count(), written as i64);
    let deleted = clients[2].delete("/fill/", Some(DeleteOptions::new().with_prefix())).await.expect("delete under NOSPACE");
    assert_eq!(deleted.deleted(), written as i64);

    // compact, defragment every member: the files shrink below the quota
    let rev = deleted.header().expect("header").revision();
    clients[0].compact(rev, Some(CompactionOptions::new().with_physical())).await.expect("compact under NOSPACE");
    for i in 0..3 {
        let out = c.ctl_ok(i, &["defrag"]);
        assert!(out.contains("Finished defragmenting etcd member"), "{out}");
        let (size, _) = status(&c, i);
        assert!(size < QUOTA / 2, "member {i}'s file shrank to {size} bytes");
    }
    // the alarm stays until disarmed: still refused
    let e = clients[0].put("/small", "x", None).await.expect_err("a put before disarm");
    assert!(is_no_space(&e), "{e:?}");

    let out = c.ctl_ok(0, &["alarm", "disarm"]);
    let mut disarmed: Vec<String> = out.lines().map(str::to_owned).collect();
    disarmed.sort();
    assert_eq!(disarmed, expected, "disarm prints the alarms it cleared");
    for i in 0..3 {
        wait_for("the alarm gone from every member", Duration::from_secs(10), || c.alarm_list(i).is_empty().then_some(()));
        assert!(status(&c, i).1.is_empty(), "member {i}'s status errors are empty again");
        assert_eq!(http_get(&c, i, "/health").0, 200, "member {i} is healthy again");
    }
    for client in &mut clients {
        client.put("/after", "ok", None).await.expect("a put after disarm");
    }
    let got = clients[2].get("/after", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"ok");
    c.ctl_ok(1, &["lease", "grant", "60"]);
}
