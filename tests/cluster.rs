//! Whole-system tests of a three-member cluster, driven with etcdctl exactly as an operator
//! would: replication and the member/endpoint views, a leader killed -9, membership changes
//! (learner add, promote, remove, strict reconfiguration, force-new-cluster), a leader that
//! stops handing over (and one whose peers just died stopping at once), a follower
//! stopping at once, a partition isolating the leader, and auth across members.
//!
//! The target is cairn by default, real etcd with `CAIRN_TEST_TARGET=etcd`; the members run
//! with etcd's flags and advertise peer URLs of forwarders the test owns
//! (`common::proxy`), which is how a test partitions them.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::cluster::{MemberOptions, ProcCluster, RECONFIG_TIMEOUT};
use common::proxy::CutMode;
use common::{target_kind, wait_for};
use futures::StreamExt as _;

/// Reads `key` through member `i` (`serializable`: `--consistency=s`), giving up after
/// `timeout`. `Ok(None)`: the key does not exist.
fn get(
    c: &ProcCluster,
    i: usize,
    key: &str,
    serializable: bool,
    timeout: Duration,
) -> Result<Option<String>, String> {
    let t = format!("--command-timeout={}ms", timeout.as_millis());
    let d = format!("--dial-timeout={}ms", timeout.as_millis());
    let mut args = vec!["get", key, "-w", "json", &t, &d];
    if serializable {
        args.push("--consistency=s");
    }
    let out = c.ctl(i, &args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("bad JSON from etcdctl get: {e}"))?;
    Ok(v["kvs"]
        .as_array()
        .and_then(|kvs| kvs.first())
        .map(|kv| common::b64str(&kv["value"])))
}

/// Puts through member `i` until it succeeds or `timeout` passes; returns how long it took.
fn put_until(c: &ProcCluster, i: usize, key: &str, value: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    let mut last_err = String::new();
    while started.elapsed() < timeout {
        let left = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(100));
        let t = format!(
            "--command-timeout={}ms",
            left.min(Duration::from_secs(2)).as_millis()
        );
        let out = c.ctl(i, &["put", key, value, &t, "--dial-timeout=1s"]);
        if out.status.success() {
            return started.elapsed();
        }
        last_err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "put {key}={value} through {} did not succeed within {timeout:?}; last error: {last_err}\n{}",
        c.name(i),
        c.logs()
    );
}

/// Waits until member `i` serves `value` for `key` from its own state (serializable).
fn wait_value(c: &ProcCluster, i: usize, key: &str, value: &str, timeout: Duration) {
    let what = format!("{} to serve {key}={value}", c.name(i));
    wait_for(&what, timeout, || {
        let got = get(c, i, key, true, Duration::from_secs(1)).ok()??;
        (got == value).then_some(())
    });
}

const T: Duration = Duration::from_secs(5);

/// One cluster at a time: the timings asserted here (a new leader within seconds) assume
/// the machine is not also running three other clusters, whatever `--test-threads` says.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn writes_replicate_and_every_member_reports_the_same_cluster() {
    let _serial = one_at_a_time();
    let c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["put", "/a", "v1"]);
    for i in 1..3 {
        assert_eq!(
            get(&c, i, "/a", false, T),
            Ok(Some("v1".into())),
            "linearizable read via m{i}"
        );
        // after a linearizable read the member has applied the write: its local read sees it
        assert_eq!(
            get(&c, i, "/a", true, T),
            Ok(Some("v1".into())),
            "serializable read via m{i}"
        );
    }

    let ids: Vec<u64> = (0..3)
        .map(|i| c.member_id(i).expect("id known after start"))
        .collect();
    for i in 0..3 {
        let mut list = c.member_list(i);
        list.sort_by_key(|m| m.name.clone());
        assert_eq!(list.len(), 3, "member list via m{i}: {list:?}");
        for (j, m) in list.iter().enumerate() {
            assert_eq!(m.name, c.name(j), "member list via m{i}: {list:?}");
            assert_eq!(m.id, ids[j], "member list via m{i}: {list:?}");
            assert_eq!(
                m.peer_urls,
                vec![c.peer_url(j)],
                "peer URLs of {} via m{i}",
                m.name
            );
            assert_eq!(
                m.client_urls,
                vec![c.endpoint(j)],
                "client URLs of {} via m{i}",
                m.name
            );
            assert!(!m.is_learner, "{} is a voter", m.name);
        }
    }

    // one `endpoint status` over all three endpoints: one leader, named by everyone
    let out = c.ctl_on(&[0, 1, 2], &["endpoint", "status", "-w", "json"]);
    assert!(out.status.success(), "endpoint status: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = v.as_array().expect("a status per endpoint");
    assert_eq!(rows.len(), 3, "{v}");
    let leaders: Vec<u64> = rows
        .iter()
        .map(|r| r["Status"]["leader"].as_u64().unwrap())
        .collect();
    assert!(
        leaders.iter().all(|&l| l == leaders[0]),
        "leaders differ: {v}"
    );
    assert!(
        ids.contains(&leaders[0]),
        "the leader {} is not a member: {v}",
        leaders[0]
    );
    let revs: Vec<i64> = rows
        .iter()
        .map(|r| r["Status"]["header"]["revision"].as_i64().unwrap())
        .collect();
    assert!(
        revs.iter().all(|&r| r >= 2),
        "every member applied the put: {v}"
    );
    assert_eq!(
        c.link_stats().unidentified,
        0,
        "every peer connection came from a member"
    );
}

