//! Leases end to end: the etcdctl lease commands (their text compared with real etcd's
//! running side by side), the Lease service through the `etcd-client` crate, expiry
//! deleting keys (with watch events), and leases surviving a restart.
//!
//! `etcdctl_lease_commands_match_etcd` and `etcdctl_keep_alive_stops_when_revoked` always
//! run both servers. The others run against cairn; `CAIRN_TEST_TARGET=etcd` runs the same
//! assertions against real etcd. Waits are deadlines on polled state, never fixed sleeps.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{b64decode, target_kind, Kind, Server};
use etcd_client::{Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
use serde_json::Value;
use tonic::Code;

/// How long expiry may take after the TTL before a test gives up.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// etcdctl transcripts, normalised so two servers compare equal
// ---------------------------------------------------------------------------------------

/// Runs etcdctl commands against one server and records a normalised transcript: lease IDs
/// are replaced by the names the test gave them (`L1`, `L2`, ...), remaining TTLs (which
/// depend on timing) are checked against the granted TTL and replaced by `~`, and of a
/// failed command only the exit code and etcdctl's `Error:` lines are kept (etcd's client
/// also logs timestamped retry warnings to stderr).
struct Session<'a> {
    server: &'a Server,
    /// Lease name → ID.
    ids: Vec<(String, i64)>,
    transcript: Vec<String>,
}

impl<'a> Session<'a> {
    fn new(server: &'a Server) -> Self {
        Session { server, ids: Vec::new(), transcript: Vec::new() }
    }

    fn id(&self, name: &str) -> i64 {
        self.ids.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no lease named {name}")).1
    }

    /// An argument with lease names replaced by their IDs in hex (as etcdctl takes them).
    fn arg(&self, a: &str) -> String {
        match a.split_once('=') {
            Some((flag, name)) if self.ids.iter().any(|(n, _)| n == name) => {
                format!("{flag}={:x}", self.id(name))
            }
            _ if self.ids.iter().any(|(n, _)| n == a) => format!("{:x}", self.id(a)),
            _ => a.to_string(),
        }
    }

    fn exec(&self, args: &[&str]) -> Output {
        let real: Vec<String> = args.iter().map(|a| self.arg(a)).collect();
        let real: Vec<&str> = real.iter().map(String::as_str).collect();
        self.server.etcdctl(&real)
    }

    /// Runs `etcdctl ARGS` and records `$ ARGS` and its normalised output.
    fn run(&mut self, args: &[&str]) -> Output {
        let out = self.exec(args);
        let body = if out.status.success() {
            let text = self.normalise(&String::from_utf8_lossy(&out.stdout));
            if args.starts_with(&["lease", "list"]) {
                sort_after_first_line(&text)
            } else {
                text
            }
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let errors: String = stderr.lines().filter(|l| l.starts_with("Error:")).map(|l| format!("{l}\n")).collect();
            format!("exit {:?}\n{}", out.status.code(), self.normalise(&errors))
        };
        self.transcript.push(format!("$ etcdctl {}\n{body}", args.join(" ")));
        out
    }

