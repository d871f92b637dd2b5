//! Tests of the group-commit pipeline against fake state machines that can fail on demand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_proto::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};
use std::sync::mpsc as std_mpsc;

use super::*;

/// A state machine that answers a put with the put's key as prev_kv and the apply index as
/// the header revision, and counts commits. Failures are switched on by the test.
#[derive(Default)]
struct Fake {
    applied: AtomicU64,
    staged: Mutex<Vec<u64>>,
    commits: AtomicU64,
    /// Commit fails (fatally) while set.
    fail_commit: AtomicBool,
    /// When set, each commit first takes one message from it (lets a test pile up a batch).
    gate: Option<Mutex<std_mpsc::Receiver<()>>>,
}

impl Fake {
    fn gated() -> (Arc<Fake>, std_mpsc::Sender<()>) {
        let (tx, rx) = std_mpsc::channel();
        (
            Arc::new(Fake {
                gate: Some(Mutex::new(rx)),
                ..Default::default()
            }),
            tx,
        )
    }
}

fn release(gate: &std_mpsc::Sender<()>, commits: usize) {
    for _ in 0..commits {
        gate.send(()).unwrap();
    }
}

/// Commands queued and not yet taken by the apply thread.
fn queued(proposer: &GroupCommitProposer) -> usize {
    QUEUE_CAPACITY - proposer.queue.capacity()
}

impl StateMachine for Fake {
    fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    fn apply(&self, index: u64, request: &InternalRequest) -> Result<ApplyResponse, StorageError> {
        let Some(Request::Put(put)) = &request.request else {
            return Err(StorageError::EmptyRequest);
        };
        match put.key.as_slice() {
            b"fatal" => return Err(StorageError::Backend("injected apply failure".into())),
            b"compacted" => return Err(StorageError::Compacted),
            _ => {}
        }
        self.staged.lock().push(index);
        Ok(ApplyResponse::Put(PutResponse {
            header: Some(ResponseHeader {
                revision: index as i64,
                ..Default::default()
            }),
            prev_kv: Some(cairn_proto::mvccpb::KeyValue {
                key: put.key.clone(),
                ..Default::default()
            }),
        }))
    }

