//! Drives the server with the `etcd-client` crate: KV operations with their
//! options, transactions, compaction, exact gRPC errors, and persistence
//! across a restart. Runs against cairn; `CAIRN_TEST_TARGET=etcd` runs the
//! same assertions against real etcd.

mod common;

use std::fmt::Debug;

use common::{target_kind, Server};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse,
    KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tonic::Code;

async fn connect(s: &Server) -> Client {
    Client::connect([s.endpoint()], None)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", s.endpoint()))
}

fn rev_of(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("response header").revision()
}

/// (key, value) pairs of a range response, as strings.
fn pairs(r: &GetResponse) -> Vec<(String, String)> {
    r.kvs().iter().map(kv_pair).collect()
}

fn kv_pair(kv: &KeyValue) -> (String, String) {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
    )
}

fn keys(r: &GetResponse) -> Vec<String> {
    r.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Asserts that `r` failed with exactly this gRPC code and message.
#[track_caller]
fn assert_status<T: Debug>(r: Result<T, etcd_client::Error>, code: Code, message: &str) {
    match r {
        Err(etcd_client::Error::GRpcStatus(st)) => {
            assert_eq!(
                (st.code(), st.message()),
                (code, message),
                "unexpected gRPC status: {st:?}"
            );
        }
        other => panic!("expected gRPC error {code:?} {message:?}, got {other:?}"),
    }
}

async fn get(c: &mut Client, key: &str, opts: GetOptions) -> GetResponse {
    c.get(key, Some(opts))
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
}

async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    let r = c
        .put(key, value, None)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    rev_of(r.header())
}