#[test]
fn a_killed_leader_is_replaced_within_seconds_and_catches_up_after_restart() {
    let _serial = one_at_a_time();
    let mut c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["put", "/b", "before"]);
    let old = c.leader();
    c.kill9(old);
    let other = (old + 1) % 3;
    let took = put_until(&c, other, "/b", "after", T);
    eprintln!(
        "write through {} took {took:?} after the leader was killed",
        c.name(other)
    );
    let new = c.leader();
    assert_ne!(new, old, "a killed member cannot lead");
    assert_eq!(
        get(&c, (old + 2) % 3, "/b", false, T),
        Ok(Some("after".into()))
    );

    c.restart(old);
    wait_value(&c, old, "/b", "after", Duration::from_secs(10));
    assert_eq!(get(&c, old, "/b", false, T), Ok(Some("after".into())));
    let leader = c.wait_leader_agreed(Duration::from_secs(10));
    assert!(c.is_running(leader));
}

#[test]
fn a_stopped_leader_hands_leadership_over_before_it_exits() {
    let _serial = one_at_a_time();
    // slow elections: a leader that vanished without a hand-over stays named by the others
    // for at least 3 s; a handed-over one is in place before the old leader exits
    const ELECTION: Duration = Duration::from_secs(3);
    let slow = MemberOptions {
        extra_args: vec![
            "--heartbeat-interval=100".into(),
            format!("--election-timeout={}", ELECTION.as_millis()),
        ],
        ..Default::default()
    };
    let opts: Vec<(usize, MemberOptions)> = (0..3).map(|i| (i, slow.clone())).collect();
    let mut c = ProcCluster::start_with(target_kind(), 3, &opts);
    c.ctl_ok(0, &["put", "/h", "before"]);
    let old = c.wait_leader_agreed(Duration::from_secs(20));
    let before = c.status(old, T).expect("the leader answers");
    assert!(
        c.stop(old, Duration::from_secs(10)),
        "{} did not exit after SIGTERM\n{}",
        c.name(old),
        c.logs()
    );
    let stopped = Instant::now();
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let after: Vec<_> = rest
        .iter()
        .map(|&i| c.status(i, T).unwrap_or_else(|| panic!("{} answers no status", c.name(i))))
        .collect();
    let asked = stopped.elapsed();
    assert!(
        asked < ELECTION,
        "inconclusive: asking the other members took {asked:?}, beyond the election timeout"
    );
    let new = after[0].leader;
    assert!(
        new != 0 && new != before.member_id && after.iter().all(|s| s.leader == new),
        "right after the leader {:x} stopped the others name {:?} as leader, not a new one it \
         handed over to\n{}",
        before.member_id,
        after.iter().map(|s| format!("{:x}", s.leader)).collect::<Vec<_>>(),
        c.logs()
    );
    assert!(after.iter().all(|s| s.raft_term > before.raft_term));
    if c.kind() == common::Kind::Cairn {
        let log = c.log(old);
        assert!(log.contains("leadership transfer finished"), "{log}");
    }
    // and the cluster serves writes at once
    put_until(&c, rest[0], "/h", "after", T);
    wait_value(&c, rest[1], "/h", "after", T);
}

