//! Drives the server with the real `etcdctl` (API v3): KV commands, their
//! output formats (simple and `-w json`), compaction, status, member list
//! and error messages. Runs against cairn; `CAIRN_TEST_TARGET=etcd` runs the
//! same assertions against real etcd.

mod common;

use common::{b64str, target_kind, Kind, Server};
use serde_json::Value;

fn start() -> Server {
    Server::start(target_kind())
}

/// Lines of simple output, without the trailing empty line.
fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn put(s: &Server, k: &str, v: &str) {
    assert_eq!(s.ctl_ok(&["put", k, v]), "OK\n", "put {k}={v}");
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn i64_of(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Current revision, read with `get -w json` on a key that doesn't exist.
fn current_rev(s: &Server) -> i64 {
    let j = s.ctl_json(&["get", "\u{1}no-such-key"]);
    i64_of(&j["header"]["revision"])
}

#[test]
fn put_get_simple_output() {
    let s = start();
    put(&s, "foo", "bar");
    assert_eq!(s.ctl_ok(&["get", "foo"]), "foo\nbar\n");
    assert_eq!(s.ctl_ok(&["get", "foo", "--print-value-only"]), "bar\n");
    assert_eq!(s.ctl_ok(&["get", "missing"]), "");
    // overwrite
    put(&s, "foo", "baz");
    assert_eq!(s.ctl_ok(&["get", "foo"]), "foo\nbaz\n");
    // empty value and a value with spaces
    put(&s, "empty", "");
    assert_eq!(s.ctl_ok(&["get", "empty"]), "empty\n\n");
    put(&s, "spaced", "hello world");
    assert_eq!(
        s.ctl_ok(&["get", "spaced", "--print-value-only"]),
        "hello world\n"
    );
    // put --prev-kv prints the previous pair after OK
    assert_eq!(
        s.ctl_ok(&["put", "foo", "qux", "--prev-kv"]),
        "OK\nfoo\nbaz\n"
    );
    assert_eq!(s.ctl_ok(&["put", "fresh", "x", "--prev-kv"]), "OK\n");
}

fn load_range_fixture(s: &Server) {
    // revisions 2..=8 in this order
    for (k, v) in [
        ("b", "2"),
        ("a", "7"),
        ("c", "1"),
        ("foo/2", "x"),
        ("foo/1", "y"),
        ("foo/3", "z"),
        ("fop", "w"),
    ] {
        put(s, k, v);
    }
    put(s, "a", "8"); // rev 9: a has version 2
}

#[test]
fn get_range_options() {
    let s = start();
    load_range_fixture(&s);
    let keys = |args: &[&str]| -> Vec<String> {
        let mut a = args.to_vec();
        a.push("--keys-only");
        s.ctl_ok(&a)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        keys(&["get", "--prefix", "foo/"]),
        ["foo/1", "foo/2", "foo/3"]
    );
    assert_eq!(
        keys(&["get", "--prefix", "fo"]),
        ["foo/1", "foo/2", "foo/3", "fop"]
    );
    // explicit range [a, c)
    assert_eq!(keys(&["get", "a", "c"]), ["a", "b"]);
    assert_eq!(
        keys(&["get", "--from-key", "c"]),
        ["c", "foo/1", "foo/2", "foo/3", "fop"]
    );
    assert_eq!(keys(&["get", "--from-key", ""]).len(), 7);
    assert_eq!(keys(&["get", "--prefix", ""]).len(), 7);
    assert_eq!(keys(&["get", "--prefix", "", "--limit", "2"]), ["a", "b"]);
    assert_eq!(
        keys(&["get", "--from-key", "b", "--limit=3"]),
        ["b", "c", "foo/1"]
    );

    // --keys-only prints the key and an empty line instead of the value
    assert_eq!(s.ctl_ok(&["get", "a", "--keys-only"]), "a\n\n");
    // full simple output of a range: key, value, key, value...
    assert_eq!(lines(&s.ctl_ok(&["get", "a", "c"])), ["a", "8", "b", "2"]);
    assert_eq!(
        lines(&s.ctl_ok(&["get", "--prefix", "foo/", "--print-value-only"])),
        ["y", "x", "z"]
    );

    // sorting
    let all = |target: &str, order: &str| {
        keys(&["get", "--prefix", "", "--sort-by", target, "--order", order])
    };
    assert_eq!(
        all("KEY", "DESCEND"),
        ["fop", "foo/3", "foo/2", "foo/1", "c", "b", "a"]
    );
    assert_eq!(
        all("KEY", "ASCEND"),
        ["a", "b", "c", "foo/1", "foo/2", "foo/3", "fop"]
    );
    assert_eq!(
        all("CREATE", "ASCEND"),
        ["b", "a", "c", "foo/2", "foo/1", "foo/3", "fop"]
    );
    assert_eq!(
        all("CREATE", "DESCEND"),
        ["fop", "foo/3", "foo/1", "foo/2", "c", "a", "b"]
    );
    assert_eq!(
        all("MODIFY", "DESCEND"),
        ["a", "fop", "foo/3", "foo/1", "foo/2", "c", "b"]
    );
    assert_eq!(
        all("VALUE", "ASCEND"),
        ["c", "b", "a", "fop", "foo/2", "foo/1", "foo/3"]
    );
    assert_eq!(all("VERSION", "DESCEND")[0], "a");
    // --sort-by alone sorts ascending
    assert_eq!(
        keys(&["get", "--prefix", "", "--sort-by", "MODIFY"]),
        ["b", "c", "foo/2", "foo/1", "foo/3", "fop", "a"]
    );
    // sort then limit: the limit applies to the sorted result
    assert_eq!(
        keys(&[
            "get",
            "--prefix",
            "",
            "--sort-by",
            "KEY",
            "--order",
            "DESCEND",
            "--limit",
            "2"
        ]),
        ["fop", "foo/3"]
    );

    // --count-only (etcdctl >= 3.5); older etcdctl: check the count via JSON
    let help = s.etcdctl(&["get", "--help"]);
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    if help.contains("--count-only") {
        let j = s.ctl_json(&["get", "--prefix", "foo/", "--count-only"]);
        assert_eq!(i64_of(&j["count"]), 3);
        assert!(
            j.get("kvs")
                .is_none_or(|k| k.as_array().is_some_and(|a| a.is_empty())),
            "{j}"
        );
    }
    let j = s.ctl_json(&["get", "--prefix", "", "--limit", "2"]);
    assert_eq!(i64_of(&j["count"]), 7);
    assert_eq!(j["more"], Value::Bool(true));
    assert_eq!(j["kvs"].as_array().unwrap().len(), 2);
    let j = s.ctl_json(&["get", "--prefix", "", "--limit", "7"]);
    assert!(
        j.get("more").is_none_or(|m| m == &Value::Bool(false)),
        "{j}"
    );

    // --rev: the state as of an older revision
    assert_eq!(s.ctl_ok(&["get", "a", "--rev", "3"]), "a\n7\n");
    assert_eq!(s.ctl_ok(&["get", "a", "--rev=9"]), "a\n8\n");
    assert_eq!(s.ctl_ok(&["get", "c", "--rev=3"]), "");
    assert_eq!(
        keys(&["get", "--prefix", "foo/", "--rev=6"]),
        ["foo/1", "foo/2"]
    );
}

#[test]
fn json_output_and_revisions() {
    let s = start();
    let j = s.ctl_json(&["put", "k1", "v1"]);
    assert_eq!(i64_of(&j["header"]["revision"]), 2, "{j}");
    let j = s.ctl_json(&["put", "k1", "v2"]);
    assert_eq!(i64_of(&j["header"]["revision"]), 3, "{j}");
    let j = s.ctl_json(&["put", "k2", "w"]);
    assert_eq!(i64_of(&j["header"]["revision"]), 4, "{j}");

    let j = s.ctl_json(&["get", "k1"]);
    let h = &j["header"];
    assert_eq!(i64_of(&h["revision"]), 4);
    assert!(u64_of(&h["cluster_id"]) != 0, "{j}");
    assert!(u64_of(&h["member_id"]) != 0, "{j}");
    assert!(u64_of(&h["raft_term"]) >= 1, "{j}");
    assert_eq!(i64_of(&j["count"]), 1);
    let kvs = j["kvs"].as_array().expect("kvs");
    assert_eq!(kvs.len(), 1);
    let kv = &kvs[0];
    assert_eq!(b64str(&kv["key"]), "k1");
    assert_eq!(b64str(&kv["value"]), "v2");
    assert_eq!(i64_of(&kv["create_revision"]), 2);
    assert_eq!(i64_of(&kv["mod_revision"]), 3);
    assert_eq!(i64_of(&kv["version"]), 2);
    assert!(kv.get("lease").is_none_or(|l| l == 0), "{kv}");

    // reads don't move the revision
    assert_eq!(current_rev(&s), 4);
    assert_eq!(current_rev(&s), 4);

    // range JSON with two keys
    let j = s.ctl_json(&["get", "--prefix", "k"]);
    let kvs = j["kvs"].as_array().unwrap();
    let got: Vec<(String, String, i64)> = kvs
        .iter()
        .map(|kv| {
            (
                b64str(&kv["key"]),
                b64str(&kv["value"]),
                i64_of(&kv["mod_revision"]),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("k1".into(), "v2".into(), 3), ("k2".into(), "w".into(), 4)]
    );

    // delete then re-create: version restarts at 1, new create_revision
    let j = s.ctl_json(&["del", "k1"]);
    assert_eq!(i64_of(&j["header"]["revision"]), 5);
    assert_eq!(i64_of(&j["deleted"]), 1);
    s.ctl_ok(&["put", "k1", "again"]);
    let j = s.ctl_json(&["get", "k1"]);
    let kv = &j["kvs"][0];
    assert_eq!(i64_of(&kv["create_revision"]), 6);
    assert_eq!(i64_of(&kv["mod_revision"]), 6);
    assert_eq!(i64_of(&kv["version"]), 1);
    // old revision still readable
    let j = s.ctl_json(&["get", "k1", "--rev=3"]);
    assert_eq!(b64str(&j["kvs"][0]["value"]), "v2");
    assert_eq!(i64_of(&j["header"]["revision"]), 6);

    // fields output
    let f = s.ctl_ok(&["get", "k2", "-w", "fields"]);
    for want in [
        "\"Key\" : \"k2\"",
        "\"Value\" : \"w\"",
        "\"Version\" : 1",
        "\"ModRevision\" : 4",
        "\"Count\" : 1",
    ] {
        assert!(f.contains(want), "missing {want} in\n{f}");
    }
}

#[test]
fn delete_commands() {
    let s = start();
    for k in ["a", "b", "c", "p/1", "p/2", "p/3", "q"] {
        put(&s, k, &format!("v-{k}"));
    }
    assert_eq!(s.ctl_ok(&["del", "a"]), "1\n");
    assert_eq!(s.ctl_ok(&["del", "a"]), "0\n");
    assert_eq!(s.ctl_ok(&["get", "a"]), "");
    assert_eq!(s.ctl_ok(&["del", "b", "--prev-kv"]), "1\nb\nv-b\n");
    assert_eq!(
        lines(&s.ctl_ok(&["del", "--prefix", "p/", "--prev-kv"])),
        ["3", "p/1", "v-p/1", "p/2", "v-p/2", "p/3", "v-p/3"]
    );
    assert_eq!(s.ctl_ok(&["get", "--prefix", "p/"]), "");
    // a range delete [c, q) removes only c
    assert_eq!(s.ctl_ok(&["del", "c", "q"]), "1\n");
    assert_eq!(s.ctl_ok(&["get", "--prefix", "", "--keys-only"]), "q\n\n");
    assert_eq!(s.ctl_ok(&["del", "--from-key", ""]), "1\n");
    assert_eq!(s.ctl_ok(&["get", "--prefix", ""]), "");
    // deleting nothing does not create a revision
    let before = current_rev(&s);
    assert_eq!(s.ctl_ok(&["del", "nothing"]), "0\n");
    assert_eq!(current_rev(&s), before);
}

#[test]
fn txn_via_stdin() {
    let s = start();
    put(&s, "k", "v"); // rev 2
    put(&s, "other", "o"); // rev 3

    // interactive mode: prompts on stdout, then the result
    let out = s.ctl_ok_stdin(
        &["txn", "--interactive"],
        "mod(\"k\") = \"2\"\nvalue(\"other\") = \"o\"\n\nput k v2\nget other\n\nput k failed\n\n",
    );
    assert!(out.contains("compares:"), "{out}");
    let tail = out
        .split("SUCCESS")
        .nth(1)
        .unwrap_or_else(|| panic!("no SUCCESS in\n{out}"));
    assert_eq!(lines(tail.trim()), ["OK", "", "other", "o"]);
    assert_eq!(s.ctl_ok(&["get", "k", "--print-value-only"]), "v2\n");

    // non-interactive from stdin; mod("missing") = "0" holds for a missing key
    let out = s.ctl_ok_stdin(
        &["txn"],
        "mod(\"missing\") = \"0\"\n\nput created yes\n\nput created no\n\n",
    );
    assert_eq!(lines(out.trim()), ["SUCCESS", "", "OK"]);
    assert_eq!(s.ctl_ok(&["get", "created", "--print-value-only"]), "yes\n");

    // failing compare takes the else branch
    let out = s.ctl_ok_stdin(
        &["txn"],
        "mod(\"k\") = \"0\"\n\nput k then\n\nput k else\nget k\n\n",
    );
    assert_eq!(lines(out.trim()), ["FAILURE", "", "OK", "", "k", "else"]);

    // version / create / value comparisons with < and >; delete inside a txn
    let out = s.ctl_ok_stdin(
        &["txn"],
        "ver(\"k\") > \"1\"\ncreate(\"k\") < \"3\"\nval(\"k\") = \"else\"\n\ndel other\n\n\n",
    );
    assert_eq!(lines(out.trim()), ["SUCCESS", "", "1"]);
    assert_eq!(s.ctl_ok(&["get", "other"]), "");

    // JSON output of a txn
    let before = current_rev(&s);
    let out = s.ctl_ok_stdin(
        &["txn", "-w", "json"],
        "val(\"k\") != \"x\"\n\nput a 1\nput b 2\nget a\n\n\n",
    );
    let j: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["succeeded"], Value::Bool(true), "{j}");
    // all writes of one txn share one revision
    assert_eq!(i64_of(&j["header"]["revision"]), before + 1, "{j}");
    let rs = j["responses"].as_array().unwrap();
    assert_eq!(rs.len(), 3);
    let range = &rs[2]["Response"]["ResponseRange"];
    assert_eq!(b64str(&range["kvs"][0]["key"]), "a");
    assert_eq!(i64_of(&range["kvs"][0]["mod_revision"]), before + 1);

    // a txn with only reads keeps the revision
    let out = s.ctl_ok_stdin(&["txn", "-w", "json"], "\nget a\n\n\n");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(i64_of(&j["header"]["revision"]), before + 1);
}

#[test]
fn compaction() {
    let s = start();
    for i in 0..5 {
        put(&s, "k", &format!("v{i}")); // revs 2..=6
    }
    assert_eq!(
        s.ctl_ok(&["get", "k", "--rev=3", "--print-value-only"]),
        "v1\n"
    );
    assert_eq!(s.ctl_ok(&["compact", "4"]), "compacted revision 4\n");
    let err = s.ctl_err(&["get", "k", "--rev=3"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    // the compacted revision itself is still readable
    assert_eq!(
        s.ctl_ok(&["get", "k", "--rev=4", "--print-value-only"]),
        "v2\n"
    );
    assert_eq!(s.ctl_ok(&["get", "k", "--print-value-only"]), "v4\n");
    // compacting at or below the compacted revision fails the same way
    let err = s.ctl_err(&["compact", "4"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    let err = s.ctl_err(&["compact", "100"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
    assert_eq!(
        s.ctl_ok(&["compact", "6", "--physical"]),
        "compacted revision 6\n"
    );
    let err = s.ctl_err(&["get", "k", "--rev=5"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    // compaction does not change the current revision
    assert_eq!(current_rev(&s), 6);
}

#[test]
fn endpoint_status_and_member_list() {
    let s = start();
    put(&s, "x", "y");
    let j = s.ctl_json(&["endpoint", "status"]);
    let arr = j.as_array().expect("array");
    assert_eq!(arr.len(), 1, "{j}");
    assert_eq!(arr[0]["Endpoint"].as_str(), Some(s.endpoint().as_str()));
    let st = &arr[0]["Status"];
    let version = st["version"].as_str().expect("version");
    match s.kind() {
        Kind::Cairn => assert!(version.starts_with("3.5"), "version {version}"),
        Kind::Etcd => assert!(version.starts_with("3."), "version {version}"),
    }
    assert!(u64_of(&st["dbSize"]) > 0, "{st}");
    let member = u64_of(&st["header"]["member_id"]);
    assert!(member != 0);
    assert_eq!(u64_of(&st["leader"]), member, "{st}");
    assert_eq!(i64_of(&st["header"]["revision"]), 2);
    assert!(u64_of(&st["raftTerm"]) >= 1, "{st}");
    assert!(u64_of(&st["raftIndex"]) >= 1, "{st}");

    // table output mentions the endpoint
    let t = s.ctl_ok(&["endpoint", "status", "-w", "table"]);
    assert!(t.contains(&s.client_addr().to_string()), "{t}");
    s.ctl_ok(&["endpoint", "health"]);

    let j = s.ctl_json(&["member", "list"]);
    let members = j["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{j}");
    let m = &members[0];
    assert_eq!(u64_of(&m["ID"]), member);
    assert_eq!(u64_of(&j["header"]["member_id"]), member);
    assert_eq!(m["name"].as_str(), Some("default"));
    assert_eq!(m["clientURLs"], serde_json::json!([s.endpoint()]));
    let peers = m["peerURLs"].as_array().expect("peerURLs");
    assert_eq!(peers.len(), 1);
    assert!(peers[0].as_str().unwrap().starts_with("http://127."), "{m}");
    // simple output: "id, started, name, peers, clients, is_learner"
    let out = s.ctl_ok(&["member", "list"]);
    assert!(out.contains("started, default,"), "{out}");
    assert!(out.contains(&format!("{member:x}")), "{out}");
}

#[test]
fn error_messages() {
    let s = start();
    let err = s.ctl_err(&["put", "", "v"]);
    assert!(err.contains("etcdserver: key is not provided"), "{err}");
    let err = s.ctl_err(&["get", ""]);
    assert!(err.contains("etcdserver: key is not provided"), "{err}");
    put(&s, "a", "1");
    let err = s.ctl_err(&["get", "a", "--rev=1000"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
    let err = s.ctl_err(&["put", "a", "2", "--lease=1234"]);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );
    let err = s.ctl_err(&["put", "missing", "--ignore-value"]);
    assert!(err.contains("etcdserver: key not found"), "{err}");
    // failed requests don't change anything
    assert_eq!(s.ctl_ok(&["get", "a"]), "a\n1\n");
    assert_eq!(current_rev(&s), 2);
}