    fn commit(&self) -> Result<(), StorageError> {
        if let Some(gate) = &self.gate {
            gate.lock().recv().unwrap();
        }
        if self.fail_commit.load(Ordering::SeqCst) {
            return Err(StorageError::Backend("injected fsync failure".into()));
        }
        let mut staged = self.staged.lock();
        if let Some(last) = staged.last() {
            self.applied.store(*last, Ordering::SeqCst);
        }
        staged.clear();
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn put(key: &[u8]) -> Request {
    Request::Put(PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn start(fake: Arc<Fake>) -> Arc<GroupCommitProposer> {
    let options = Options {
        first_request_id: request_id_base(7, 1_000),
        max_request_bytes: 1024,
    };
    Arc::new(GroupCommitProposer::start(fake, options).unwrap())
}

fn key_of(reply: &ApplyResponse) -> Vec<u8> {
    match reply {
        ApplyResponse::Put(p) => p.prev_kv.as_ref().unwrap().key.clone(),
        _ => panic!("not a put response"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_its_own_reply_and_batches_share_a_commit() {
    let (fake, gate) = Fake::gated();
    let proposer = start(fake.clone());
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let proposer = proposer.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}").into_bytes();
            let reply = proposer.propose(put(&key)).await.unwrap();
            (key, reply)
        }));
    }
    // The first batch's commit is held until every proposal is staged or queued.
    while fake.staged.lock().len() + queued(&proposer) < 200 {
        tokio::task::yield_now().await;
    }
    release(&gate, 200);
    let mut indexes = Vec::new();
    for task in tasks {
        let (key, reply) = task.await.unwrap();
        assert_eq!(key_of(&reply), key, "reply matched to the wrong caller");
        let ApplyResponse::Put(p) = reply else {
            unreachable!()
        };
        indexes.push(p.header.unwrap().revision);
    }
    indexes.sort_unstable();
    assert_eq!(
        indexes,
        (1..=200).collect::<Vec<i64>>(),
        "indexes are consecutive and unique"
    );
    let commits = fake.commits.load(Ordering::SeqCst);
    assert!(
        commits <= 2,
        "the 199 queued writes share one commit; got {commits} commits"
    );
    proposer.shutdown().await;
}

#[tokio::test]
async fn indexes_continue_after_the_applied_index() {
    let fake = Arc::new(Fake::default());
    fake.applied.store(41, Ordering::SeqCst);
    let proposer = start(fake);
    let ApplyResponse::Put(p) = proposer.propose(put(b"a")).await.unwrap() else {
        panic!()
    };
    assert_eq!(p.header.unwrap().revision, 42);
    proposer.shutdown().await;
}

#[tokio::test]
async fn a_rejected_command_fails_alone() {
    let fake = Arc::new(Fake::default());
    let proposer = start(fake.clone());
    let (a, b, c) = tokio::join!(
        proposer.propose(put(b"a")),
        proposer.propose(put(b"compacted")),
        proposer.propose(put(b"c")),
    );
    assert!(a.is_ok() && c.is_ok());
    assert!(matches!(
        b,
        Err(RequestError::Storage(StorageError::Compacted))
    ));
    proposer.shutdown().await;
}

#[tokio::test]
async fn too_large_is_refused_before_the_queue() {
    let fake = Arc::new(Fake::default());
    let proposer = start(fake.clone());
    let big = vec![b'x'; 2048];
    let err = proposer.propose(put(&big)).await.unwrap_err();
    assert!(matches!(
        err,
        RequestError::Storage(StorageError::RequestTooLarge)
    ));
    assert_eq!(fake.commits.load(Ordering::SeqCst), 0);
    proposer.shutdown().await;
}

#[tokio::test]
async fn a_failed_commit_is_sticky() {
    let fake = Arc::new(Fake::default());
    let proposer = start(fake.clone());
    proposer.propose(put(b"ok")).await.unwrap();
    fake.fail_commit.store(true, Ordering::SeqCst);
    let err = proposer.propose(put(b"lost")).await.unwrap_err();
    assert!(matches!(err, RequestError::Halted(_)), "{err:?}");
    // Even once the disk "recovers", nothing more is accepted.
    fake.fail_commit.store(false, Ordering::SeqCst);
    let err = proposer.propose(put(b"later")).await.unwrap_err();
    assert!(matches!(err, RequestError::Halted(_)), "{err:?}");
    assert_eq!(fake.commits.load(Ordering::SeqCst), 1);
    proposer.shutdown().await;
}

#[tokio::test]
async fn a_fatal_apply_fails_the_whole_batch() {
    let (fake, gate) = Fake::gated();
    let proposer = start(fake.clone());
    // The first command's commit is held so the next three form one batch.
    let first = tokio::spawn({
        let p = proposer.clone();
        async move { p.propose(put(b"first")).await }
    });
    while fake.staged.lock().is_empty() {
        tokio::task::yield_now().await;
    }
    let rest: Vec<_> = [&b"x"[..], b"fatal", b"y"]
        .into_iter()
        .map(|k| {
            let p = proposer.clone();
            let k = k.to_vec();
            tokio::spawn(async move { p.propose(put(&k)).await })
        })
        .collect();
    while queued(&proposer) < 3 {
        tokio::task::yield_now().await;
    }
    release(&gate, 2);
    assert!(first.await.unwrap().is_ok());
    for task in rest {
        assert!(matches!(task.await.unwrap(), Err(RequestError::Halted(_))));
    }
    proposer.shutdown().await;
}

#[tokio::test]
async fn shutdown_applies_what_was_queued_then_refuses() {
    let fake = Arc::new(Fake::default());
    let proposer = start(fake.clone());
    let pending = tokio::spawn({
        let p = proposer.clone();
        async move { p.propose(put(b"queued")).await }
    });
    while queued(&proposer) == 0 && fake.applied.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    proposer.shutdown().await;
    assert!(pending.await.unwrap().is_ok());
    let err = proposer.propose(put(b"late")).await.unwrap_err();
    assert!(matches!(err, RequestError::Stopped), "{err:?}");
    assert!(proposer.shared.waiters.lock().is_empty());
}

#[test]
fn request_ids_follow_etcds_layout() {
    let base = request_id_base(0x8e9e05c52164694d, 0x12_3456_789a);
    assert_eq!(base >> 48, 0x694d);
    assert_eq!((base >> 8) & 0xff_ffff_ffff, 0x12_3456_789a);
    assert_eq!(base & 0xff, 0);
}