/// SIGTERMs member `i` and asserts that it exits within `bound`.
fn assert_stops_within(c: &mut ProcCluster, i: usize, bound: Duration) {
    let asked = Instant::now();
    let exited = c.stop(i, Duration::from_secs(15));
    let took = asked.elapsed();
    assert!(exited, "{} did not exit after SIGTERM\n{}", c.name(i), c.logs());
    assert!(took < bound, "{} took {took:?} to stop after SIGTERM\n{}", c.name(i), c.logs());
}

#[test]
fn a_leader_whose_peers_just_died_stops_without_waiting_out_a_hand_over() {
    let _serial = one_at_a_time();
    let mut c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["put", "/s", "v"]);
    let leader = c.wait_leader_agreed(T);
    for i in (0..3).filter(|&i| i != leader) {
        c.kill9(i);
    }
    // still the leader (check-quorum steps it down only after an election timeout, 1 s):
    // the transferee it picks is gone. MoveLeader's timeout is 5 s; the stop must not
    // wait it out (etcd skips peers whose connection is down).
    assert_stops_within(&mut c, leader, Duration::from_millis(4500));
}

#[test]
fn a_follower_stops_at_once_while_its_peers_run() {
    let _serial = one_at_a_time();
    let mut c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["put", "/f", "v"]);
    let leader = c.wait_leader_agreed(T);
    let follower = (leader + 1) % 3;
    // the peers' Raft streams into it stay open: they must not hold up its stop (a
    // rolling restart pays the stop of every member)
    assert_stops_within(&mut c, follower, Duration::from_millis(1500));
    put_until(&c, leader, "/f", "after", T);
}

#[test]
fn membership_changes_that_would_lose_quorum_are_refused() {
    let _serial = one_at_a_time();
    let mut c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["put", "/q", "v"]);
    let leader = c.wait_leader_agreed(T);
    let (up, down) = ((leader + 1) % 3, (leader + 2) % 3);
    let ids: Vec<String> = (0..3)
        .map(|i| format!("{:x}", c.status(i, T).expect("status").member_id))
        .collect();
    c.kill9(down);
    // a member counts as connected while heard within an election timeout (1 s; etcd:
    // while its peer stream is up): past twice that, the leader knows it is gone
    std::thread::sleep(Duration::from_secs(2));

    let refused = |c: &ProcCluster, via: usize, args: &[&str]| {
        let out = c.ctl(via, args);
        assert!(!out.status.success(), "etcdctl {args:?} through member {via} succeeded with a member down");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // asked of the leader, and of the follower that is up (which on its own hears only
    // the leader: it must not take the member that is down for connected)
    for via in [leader, up] {
        // removing a healthy voter would leave one live member of two
        for healthy in [leader, up] {
            let e = refused(&c, via, &["member", "remove", &ids[healthy]]);
            assert!(e.contains("etcdserver: unhealthy cluster"), "{e}");
        }
        // a fourth voter would need all three for quorum
        let e = refused(&c, via, &["member", "add", "extra", "--peer-urls=http://127.0.0.1:9"]);
        assert!(e.contains("etcdserver: unhealthy cluster"), "{e}");
    }
    assert_eq!(c.member_list(leader).len(), 3, "nothing changed");

    // the member that is down is not part of the active quorum: it can go (asked of the
    // follower, which answers once its own list shows it)
    c.ctl_ok(up, &["member", "remove", &ids[down]]);
    assert_eq!(c.member_list(up).len(), 2);
    assert_eq!(c.member_list(leader).len(), 2);
    put_until(&c, up, "/q", "after", T);
    wait_value(&c, leader, "/q", "after", T);
}