    /// `lease grant TTL`, naming the new lease `name`.
    fn grant(&mut self, name: &str, ttl: &str) {
        let out = self.exec(&["lease", "grant", ttl]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "lease grant {ttl}: {}", String::from_utf8_lossy(&out.stderr));
        let hex = stdout.split_whitespace().nth(1).unwrap_or_else(|| panic!("grant printed {stdout:?}"));
        let id = u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("lease ID {hex:?}: {e}")) as i64;
        self.ids.push((name.to_string(), id));
        self.transcript.push(format!("$ etcdctl lease grant {ttl}\n{}", self.normalise(&stdout)));
    }

    /// Records `lease timetolive --keys NAME -w json`, reduced to what must match.
    fn time_to_live_json(&mut self, name: &str) {
        let out = self.exec(&["lease", "timetolive", "--keys", name, "-w", "json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let j: Value = serde_json::from_slice(&out.stdout).expect("timetolive JSON");
        for k in ["cluster_id", "member_id", "revision", "raft_term"] {
            assert!(j[k].is_u64() || j[k].is_i64(), "timetolive JSON has no {k}: {j}");
        }
        let granted = j["granted-ttl"].as_i64().expect("granted-ttl");
        let ttl = j["ttl"].as_i64().expect("ttl");
        assert!((granted - 3..=granted).contains(&ttl), "ttl {ttl} of granted {granted}");
        let mut keys: Vec<String> = j["keys"]
            .as_array()
            .map(|a| a.iter().map(|k| String::from_utf8(b64decode(k.as_str().unwrap())).unwrap()).collect())
            .unwrap_or_default();
        // etcd lists a lease's keys in Go map order (random): compare them as a set
        keys.sort();
        let id = j["id"].as_i64().expect("id");
        let named = self.ids.iter().find(|(_, i)| *i == id).map_or("?", |(n, _)| n.as_str());
        self.transcript.push(format!(
            "$ etcdctl lease timetolive --keys {name} -w json\nid={named} ttl=~ granted-ttl={granted} keys={keys:?}\n"
        ));
    }

    /// Records which lease `get KEY -w json` reports for the key.
    fn key_lease_json(&mut self, key: &str) {
        let out = self.exec(&["get", key, "-w", "json"]);
        assert!(out.status.success());
        let j: Value = serde_json::from_slice(&out.stdout).expect("get JSON");
        let lease = j["kvs"][0]["lease"].as_i64().unwrap_or(0);
        let named = self.ids.iter().find(|(_, i)| *i == lease).map_or(lease.to_string(), |(n, _)| n.clone());
        self.transcript.push(format!("$ etcdctl get {key} -w json\nlease={named}\n"));
    }

    /// Replaces known lease IDs (16 hex digits) by their names, and remaining TTLs by `~`.
    fn normalise(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            let named = (word.len() == 16)
                .then(|| u64::from_str_radix(word, 16).ok())
                .flatten()
                .and_then(|id| self.ids.iter().find(|(_, i)| *i == id as i64));
            match named {
                Some((name, _)) => out.push_str(name),
                None => out.push_str(word),
            }
            word.clear();
        };
        for c in text.chars() {
            if c.is_ascii_alphanumeric() {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
        flush(&mut word, &mut out);
        out.lines().map(fuzz_remaining).map(|l| sort_attached_keys(&l) + "\n").collect()
    }
}

/// `... TTL(100s), remaining(99s)...` → `... TTL(100s), remaining(~s)...`, after checking the
/// remaining TTL is within 3 s of the granted one (both servers truncate to seconds).
fn fuzz_remaining(line: &str) -> String {
    let Some(start) = line.find("remaining(") else { return line.to_string() };
    let digits_at = start + "remaining(".len();
    let end = digits_at + line[digits_at..].find("s)").expect("remaining(Ns)");
    let remaining: i64 = line[digits_at..end].parse().expect("remaining seconds");
    let granted: i64 = line
        .split_once("TTL(")
        .and_then(|(_, r)| r.split_once("s)"))
        .and_then(|(n, _)| n.parse().ok())
        .expect("granted TTL next to remaining");
    assert!((granted - 3..=granted).contains(&remaining), "remaining {remaining} of TTL {granted}: {line}");
    format!("{}~{}", &line[..digits_at], &line[end..])
}

/// `attached keys([b a])` → `attached keys([a b])`: etcd lists a lease's keys in Go map
/// order (random), so they are compared as a set.
fn sort_attached_keys(line: &str) -> String {
    let Some(start) = line.find("attached keys([") else { return line.to_string() };
    let from = start + "attached keys([".len();
    let Some(len) = line[from..].find("])") else { return line.to_string() };
    let mut keys: Vec<&str> = line[from..from + len].split(' ').filter(|k| !k.is_empty()).collect();
    keys.sort_unstable();
    format!("{}{}{}", &line[..from], keys.join(" "), &line[from + len..])
}

fn sort_after_first_line(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.len() > 1 {
        lines[1..].sort_unstable();
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The same etcdctl session against `s`: grant, attach, inspect, keep alive, list, revoke,
/// and every error along the way.
fn lease_session(s: &Server) -> Vec<String> {
    let mut t = Session::new(s);
    t.grant("L1", "100");
    t.grant("L2", "200");
    t.run(&["put", "--lease=L1", "a", "1"]);
    t.run(&["put", "--lease=L1", "b", "2"]);
    t.run(&["put", "c", "3"]);
    t.key_lease_json("a");
    t.key_lease_json("c");
    t.run(&["lease", "timetolive", "L1"]);
    t.run(&["lease", "timetolive", "--keys", "L1"]);
    t.run(&["lease", "timetolive", "--keys", "L2"]);
    t.time_to_live_json("L1");
    t.run(&["lease", "keep-alive", "--once", "L1"]);
    t.run(&["lease", "list"]);
    t.run(&["lease", "revoke", "L1"]);
    t.run(&["get", "--prefix", ""]);
    t.run(&["lease", "timetolive", "L1"]);
    t.run(&["lease", "timetolive", "--keys", "L1"]);
    t.run(&["lease", "revoke", "L1"]);
    t.run(&["put", "--lease=L1", "d", "4"]);
    t.run(&["lease", "keep-alive", "--once", "L1"]);
    t.run(&["lease", "timetolive", "4d2"]); // never existed
    t.run(&["lease", "grant", "9000000001"]);
    t.run(&["lease", "list"]);
    // put moves a key from no lease to L2, then off it again
    t.run(&["put", "--lease=L2", "c", "5"]);
    t.run(&["lease", "timetolive", "--keys", "L2"]);
    t.run(&["put", "c", "6"]);
    t.run(&["lease", "timetolive", "--keys", "L2"]);
    t.run(&["lease", "revoke", "L2"]);
    t.run(&["get", "c"]);
    t.run(&["lease", "list"]);
    // below the minimum: granted with etcd's minimum TTL (2 s); nothing else looks at it
    t.grant("L3", "1");
    t.transcript
}

#[test]
fn etcdctl_lease_commands_match_etcd() {
    let cairn = Server::start(Kind::Cairn);
    let etcd = Server::start(Kind::Etcd);
    let ours = lease_session(&cairn);
    let theirs = lease_session(&etcd);
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o, t, "cairn (left) and etcd (right) differ");
    }
    assert_eq!(ours.len(), theirs.len());

    // What etcd prints, spelled out (so a regression in both would still be caught here).
    let all = ours.join("");
    for want in [
        "$ etcdctl lease grant 100\nlease L1 granted with TTL(100s)\n",
        "$ etcdctl put --lease=L1 a 1\nOK\n",
        "$ etcdctl get a -w json\nlease=L1",
        "$ etcdctl get c -w json\nlease=0",
        "$ etcdctl lease timetolive L1\nlease L1 granted with TTL(100s), remaining(~s)\n",
        "$ etcdctl lease timetolive --keys L1\nlease L1 granted with TTL(100s), remaining(~s), attached keys([a b])\n",
        "$ etcdctl lease timetolive --keys L2\nlease L2 granted with TTL(200s), remaining(~s), attached keys([])\n",
        "id=L1 ttl=~ granted-ttl=100 keys=[\"a\", \"b\"]",
        "$ etcdctl lease keep-alive --once L1\nlease L1 keepalived with TTL(100)\n",
        "$ etcdctl lease list\nfound 2 leases\nL1\nL2\n",
        "$ etcdctl lease revoke L1\nlease L1 revoked\n",
        "$ etcdctl get --prefix \nc\n3\n",
        "$ etcdctl lease timetolive L1\nlease L1 already expired\n",
        "$ etcdctl lease revoke L1\nexit Some(1)\nError: failed to revoke lease (etcdserver: requested lease not found)\n",
        "$ etcdctl put --lease=L1 d 4\nexit Some(1)\nError: etcdserver: requested lease not found\n",
        "$ etcdctl lease keep-alive --once L1\nexit Some(",
        "$ etcdctl lease timetolive 4d2\nlease 00000000000004d2 already expired\n",
        "$ etcdctl lease grant 9000000001\nexit Some(1)\nError: failed to grant lease (etcdserver: too large lease TTL)\n",
        "$ etcdctl lease list\nfound 1 leases\nL2\n",
        "attached keys([c])\n",
        "$ etcdctl lease list\nfound 0 leases\n",
        "$ etcdctl lease grant 1\nlease L3 granted with TTL(2s)\n",
    ] {
        assert!(all.contains(want), "missing {want:?} in cairn's transcript:\n{all}");
    }
}

/// `etcdctl lease keep-alive ID` prints each renewal and stops once the lease is revoked.
#[test]
fn etcdctl_keep_alive_stops_when_revoked() {
    let cairn = Server::start(Kind::Cairn);
    let etcd = Server::start(Kind::Etcd);
    let ours = keep_alive_until_revoked(&cairn);
    let theirs = keep_alive_until_revoked(&etcd);
    assert_eq!(ours, theirs, "cairn (left) and etcd (right) differ");
    assert_eq!(ours.first().map(String::as_str), Some("lease L keepalived with TTL(3)"));
    assert_eq!(ours.last().map(String::as_str), Some("lease L expired or revoked."));
}

/// Runs `lease keep-alive` on a 3 s lease (renewed every second), waits for two renewals,
/// revokes the lease, and returns the distinct lines printed until the command exits.
fn keep_alive_until_revoked(s: &Server) -> Vec<String> {
    let mut t = Session::new(s);
    t.grant("L", "3");
    let hex = format!("{:x}", t.id("L"));
    let mut cmd = std::process::Command::new(common::etcdctl_bin());
    cmd.env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={}", s.endpoint()))
        .args(["lease", "keep-alive", &hex])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn etcdctl lease keep-alive");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let next = |what: &str| {
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|e| panic!("{what}: {e}"));
        t.normalise(&line).trim_end().to_string()
    };
    for _ in 0..2 {
        lines.push(next("a renewal"));
    }
    let revoked = s.etcdctl(&["lease", "revoke", &hex]);
    assert!(revoked.status.success());
    loop {
        let line = next("the end of keep-alive");
        let last = line.contains("expired or revoked");
        lines.push(line);
        if last {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait etcdctl") {
            break st;
        }
        assert!(Instant::now() < deadline, "etcdctl lease keep-alive did not exit after the revoke");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "keep-alive exited with {status}");
    lines.dedup();
    lines
}