#[tokio::test]
async fn put_get_delete() {
    let s = Server::start(target_kind());
    let mut c = connect(&s).await;

    // fresh store: revision 1
    let r = get(&mut c, "k", GetOptions::new()).await;
    assert_eq!(rev_of(r.header()), 1);
    assert_eq!(r.count(), 0);
    assert!(r.kvs().is_empty());
    let h = r.header().unwrap();
    assert_ne!(h.cluster_id(), 0);
    assert_ne!(h.member_id(), 0);
    assert!(h.raft_term() >= 1);

    let r = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(rev_of(r.header()), 2);
    assert!(r.prev_key().is_none());
    let r = c
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(rev_of(r.header()), 3);
    let prev = r.prev_key().expect("prev kv");
    assert_eq!(kv_pair(prev), ("k".into(), "v1".into()));
    assert_eq!(
        (prev.create_revision(), prev.mod_revision(), prev.version()),
        (2, 2, 1)
    );

    let r = get(&mut c, "k", GetOptions::new()).await;
    let kv = &r.kvs()[0];
    assert_eq!(kv_pair(kv), ("k".into(), "v2".into()));
    assert_eq!(
        (
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease()
        ),
        (2, 3, 2, 0)
    );
    assert_eq!(r.count(), 1);
    assert!(!r.more());

    // put without prev_kv doesn't return it
    let r = c.put("k", "v3", None).await.unwrap();
    assert!(r.prev_key().is_none());

    // ignore_value keeps the value but bumps version and mod revision
    let r = c
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(rev_of(r.header()), 5);
    assert_eq!(r.prev_key().unwrap().value(), b"v3");
    let kv = get(&mut c, "k", GetOptions::new()).await.kvs()[0].clone();
    assert_eq!(
        (kv.value(), kv.version(), kv.mod_revision()),
        (&b"v3"[..], 4, 5)
    );

    // binary keys and values
    let key = vec![0u8, 0xff, 0x10];
    let val = vec![0xfeu8, 0, 1];
    c.put(key.clone(), val.clone(), None).await.unwrap();
    let r = c.get(key.clone(), None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), &val[..]);

    // delete with prev_kv
    for k in ["d/1", "d/2", "d/3", "e"] {
        put(&mut c, k, k).await;
    }
    let r = c
        .delete("d/1", Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.deleted(), 1);
    assert_eq!(kv_pair(&r.prev_kvs()[0]), ("d/1".into(), "d/1".into()));
    let rev = rev_of(r.header());
    let r = c
        .delete(
            "d/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(r.deleted(), 2);
    assert_eq!(
        rev_of(r.header()),
        rev + 1,
        "a multi-key delete is one revision"
    );
    assert_eq!(
        r.prev_kvs().iter().map(kv_pair).collect::<Vec<_>>(),
        p(&[("d/2", "d/2"), ("d/3", "d/3")])
    );
    let r = c
        .delete("d/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.deleted(), 0);
    assert_eq!(
        rev_of(r.header()),
        rev + 1,
        "deleting nothing keeps the revision"
    );
    let r = c.delete("e", None).await.unwrap();
    assert_eq!(r.deleted(), 1);
    assert!(r.prev_kvs().is_empty());
    // range delete [a, z): removes "k", leaves the binary key
    let r = c
        .delete("a", Some(DeleteOptions::new().with_range("z")))
        .await
        .unwrap();
    assert_eq!(r.deleted(), 1); // "k"
    let r = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(r.count(), 1);
    assert_eq!(r.kvs()[0].key(), &key[..]);
}

#[tokio::test]
async fn get_options() {
    let s = Server::start(target_kind());
    let mut c = connect(&s).await;
    // revisions: b=2 a=3 c=4 foo/2=5 foo/1=6 foo/3=7 fop=8, a again=9
    for (k, v) in [
        ("b", "2"),
        ("a", "7"),
        ("c", "1"),
        ("foo/2", "x"),
        ("foo/1", "y"),
        ("foo/3", "z"),
        ("fop", "w"),
    ] {
        put(&mut c, k, v).await;
    }
    assert_eq!(put(&mut c, "a", "8").await, 9);

    let r = get(&mut c, "foo/", GetOptions::new().with_prefix()).await;
    assert_eq!(
        pairs(&r),
        p(&[("foo/1", "y"), ("foo/2", "x"), ("foo/3", "z")])
    );
    assert_eq!((r.count(), r.more()), (3, false));

    let r = get(&mut c, "a", GetOptions::new().with_range("c")).await;
    assert_eq!(keys(&r), ["a", "b"]);
    let r = get(&mut c, "c", GetOptions::new().with_from_key()).await;
    assert_eq!(keys(&r), ["c", "foo/1", "foo/2", "foo/3", "fop"]);

    // limit: count is the full count, more says there is more
    let r = get(&mut c, "", GetOptions::new().with_all_keys().with_limit(3)).await;
    assert_eq!(keys(&r), ["a", "b", "c"]);
    assert_eq!((r.count(), r.more()), (7, true));
    let r = get(&mut c, "", GetOptions::new().with_all_keys().with_limit(7)).await;
    assert_eq!((r.kvs().len(), r.count(), r.more()), (7, 7, false));
    let r = get(
        &mut c,
        "foo/",
        GetOptions::new().with_prefix().with_limit(2),
    )
    .await;
    assert_eq!(
        (keys(&r), r.count(), r.more()),
        (vec!["foo/1".to_string(), "foo/2".into()], 3, true)
    );

    // revision
    let r = get(&mut c, "a", GetOptions::new().with_revision(3)).await;
    assert_eq!(pairs(&r), p(&[("a", "7")]));
    assert_eq!(rev_of(r.header()), 9, "header carries the current revision");
    let r = get(
        &mut c,
        "",
        GetOptions::new().with_all_keys().with_revision(5),
    )
    .await;
    assert_eq!(keys(&r), ["a", "b", "c", "foo/2"]);
    assert_eq!(r.count(), 4);

    // sort
    let all = || GetOptions::new().with_all_keys();
    let r = get(
        &mut c,
        "",
        all().with_sort(SortTarget::Key, SortOrder::Descend),
    )
    .await;
    assert_eq!(keys(&r), ["fop", "foo/3", "foo/2", "foo/1", "c", "b", "a"]);
    let r = get(
        &mut c,
        "",
        all().with_sort(SortTarget::Create, SortOrder::Ascend),
    )
    .await;
    assert_eq!(keys(&r), ["b", "a", "c", "foo/2", "foo/1", "foo/3", "fop"]);
    let r = get(
        &mut c,
        "",
        all().with_sort(SortTarget::Mod, SortOrder::Descend),
    )
    .await;
    assert_eq!(keys(&r), ["a", "fop", "foo/3", "foo/1", "foo/2", "c", "b"]);
    let r = get(
        &mut c,
        "",
        all().with_sort(SortTarget::Value, SortOrder::Ascend),
    )
    .await;
    assert_eq!(keys(&r), ["c", "b", "a", "fop", "foo/2", "foo/1", "foo/3"]);
    let r = get(
        &mut c,
        "",
        all().with_sort(SortTarget::Version, SortOrder::Descend),
    )
    .await;
    assert_eq!(keys(&r)[0], "a");
    // a non-key target with order NONE sorts ascending
    let r = get(
        &mut c,
        "",
        all().with_sort(SortTarget::Mod, SortOrder::None),
    )
    .await;
    assert_eq!(keys(&r), ["b", "c", "foo/2", "foo/1", "foo/3", "fop", "a"]);
    // sort, then limit
    let r = get(
        &mut c,
        "",
        all()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(2),
    )
    .await;
    assert_eq!(keys(&r), ["fop", "foo/3"]);
    assert_eq!((r.count(), r.more()), (7, true));

    // keys_only / count_only
    let r = get(
        &mut c,
        "foo/",
        GetOptions::new().with_prefix().with_keys_only(),
    )
    .await;
    assert_eq!(keys(&r), ["foo/1", "foo/2", "foo/3"]);
    assert!(r.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(r.kvs()[0].mod_revision(), 6, "keys_only keeps the metadata");
    let r = get(
        &mut c,
        "foo/",
        GetOptions::new().with_prefix().with_count_only(),
    )
    .await;
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 3);

    // min/max mod/create revision filters
    let r = get(&mut c, "", all().with_min_mod_revision(7)).await;
    assert_eq!(keys(&r), ["a", "foo/3", "fop"]);
    let r = get(&mut c, "", all().with_max_mod_revision(4)).await;
    assert_eq!(keys(&r), ["b", "c"]);
    let r = get(
        &mut c,
        "",
        all().with_min_mod_revision(5).with_max_mod_revision(6),
    )
    .await;
    assert_eq!(keys(&r), ["foo/1", "foo/2"]);
    let r = get(
        &mut c,
        "",
        all()
            .with_min_create_revision(3)
            .with_max_create_revision(4),
    )
    .await;
    assert_eq!(keys(&r), ["a", "c"]);

    // serializable reads see the same data
    let r = get(&mut c, "a", GetOptions::new().with_serializable()).await;
    assert_eq!(pairs(&r), p(&[("a", "8")]));
}

fn txn_ops(r: &TxnResponse) -> Vec<TxnOpResponse> {
    r.op_responses()
}

#[tokio::test]
async fn transactions() {
    let s = Server::start(target_kind());
    let mut c = connect(&s).await;
    put(&mut c, "k", "v").await; // rev 2: create=2 mod=2 ver=1
    put(&mut c, "k", "w").await; // rev 3: mod=3 ver=2
    put(&mut c, "other", "o").await; // rev 4

    // every target with every operator: (compare, expected outcome)
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::version("k", CompareOp::Equal, 2), true),
        (Compare::version("k", CompareOp::NotEqual, 2), false),
        (Compare::version("k", CompareOp::Less, 3), true),
        (Compare::version("k", CompareOp::Greater, 2), false),
        (Compare::create_revision("k", CompareOp::Equal, 2), true),
        (Compare::create_revision("k", CompareOp::NotEqual, 3), true),
        (Compare::create_revision("k", CompareOp::Less, 2), false),
        (Compare::create_revision("k", CompareOp::Greater, 1), true),
        (Compare::mod_revision("k", CompareOp::Equal, 3), true),
        (Compare::mod_revision("k", CompareOp::NotEqual, 3), false),
        (Compare::mod_revision("k", CompareOp::Less, 4), true),
        (Compare::mod_revision("k", CompareOp::Greater, 3), false),
        (Compare::value("k", CompareOp::Equal, "w"), true),
        (Compare::value("k", CompareOp::NotEqual, "w"), false),
        (Compare::value("k", CompareOp::Less, "x"), true),
        (Compare::value("k", CompareOp::Greater, "wa"), false),
        (Compare::lease("k", CompareOp::Equal, 0), true),
        (Compare::lease("k", CompareOp::NotEqual, 0), false),
        (Compare::lease("k", CompareOp::Less, 1), true),
        (Compare::lease("k", CompareOp::Greater, 0), false),
        // a missing key has version/create/mod 0; a value compare on it fails
        (Compare::version("missing", CompareOp::Equal, 0), true),
        (
            Compare::create_revision("missing", CompareOp::Equal, 0),
            true,
        ),
        (Compare::mod_revision("missing", CompareOp::Less, 1), true),
        (Compare::value("missing", CompareOp::Equal, ""), false),
        (Compare::value("missing", CompareOp::NotEqual, "x"), false),
        // ranges: every key in the range must match
        (
            Compare::version("\0", CompareOp::Greater, 0).with_range("\0"),
            true,
        ),
        (
            Compare::mod_revision("k", CompareOp::Less, 4).with_range("p"),
            false,
        ),
        (
            Compare::value("o", CompareOp::Equal, "o").with_prefix(),
            true,
        ),
    ];
    for (i, (cmp, want)) in cases.into_iter().enumerate() {
        let desc = format!("{cmp:?}");
        let r = c
            .txn(
                Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::get("k", None)])
                    .or_else([TxnOp::get("other", None)]),
            )
            .await
            .unwrap_or_else(|e| panic!("case {i} {desc}: {e}"));
        assert_eq!(r.succeeded(), want, "case {i}: {desc}");
        assert_eq!(rev_of(r.header()), 4, "read-only txn keeps the revision");
        let ops = txn_ops(&r);
        assert_eq!(ops.len(), 1);
        let TxnOpResponse::Get(g) = &ops[0] else {
            panic!("case {i}: {ops:?}")
        };
        assert_eq!(
            keys(g),
            [if want { "k" } else { "other" }],
            "case {i}: {desc}"
        );
    }

    // several compares are ANDed
    let r = c
        .txn(Txn::new().when([
            Compare::value("k", CompareOp::Equal, "w"),
            Compare::version("other", CompareOp::Equal, 2),
        ]))
        .await
        .unwrap();
    assert!(!r.succeeded());
    assert!(txn_ops(&r).is_empty());

    // writes: one revision for the whole txn; reads see earlier writes
    let r = c
        .txn(
            Txn::new()
                .when([Compare::mod_revision("k", CompareOp::Equal, 3)])
                .and_then([
                    TxnOp::put("k", "txn", Some(PutOptions::new().with_prev_key())),
                    TxnOp::put("n", "new", None),
                    TxnOp::delete("other", Some(DeleteOptions::new().with_prev_key())),
                    TxnOp::get("k", None),
                ])
                .or_else([TxnOp::put("k", "else", None)]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    assert_eq!(rev_of(r.header()), 5);
    let ops = txn_ops(&r);
    assert_eq!(ops.len(), 4);
    let TxnOpResponse::Put(p0) = &ops[0] else {
        panic!("{ops:?}")
    };
    assert_eq!(p0.prev_key().map(kv_pair), Some(("k".into(), "w".into())));
    let TxnOpResponse::Delete(d) = &ops[2] else {
        panic!("{ops:?}")
    };
    assert_eq!(d.deleted(), 1);
    assert_eq!(kv_pair(&d.prev_kvs()[0]), ("other".into(), "o".into()));
    let TxnOpResponse::Get(g) = &ops[3] else {
        panic!("{ops:?}")
    };
    assert_eq!(pairs(g), p(&[("k", "txn")]));
    assert_eq!(g.kvs()[0].mod_revision(), 5);
    let r = get(&mut c, "n", GetOptions::new()).await;
    assert_eq!(r.kvs()[0].mod_revision(), 5);
    assert_eq!(rev_of(r.header()), 5);

    // else branch
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("k", CompareOp::Equal, "nope")])
                .and_then([TxnOp::put("k", "then", None)])
                .or_else([TxnOp::put("k", "else", None), TxnOp::get("k", None)]),
        )
        .await
        .unwrap();
    assert!(!r.succeeded());
    assert_eq!(rev_of(r.header()), 6);
    let TxnOpResponse::Get(g) = &txn_ops(&r)[1] else {
        panic!()
    };
    assert_eq!(pairs(g), p(&[("k", "else")]));

    // nested txns; the same key may be written in different branches
    let inner_ok = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "else")])
        .and_then([TxnOp::put("inner", "yes", None)])
        .or_else([TxnOp::put("inner", "no", None)]);
    let inner_bad = Txn::new()
        .when([Compare::version("k", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("inner2", "yes", None)])
        .or_else([TxnOp::get("k", None)]);
    let r = c
        .txn(
            Txn::new()
                .when([Compare::version("k", CompareOp::Greater, 0)])
                .and_then([
                    TxnOp::txn(inner_ok),
                    TxnOp::txn(inner_bad),
                    TxnOp::put("outer", "1", None),
                ])
                .or_else([TxnOp::put("outer", "0", None)]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    assert_eq!(rev_of(r.header()), 7);
    let ops = txn_ops(&r);
    let TxnOpResponse::Txn(t1) = &ops[0] else {
        panic!("{ops:?}")
    };
    assert!(t1.succeeded());
    let TxnOpResponse::Txn(t2) = &ops[1] else {
        panic!("{ops:?}")
    };
    assert!(!t2.succeeded());
    let TxnOpResponse::Get(g) = &t2.op_responses()[0] else {
        panic!()
    };
    assert_eq!(pairs(g), p(&[("k", "else")]));
    let r = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(keys(&r), ["inner", "k", "n", "outer"]);
    assert!(r
        .kvs()
        .iter()
        .filter(|kv| kv.key() != b"k" && kv.key() != b"n")
        .all(|kv| kv.mod_revision() == 7));

    // an empty txn succeeds and changes nothing
    let r = c.txn(Txn::new()).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(rev_of(r.header()), 7);
}

#[tokio::test]
async fn compaction_physical() {
    let s = Server::start(target_kind());
    let mut c = connect(&s).await;
    for i in 0..6 {
        put(&mut c, "k", &format!("v{i}")).await; // revs 2..=7
    }
    put(&mut c, "gone", "x").await; // 8
    c.delete("gone", None).await.unwrap(); // 9
    let r = c
        .compact(5, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(rev_of(r.header()), 9);
    assert_status(
        c.get("k", Some(GetOptions::new().with_revision(4))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r = get(&mut c, "k", GetOptions::new().with_revision(5)).await;
    assert_eq!(pairs(&r), p(&[("k", "v3")]));
    let r = get(&mut c, "k", GetOptions::new()).await;
    assert_eq!(r.kvs()[0].version(), 6, "compaction keeps the version");
    assert_eq!(
        r.kvs()[0].create_revision(),
        2,
        "compaction keeps the create revision"
    );
    assert_status(
        c.compact(5, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.compact(3, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.compact(10, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    // compact past the delete: the deleted key stays gone, at every revision still kept
    c.compact(9, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let r = get(
        &mut c,
        "",
        GetOptions::new().with_all_keys().with_revision(9),
    )
    .await;
    assert_eq!(keys(&r), ["k"]);
    // a txn range at a compacted revision fails too
    assert_status(
        c.txn(Txn::new().and_then([TxnOp::get("k", Some(GetOptions::new().with_revision(8)))]))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_eq!(put(&mut c, "k", "after").await, 10);
}

#[tokio::test]
async fn error_statuses() {
    let s = Server::start(target_kind());
    let mut c = connect(&s).await;
    put(&mut c, "a", "1").await; // rev 2

    assert_status(
        c.put("", "v", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.get("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.delete("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.txn(Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]))
            .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    assert_status(
        c.txn(Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::delete("x", None)]))
            .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    let ops: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("op{i}"), "v", None))
        .collect();
    assert_status(
        c.txn(Txn::new().and_then(ops)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    // 128 operations are fine
    let ops: Vec<TxnOp> = (0..128)
        .map(|i| TxnOp::put(format!("op{i}"), "v", None))
        .collect();
    let r = c.txn(Txn::new().and_then(ops)).await.unwrap();
    assert_eq!(rev_of(r.header()), 3);

    // the default --max-request-bytes is 1.5 MiB; gRPC accepts 512 KiB more
    let big = vec![b'x'; 1024 * 1024 * 7 / 4];
    assert_status(
        c.put("big", big, None).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    let huge = vec![b'x'; 1024 * 1024 * 5 / 2];
    match c.put("huge", huge, None).await {
        Err(etcd_client::Error::GRpcStatus(st)) => {
            assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}")
        }
        other => panic!("expected ResourceExhausted, got {other:?}"),
    }
    // a value just under the limit is accepted
    let ok = vec![b'y'; 1024 * 1024];
    assert_eq!(
        c.put("mib", ok, None)
            .await
            .map(|r| rev_of(r.header()))
            .unwrap(),
        4
    );

    assert_status(
        c.put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        c.put("a", "v", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        c.put("missing", "v", Some(PutOptions::new().with_ignore_lease()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        c.put(
            "a",
            "v",
            Some(PutOptions::new().with_ignore_lease().with_lease(5)),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
    assert_status(
        c.get("a", Some(GetOptions::new().with_revision(5))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    assert_status(
        c.put("a", "v", Some(PutOptions::new().with_lease(0x1234)))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );

    put(&mut c, "a", "2").await; // 5
    put(&mut c, "a", "3").await; // 6
    c.compact(5, None).await.unwrap();
    assert_status(
        c.get("a", Some(GetOptions::new().with_revision(4))).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );

    // none of the failed requests changed anything
    let r = get(&mut c, "a", GetOptions::new()).await;
    assert_eq!(rev_of(r.header()), 6);
    assert_eq!(pairs(&r), p(&[("a", "3")]));
    assert_eq!(r.kvs()[0].version(), 3);
}

#[tokio::test]
async fn data_survives_restart() {
    let mut s = Server::start(target_kind());
    let (before, all_before) = {
        let mut c = connect(&s).await;
        for i in 0..20 {
            put(&mut c, &format!("key/{i:02}"), &format!("value-{i}")).await; // revs 2..=21
        }
        for i in 0..5 {
            put(&mut c, "key/00", &format!("overwritten-{i}")).await; // 22..=26
        }
        c.delete("key/1", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap(); // 27
        c.txn(Txn::new().and_then([TxnOp::put("t/a", "1", None), TxnOp::put("t/b", "2", None)]))
            .await
            .unwrap(); // 28
        c.compact(24, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        put(&mut c, "last", "x").await; // 29
        let r = get(&mut c, "", GetOptions::new().with_all_keys()).await;
        (rev_of(r.header()), r)
    };
    assert_eq!(before, 29);

    s.restart();
    let mut c = connect(&s).await;
    let r = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(rev_of(r.header()), before, "current revision after restart");
    assert_eq!(r.count(), all_before.count());
    let meta =
        |r: &GetResponse| -> Vec<String> { r.kvs().iter().map(|kv| format!("{kv:?}")).collect() };
    assert_eq!(
        meta(&r),
        meta(&all_before),
        "all keys with their metadata survive"
    );
    // history after the compaction point survives, before it is gone
    let r = get(&mut c, "key/00", GetOptions::new().with_revision(25)).await;
    assert_eq!(pairs(&r), p(&[("key/00", "overwritten-3")]));
    let r = get(
        &mut c,
        "key/",
        GetOptions::new().with_prefix().with_revision(24),
    )
    .await;
    assert_eq!(r.count(), 20);
    assert_status(
        c.get("key/00", Some(GetOptions::new().with_revision(23)))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.compact(24, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    // and the revision counter continues
    assert_eq!(put(&mut c, "after", "restart").await, before + 1);
}