#[test]
fn force_new_cluster_restarts_a_survivor_alone_with_its_data_and_it_grows_again() {
    let _serial = one_at_a_time();
    let mut c = ProcCluster::start(target_kind(), 3);
    for n in 0..30 {
        c.ctl_ok(n % 3, &["put", &format!("/f/{n:02}"), &format!("v{n}")]);
    }
    // the survivor applied every write (etcd drops what it had not seen committed)
    wait_value(&c, 0, "/f/29", "v29", T);
    // two members are lost for good: no quorum, no writes
    c.forget_removed(1, Duration::ZERO);
    c.forget_removed(2, Duration::ZERO);
    c.kill9(0);
    c.set_extra_args(0, &["--force-new-cluster"]);
    c.restart(0);
    c.wait_leader_agreed(Duration::from_secs(20));
    let members = c.member_list(0);
    assert_eq!(members.len(), 1, "a one-member cluster: {members:?}");
    // with every acknowledged write
    let kvs = c.ctl_json(0, &["get", "/f/", "--prefix"]);
    assert_eq!(kvs["count"].as_i64(), Some(30), "{kvs}");
    c.ctl_ok(0, &["put", "/f/new", "after"]);

    // without the flag from now on, it grows again
    c.set_extra_args(0, &[]);
    let grown = c.add_member(false);
    wait_value(&c, grown, "/f/new", "after", Duration::from_secs(10));
    wait_value(&c, grown, "/f/00", "v0", Duration::from_secs(10));
    assert_eq!(c.member_list(grown).len(), 2);
    c.ctl_ok(grown, &["put", "/f/grown", "yes"]);
    wait_value(&c, 0, "/f/grown", "yes", T);
}

#[test]
fn a_learner_is_added_promoted_and_another_member_removed() {
    let _serial = one_at_a_time();
    let mut c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["put", "/c", "v1"]);
    let learner = c.add_member(true);
    let lid = c.member_id(learner).expect("`member add` printed the id");
    let list = c.member_list(0);
    assert_eq!(list.len(), 4, "{list:?}");
    let row = list
        .iter()
        .find(|m| m.id == lid)
        .expect("the learner is listed");
    assert!(row.is_learner, "{row:?}");
    assert_eq!(row.peer_urls, vec![c.peer_url(learner)]);
    // it replicates, and serves serializable reads only
    wait_value(&c, learner, "/c", "v1", Duration::from_secs(10));
    let refused =
        get(&c, learner, "/c", false, T).expect_err("a learner refuses linearizable reads");
    assert!(
        refused.contains("etcdserver: rpc not supported for learner"),
        "{refused}"
    );
    // every RPC but serializable Range and Status is refused on a learner (Lease here)
    let out = c.ctl(learner, &["lease", "list", "--command-timeout=5s"]);
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && refused.contains("etcdserver: rpc not supported for learner"),
        "lease list on a learner: {refused}"
    );

    // promotion is refused until the learner has caught up: retry
    let hex = format!("{lid:x}");
    wait_for("member promote", RECONFIG_TIMEOUT, || {
        c.ctl(0, &["member", "promote", &hex])
            .status
            .success()
            .then_some(())
    });
    let list = c.member_list(learner);
    assert_eq!(list.len(), 4, "{list:?}");
    assert!(
        list.iter().all(|m| !m.is_learner),
        "all voters after the promotion: {list:?}"
    );
    assert_eq!(
        get(&c, learner, "/c", false, T),
        Ok(Some("v1".into())),
        "a voter serves linearizable reads"
    );

    // remove a follower that is not the new member, through the new member
    let leader = c.leader();
    let gone = (0..3).find(|&i| i != leader).unwrap();
    let gid = format!("{:x}", c.member_id(gone).unwrap());
    // (refused while the newest voter has been connected for less than 5 s: retry)
    wait_for("member remove", RECONFIG_TIMEOUT, || {
        c.ctl(learner, &["member", "remove", &gid])
            .status
            .success()
            .then_some(())
    });
    let list = c.member_list(learner);
    let mut names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    let mut expect: Vec<&str> = (0..4).filter(|&i| i != gone).map(|i| c.name(i)).collect();
    expect.sort();
    assert_eq!(names, expect, "member list after removing {}", c.name(gone));
    assert!(
        c.forget_removed(gone, Duration::from_secs(10)),
        "a removed member shuts itself down\n{}",
        c.log(gone)
    );

    put_until(&c, learner, "/c", "v2", T);
    let live = c.live();
    for &i in &live {
        assert_eq!(
            get(&c, i, "/c", false, T),
            Ok(Some("v2".into())),
            "via {}",
            c.name(i)
        );
    }
    c.wait_leader_agreed(Duration::from_secs(10));
}

