//! The write path of a member, end to end on a single-member engine (store, Raft log,
//! node thread): answers matched by request id, refusals that fail alone, the size limit
//! before proposing, and a stopped member refusing everything.

use std::sync::Arc;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_storage::{ApplyResponse, Error as StorageError};

use crate::engine::Engine;
use crate::error::RequestError;
use crate::member::proposer::Proposer;
use crate::member::MemberOptions;

fn put(key: &[u8], lease: i64) -> Request {
    Request::Put(PutRequest { key: key.to_vec(), value: b"v".to_vec(), lease, ..Default::default() })
}

fn revision_of(reply: &ApplyResponse) -> i64 {
    match reply {
        ApplyResponse::Put(p) => p.header.as_ref().expect("header").revision,
        other => panic!("not a put response: {other:?}"),
    }
}

async fn engine(options: MemberOptions) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path(), options).await.expect("open engine");
    (engine, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_the_answer_to_its_own_write() {
    let (engine, _dir) = engine(MemberOptions::default()).await;
    let proposer = engine.member.proposer.clone();
    let start = engine.store().revision();
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let proposer = proposer.clone();
            tokio::spawn(async move {
                let key = format!("k{i:03}").into_bytes();
                let reply = proposer.propose(put(&key, 0)).await.expect("put");
                (key, revision_of(&reply))
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        let (key, rev) = task.await.expect("task");
        // the revision answered is the one that wrote this caller's key
        let got = engine.store().range(&RangeRequest { key: key.clone(), ..Default::default() }).expect("range");
        assert_eq!(got.kvs[0].mod_revision, rev, "answer matched to the wrong caller for {key:?}");
        revisions.push(rev);
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (start + 1..=start + 200).collect::<Vec<i64>>(), "one revision each, none shared");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_fails_alone() {
    let (engine, _dir) = engine(MemberOptions::default()).await;
    let p = engine.member.proposer.clone();
    let (a, b, c) = tokio::join!(p.propose(put(b"a", 0)), p.propose(put(b"b", 12345)), p.propose(put(b"c", 0)));
    assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
    assert!(matches!(b, Err(RequestError::Storage(StorageError::LeaseNotFound))), "{b:?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_is_refused_before_proposing() {
    let (engine, _dir) = engine(MemberOptions { max_request_bytes: 1024, ..MemberOptions::default() }).await;
    let p = engine.member.proposer.clone();
    let before = engine.store().revision();
    let err = p.propose(put(&[b'x'; 2048], 0)).await.expect_err("too large");
    assert!(matches!(err, RequestError::Storage(StorageError::RequestTooLarge)), "{err:?}");
    assert_eq!(engine.store().revision(), before);
    assert!(p.propose(put(b"small", 0)).await.is_ok(), "a small one still passes");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_refuses_every_write() {
    let (engine, _dir) = engine(MemberOptions::default()).await;
    let p: Arc<_> = engine.member.proposer.clone();
    p.propose(put(b"before", 0)).await.expect("put");
    engine.shutdown().await;
    let err = p.propose(put(b"after", 0)).await.expect_err("stopped");
    assert!(matches!(err, RequestError::Stopped), "{err:?}");
}