// ---------------------------------------------------------------------------------------
// The Rust client
// ---------------------------------------------------------------------------------------

async fn connect(s: &Server) -> Client {
    Client::connect([s.endpoint()], None).await.unwrap_or_else(|e| panic!("connect to {}: {e}", s.endpoint()))
}

#[track_caller]
fn assert_status<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>, code: Code, message: &str) {
    match r {
        Err(etcd_client::Error::GRpcStatus(st)) => {
            assert_eq!((st.code(), st.message()), (code, message), "unexpected status {st:?}")
        }
        other => panic!("expected {code:?} {message:?}, got {other:?}"),
    }
}

async fn key_count(c: &mut Client, prefix: &str) -> i64 {
    c.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count").count()
}

fn with_keys() -> Option<LeaseTimeToLiveOptions> {
    Some(LeaseTimeToLiveOptions::new().with_keys())
}

fn strings(keys: &[Vec<u8>]) -> Vec<String> {
    let mut v: Vec<String> = keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn rust_client_grant_keep_alive_time_to_live_list_revoke() {
    let s = Server::start(target_kind());
    let mut c = connect(&s).await;

    let granted = c.lease_grant(60, None).await.expect("grant");
    let id = granted.id();
    assert!(id > 0);
    assert_eq!(granted.ttl(), 60);
    let chosen = c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234))).await.expect("grant 0x1234");
    assert_eq!((chosen.id(), chosen.ttl()), (0x1234, 60));
    assert_status(
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(0x1234))).await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    assert_status(c.lease_grant(9_000_000_001, None).await, Code::OutOfRange, "etcdserver: too large lease TTL");
    assert_eq!(c.lease_grant(1, None).await.expect("grant 1").ttl(), 2, "etcd's minimum TTL");

    c.put("rc/a", "1", Some(PutOptions::new().with_lease(id))).await.expect("put a");
    c.put("rc/b", "2", Some(PutOptions::new().with_lease(id))).await.expect("put b");
    c.put("rc/c", "3", None).await.expect("put c");
    let got = c.get("rc/a", None).await.expect("get a");
    assert_eq!(got.kvs()[0].lease(), id);
    assert_status(
        c.put("rc/x", "1", Some(PutOptions::new().with_lease(0x999))).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );

    // keep-alive: one response per request, on one stream
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.expect("keep_alive");
    for _ in 0..3 {
        keeper.keep_alive().await.expect("send keep-alive");
        let resp = stream.message().await.expect("keep-alive response").expect("stream open");
        assert_eq!((resp.id(), resp.ttl()), (id, 60));
    }

    let ttl = c.lease_time_to_live(id, with_keys()).await.expect("time_to_live");
    assert_eq!((ttl.id(), ttl.granted_ttl()), (id, 60));
    assert!((57..=60).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
    assert_eq!(strings(ttl.keys()), ["rc/a", "rc/b"]);
    let no_keys = c.lease_time_to_live(id, None).await.expect("time_to_live");
    assert!(no_keys.keys().is_empty());
    let unknown = c.lease_time_to_live(0x999, with_keys()).await.expect("time_to_live of a missing lease");
    assert_eq!((unknown.ttl(), unknown.granted_ttl()), (-1, 0));

    let mut listed: Vec<i64> = c.leases().await.expect("leases").leases().iter().map(|l| l.id()).collect();
    listed.sort();
    assert!(listed.contains(&id) && listed.contains(&0x1234), "{listed:?}");

    // revoke: both keys go in one revision
    let before = c.get("rc/", Some(GetOptions::new().with_prefix())).await.unwrap().header().unwrap().revision();
    let revoked = c.lease_revoke(id).await.expect("revoke");
    assert_eq!(revoked.header().unwrap().revision(), before + 1);
    let left = c.get("rc/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(left.kvs().len(), 1);
    assert_eq!(left.kvs()[0].key(), b"rc/c");
    assert_status(c.lease_revoke(id).await, Code::NotFound, "etcdserver: requested lease not found");
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    let listed: Vec<i64> = c.leases().await.expect("leases").leases().iter().map(|l| l.id()).collect();
    assert!(!listed.contains(&id));

    // the open keep-alive stream answers TTL 0 for the revoked lease
    keeper.keep_alive().await.expect("send keep-alive");
    let resp = stream.message().await.expect("keep-alive response").expect("stream open");
    assert_eq!((resp.id(), resp.ttl()), (id, 0));
}

#[tokio::test]
async fn expiry_deletes_the_keys_and_watchers_see_it() {
    let s = Server::start(target_kind());
    let mut c = connect(&s).await;
    let mut watch = c.watch("exp/", Some(WatchOptions::new().with_prefix())).await.expect("watch");
    let created = watch.message().await.expect("watch created").expect("watch open");
    assert!(created.created());

    let start = Instant::now();
    let lease = c.lease_grant(2, None).await.expect("grant");
    assert_eq!(lease.ttl(), 2);
    c.put("exp/a", "1", Some(PutOptions::new().with_lease(lease.id()))).await.expect("put");
    c.put("exp/b", "2", Some(PutOptions::new().with_lease(lease.id()))).await.expect("put");
    c.put("other", "3", Some(PutOptions::new().with_lease(lease.id()))).await.expect("put");
    assert_eq!(key_count(&mut c, "exp/").await, 2);

    let deadline = start + Duration::from_secs(2) + EXPIRY_DEADLINE;
    while key_count(&mut c, "exp/").await > 0 {
        assert!(Instant::now() < deadline, "keys of a 2 s lease still there after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = start.elapsed();
    assert!(gone_after >= Duration::from_millis(1950), "expired early, after {gone_after:?}");
    assert_eq!(key_count(&mut c, "other").await, 0);
    assert_eq!(c.lease_time_to_live(lease.id(), None).await.unwrap().ttl(), -1);
    assert!(!c.leases().await.unwrap().leases().iter().any(|l| l.id() == lease.id()));

    // two PUTs, then both DELETEs in one revision
    let mut events = Vec::new();
    while events.len() < 4 {
        let resp = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("watch events in time")
            .expect("watch response")
            .expect("watch open");
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            events.push((e.event_type(), String::from_utf8_lossy(kv.key()).into_owned(), kv.mod_revision()));
        }
    }
    let deletes: Vec<_> = events.iter().filter(|e| e.0 == EventType::Delete).collect();
    assert_eq!(deletes.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), ["exp/a", "exp/b"], "{events:?}");
    assert_eq!(deletes[0].2, deletes[1].2, "one revision for the whole lease: {events:?}");
}

// Multi-threaded so the first client's connection is really closed while the test thread
// blocks in `restart()` (an idle open connection would hold up the server's drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_leases_and_expiry_resumes() {
    let mut s = Server::start(target_kind());
    let (long, short) = {
        let mut c = connect(&s).await;
        let long = c.lease_grant(600, None).await.expect("grant").id();
        let short = c.lease_grant(5, None).await.expect("grant").id();
        for k in ["keep/a", "keep/b"] {
            c.put(k, "v", Some(PutOptions::new().with_lease(long))).await.expect("put");
        }
        c.put("short/a", "v", Some(PutOptions::new().with_lease(short))).await.expect("put");
        (long, short)
    };

    tokio::task::block_in_place(|| s.restart());
    let restarted = Instant::now();
    let mut c = connect(&s).await;

    let mut listed: Vec<i64> = c.leases().await.expect("leases").leases().iter().map(|l| l.id()).collect();
    listed.sort();
    let mut want = vec![long, short];
    want.sort();
    assert_eq!(listed, want, "both leases survive the restart");
    let ttl = c.lease_time_to_live(long, with_keys()).await.expect("time_to_live");
    assert_eq!(ttl.granted_ttl(), 600);
    assert!(ttl.ttl() > 500, "remaining {}", ttl.ttl());
    assert_eq!(strings(ttl.keys()), ["keep/a", "keep/b"]);
    let short_ttl = c.lease_time_to_live(short, with_keys()).await.expect("time_to_live");
    assert_eq!(short_ttl.granted_ttl(), 5);
    assert_eq!(strings(short_ttl.keys()), ["short/a"]);
    let kv = c.get("short/a", None).await.expect("get");
    assert_eq!(kv.kvs().first().map(|kv| kv.lease()), Some(short), "the attachment survives too");

    // expiry resumes: the short lease goes (its TTL restarts with the new leader term)
    let deadline = restarted + Duration::from_secs(6) + EXPIRY_DEADLINE;
    while key_count(&mut c, "short/").await > 0 {
        assert!(Instant::now() < deadline, "short lease never expired after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.lease_time_to_live(short, None).await.unwrap().ttl(), -1);
    assert_eq!(key_count(&mut c, "keep/").await, 2, "the long lease's keys stay");

    // the long lease still works after the restart
    let (mut keeper, mut stream) = c.lease_keep_alive(long).await.expect("keep_alive");
    keeper.keep_alive().await.expect("send");
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 600);
    c.lease_revoke(long).await.expect("revoke");
    assert_eq!(key_count(&mut c, "keep/").await, 0);
}