/// Opens a watch on `/d` at `endpoint` (with gRPC metadata `hasleader=true` when
/// `require_leader`) and waits for its creation.
async fn open_watch(endpoint: &str, require_leader: bool) -> tonic::Streaming<cairn_proto::etcdserverpb::WatchResponse> {
    use cairn_proto::etcdserverpb::watch_client::WatchClient;
    use cairn_proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
    let mut client = WatchClient::connect(endpoint.to_owned()).await.expect("connect");
    let create = WatchCreateRequest { key: b"/d".to_vec(), ..Default::default() };
    let first = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
    let mut request = tonic::Request::new(futures::stream::iter([first]).chain(futures::stream::pending()));
    if require_leader {
        request.metadata_mut().insert("hasleader", "true".parse().expect("metadata"));
    }
    let mut inbound = client.watch(request).await.expect("watch").into_inner();
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(r))) if r.created => inbound,
        other => panic!("watch not created: {other:?}"),
    }
}

#[test]
fn an_isolated_leader_serves_no_stale_reads_and_converges_after_the_heal() {
    let _serial = one_at_a_time();
    let mut c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["put", "/d", "old"]);
    for i in 0..3 {
        assert_eq!(get(&c, i, "/d", false, T), Ok(Some("old".into())));
    }
    let old = c.leader();
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    // watches on the leader-to-be-isolated: one requires a leader (as kube-apiserver's do)
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut require_leader = rt.block_on(open_watch(&c.endpoint(old), true));
    let mut plain = rt.block_on(open_watch(&c.endpoint(old), false));
    let cut_before = c.link_stats().cut;
    c.isolate(old, CutMode::Blackhole);
    let took = put_until(&c, majority[0], "/d", "new", Duration::from_secs(8));
    eprintln!("majority write took {took:?} after the leader was isolated");
    assert!(
        c.link_stats().cut > cut_before,
        "the cut closed the leader's connections"
    );
    assert_eq!(get(&c, majority[1], "/d", false, T), Ok(Some("new".into())));

    // the isolated member must not answer a linearizable read (it cannot know "new")
    match get(&c, old, "/d", false, Duration::from_secs(3)) {
        Err(e) => {
            let last = e.lines().last().unwrap_or_default();
            eprintln!("isolated linearizable read failed as it must: {last}")
        }
        Ok(v) if v.as_deref() == Some("old") => {
            panic!("STALE linearizable read from the isolated {}", c.name(old))
        }
        Ok(v) => panic!(
            "the isolated {} answered a linearizable read with {v:?}: the partition leaks",
            c.name(old)
        ),
    }
    // the require-leader watch ends with etcd's error once the member lost its leader
    // (etcd: after 3 election timeouts without one); the other watch stays open
    let ended = rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), require_leader.message()).await });
    match ended {
        Ok(Err(status)) => assert_eq!(status.message(), "etcdserver: no leader", "{status:?}"),
        other => panic!("the require-leader watch on the isolated member did not end with no leader: {other:?}"),
    }
    let still_open = rt.block_on(async { tokio::time::timeout(Duration::from_millis(300), plain.message()).await });
    assert!(still_open.is_err(), "a watch without require-leader stays open: {still_open:?}");
    // ...while its local state shows the partition held
    assert_eq!(
        get(&c, old, "/d", true, T),
        Ok(Some("old".into())),
        "serializable read on the isolated member"
    );
    assert_eq!(
        c.link_stats().unidentified,
        0,
        "every peer connection was attributed to a member"
    );

    c.heal();
    wait_value(&c, old, "/d", "new", Duration::from_secs(15));
    let leader = c.wait_leader_agreed(Duration::from_secs(15));
    assert_eq!(get(&c, old, "/d", false, T), Ok(Some("new".into())));
    eprintln!(
        "after the heal {} leads (the isolated one was {})",
        c.name(leader),
        c.name(old)
    );
}

#[test]
fn a_member_that_missed_compacted_log_catches_up_by_snapshot() {
    let _serial = one_at_a_time();
    let opts = MemberOptions { extra_args: vec!["--snapshot-count=100".into()], ..Default::default() };
    let options: Vec<(usize, MemberOptions)> = (0..3).map(|i| (i, opts.clone())).collect();
    let mut c = ProcCluster::start_with(target_kind(), 3, &options);
    let leader = c.leader();
    let down = (leader + 1) % 3;
    let up = (leader + 2) % 3;
    c.kill9(down);
    // 400 writes: the log is compacted behind the store every 100 applied entries (cairn
    // keeps min(--snapshot-count, 5000) entries behind for followers; etcd keeps 5000, so
    // it catches up from the log here)
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let endpoints = vec![c.endpoint(leader), c.endpoint(up)];
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, None).await.expect("connect");
        for n in 0..400 {
            client.put(format!("/snap/{n:03}"), format!("v{n}"), None).await.expect("put");
        }
    });
    c.restart(down);
    wait_value(&c, down, "/snap/399", "v399", Duration::from_secs(20));
    for n in [0, 123, 250, 398] {
        assert_eq!(get(&c, down, &format!("/snap/{n:03}"), true, T), Ok(Some(format!("v{n}"))), "key {n}");
    }
    if c.kind() == common::Kind::Cairn {
        assert!(
            c.log(down).contains("installing a snapshot"),
            "{} caught up without a snapshot although the log was compacted:\n{}",
            c.name(down),
            c.log(down)
        );
    }
    // it takes writes and linearizable reads again
    put_until(&c, down, "/snap/after", "yes", T);
    assert_eq!(get(&c, up, "/snap/after", false, T), Ok(Some("yes".into())));
}

/// Logs in through `endpoint`; the token.
async fn login(endpoint: &str, name: &str, password: &str) -> String {
    use cairn_proto::etcdserverpb::auth_client::AuthClient;
    use cairn_proto::etcdserverpb::AuthenticateRequest;
    let mut client = AuthClient::connect(endpoint.to_owned()).await.expect("connect");
    let req = AuthenticateRequest { name: name.into(), password: password.into() };
    client.authenticate(req).await.expect("authenticate").into_inner().token
}

/// A linearizable get of `key` through `endpoint` with `token`: the number of keys.
async fn get_with_token(endpoint: &str, token: &str, key: &str) -> Result<usize, tonic::Status> {
    use cairn_proto::etcdserverpb::kv_client::KvClient;
    use cairn_proto::etcdserverpb::RangeRequest;
    let mut client = KvClient::connect(endpoint.to_owned()).await.expect("connect");
    let mut req = tonic::Request::new(RangeRequest { key: key.into(), ..Default::default() });
    req.metadata_mut().insert("token", token.parse().expect("ascii token"));
    Ok(client.range(req).await?.into_inner().kvs.len())
}

#[test]
fn auth_enabled_through_one_member_holds_on_every_member_and_tokens_work_everywhere() {
    let _serial = one_at_a_time();
    let c = ProcCluster::start(target_kind(), 3);
    c.ctl_ok(0, &["user", "add", "root:rootpw"]);
    c.ctl_ok(0, &["user", "grant-role", "root", "root"]);
    c.ctl_ok(1, &["user", "add", "alice:alicepw"]);
    c.ctl_ok(1, &["role", "add", "tenant"]);
    c.ctl_ok(2, &["role", "grant-permission", "tenant", "readwrite", "a/", "--prefix=true"]);
    c.ctl_ok(2, &["user", "grant-role", "alice", "tenant"]);
    c.ctl_ok(0, &["auth", "enable"]);
    for i in 0..3 {
        // every member enforces it, whichever member took the change
        let out = c.ctl(i, &["get", "a/x"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("etcdserver: user name is empty"), "{}: {err}", c.name(i));
        c.ctl_ok(i, &["--user=alice:alicepw", "put", &format!("a/{i}"), "v"]);
        let out = c.ctl(i, &["--user=alice:alicepw", "put", "b/x", "v"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("etcdserver: permission denied"), "{}: {err}", c.name(i));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // a token issued by one member is good on the others (logins are applied everywhere)
        let token = login(&c.endpoint(0), "alice", "alicepw").await;
        for i in 0..3 {
            assert_eq!(get_with_token(&c.endpoint(i), &token, "a/0").await.expect("token on another member"), 1, "{}", c.name(i));
        }
        // and a revoked permission is refused on every member at once
        c.ctl_ok(2, &["--user=root:rootpw", "role", "revoke-permission", "tenant", "a/", "--prefix=true"]);
        for i in 0..3 {
            let fresh = login(&c.endpoint(i), "alice", "alicepw").await;
            let err = get_with_token(&c.endpoint(i), &fresh, "a/0").await.expect_err("permission revoked");
            assert_eq!(err.message(), "etcdserver: permission denied", "{}", c.name(i));
        }
    });
}
