//! Transport tests: real tonic servers on 127.0.0.1 with ephemeral ports, mailboxes attached
//! to no node, and waits on channels with timeouts (no sleeps).

use std::net::SocketAddr;
use std::time::Duration;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::{PeerBatch, SnapshotChunk};
use raft::eraftpb::{Entry, Message, MessageType, Snapshot, SnapshotMetadata};
use raft_prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use super::service::Reassembly;
use super::*;

/// The longest any single expected event may take.
const WAIT: Duration = Duration::from_secs(10);

/// What a mailbox was given.
#[derive(Debug)]
enum Got {
    // boxed: a raft message is large, the reports are a few bytes
    Message(Box<Message>),
    Unreachable(u64),
    Snapshot { to: u64, delivered: bool },
}

fn got(input: Result<Message, (u64, Option<bool>)>) -> Got {
    match input {
        Ok(msg) => Got::Message(Box::new(msg)),
        Err((peer, None)) => Got::Unreachable(peer),
        Err((to, Some(delivered))) => Got::Snapshot { to, delivered },
    }
}

/// The receiving end of a detached mailbox (`I` is the node's input type, which only the
/// node module can name).
struct Inbox<I> {
    rx: mpsc::UnboundedReceiver<I>,
    convert: fn(I) -> Got,
}

impl<I> Inbox<I> {
    async fn next(&mut self) -> Got {
        let input = timeout(WAIT, self.rx.recv()).await.expect("timed out waiting for the mailbox");
        (self.convert)(input.expect("mailbox closed"))
    }

    async fn next_within(&mut self, within: Duration) -> Option<Got> {
        match timeout(within, self.rx.recv()).await {
            Ok(input) => Some((self.convert)(input.expect("mailbox closed"))),
            Err(_) => None,
        }
    }

    async fn message(&mut self) -> Message {
        match self.next().await {
            Got::Message(msg) => *msg,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn try_next(&mut self) -> Option<Got> {
        self.rx.try_recv().ok().map(self.convert)
    }
}

fn detached() -> (Mailbox, Inbox<impl Sized>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mailbox = Mailbox { tx, observer: crate::observe::Observer::default() };
    (mailbox, Inbox { rx, convert: |input| got(input.into_result()) })
}

fn fast() -> TransportOptions {
    TransportOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        ..TransportOptions::default()
    }
}

fn append(from: u64, to: u64, index: u64) -> Message {
    let data = vec![index as u8; (index % 300) as usize];
    Message {
        msg_type: MessageType::MsgAppend as i32,
        from,
        to,
        term: 1,
        index,
        entries: vec![Entry { index: index + 1, term: 1, data, ..Default::default() }],
        ..Default::default()
    }
}

fn heartbeat(from: u64, to: u64, commit: u64) -> Message {
    Message { msg_type: MessageType::MsgHeartbeat as i32, from, to, term: 1, commit, ..Default::default() }
}

fn snapshot(from: u64, to: u64, data: Vec<u8>) -> Message {
    let metadata = SnapshotMetadata { index: 42, term: 3, ..Default::default() };
    Message {
        msg_type: MessageType::MsgSnapshot as i32,
        from,
        to,
        term: 3,
        snapshot: Some(Snapshot { data, metadata: Some(metadata) }),
        ..Default::default()
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A port nothing listens on (bound, then released).
async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// Serves `svc` on `listener` until the test ends.
fn serve(listener: TcpListener, svc: PeerService) -> JoinHandle<()> {
    tokio::spawn(async move {
        let served = Server::builder()
            .add_service(svc.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
        if let Err(e) = served {
            eprintln!("peer server failed: {e}");
        }
    })
}

/// A member: a transport (reporting to its mailbox) and a peer server (delivering to it).
struct Member<I> {
    id: u64,
    inbox: Inbox<I>,
    transport: GrpcTransport,
    url: String,
    _server: JoinHandle<()>,
}

async fn member(id: u64, cluster_id: u64, max_snapshot: u64) -> Member<impl Sized> {
    let (mailbox, inbox) = detached();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = url(listener.local_addr().expect("addr"));
    let svc = PeerService::new(id, cluster_id, mailbox.clone(), max_snapshot);
    let server = serve(listener, svc);
    let transport = GrpcTransport::with_options(id, cluster_id, mailbox, None, Handle::current(), fast());
    Member { id, inbox, transport, url, _server: server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_order() {
    let mut a = member(1, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut b = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    a.transport.set_peer(b.id, vec![b.url.clone()]).expect("set peer");
    let mut index = 0;
    for _ in 0..20 {
        let msgs = (0..100).map(|_| {
            index += 1;
            append(a.id, b.id, index)
        });
        a.transport.send(msgs.collect());
    }
    for expected in 1..=index {
        let msg = b.inbox.message().await;
        assert_eq!((msg.from, msg.to, msg.index), (1, 2, expected));
        assert_eq!(msg, append(1, 2, expected));
    }
    assert!(a.inbox.try_next().is_none(), "nothing reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_delivered_whole_and_reported() {
    let mut a = member(1, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut b = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    a.transport.set_peer(b.id, vec![b.url.clone()]).expect("set peer");
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    a.transport.send(vec![heartbeat(1, 2, 1), snapshot(1, 2, data.clone()), heartbeat(1, 2, 2)]);

    let mut heartbeats = Vec::new();
    let mut snap = None;
    while snap.is_none() || heartbeats.len() < 2 {
        let msg = b.inbox.message().await;
        if msg.msg_type == MessageType::MsgSnapshot as i32 {
            snap = Some(msg);
        } else {
            heartbeats.push(msg.commit);
        }
    }
    assert_eq!(heartbeats, [1, 2], "heartbeats in order, around the snapshot");
    let snap = snap.and_then(|m| m.snapshot).expect("snapshot");
    assert_eq!(snap.metadata.map(|m| (m.index, m.term)), Some((42, 3)));
    assert!(snap.data == data, "snapshot data arrived whole and unchanged");
    match a.inbox.next().await {
        Got::Snapshot { to: 2, delivered: true } => {}
        other => panic!("expected the snapshot reported delivered, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_above_the_cap_is_refused_and_reported() {
    let mut a = member(1, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut b = member(2, 7, 1 << 20).await;
    a.transport.set_peer(b.id, vec![b.url.clone()]).expect("set peer");
    a.transport.send(vec![snapshot(1, 2, vec![7; 2 << 20])]);
    match a.inbox.next().await {
        Got::Snapshot { to: 2, delivered: false } => {}
        other => panic!("expected the snapshot reported failed, got {other:?}"),
    }
    match a.inbox.next().await {
        Got::Unreachable(2) => {}
        other => panic!("expected peer 2 reported unreachable, got {other:?}"),
    }
    // the receiver refused before the sender heard of it: nothing can still be on its way
    assert!(b.inbox.try_next().is_none(), "nothing delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cluster_is_refused() {
    let mut a = member(1, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut b = member(2, 8, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    a.transport.set_peer(b.id, vec![b.url.clone()]).expect("set peer");
    a.transport.send(vec![heartbeat(1, 2, 1)]);
    match a.inbox.next().await {
        Got::Unreachable(2) => {}
        other => panic!("expected peer 2 reported unreachable, got {other:?}"),
    }
    assert!(b.inbox.try_next().is_none(), "nothing delivered");

    // what the refusal says, seen by a plain client
    let mut client = PeerClient::connect(b.url.clone()).await.expect("connect");
    let batch = PeerBatch { cluster_id: 7, from: 1, to: 2, messages: vec![heartbeat(1, 2, 1).encode_to_vec()] };
    let status = client.stream(futures::stream::iter(vec![batch])).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("cluster ID mismatch"), "{}", status.message());

    let batch = PeerBatch { cluster_id: 8, from: 1, to: 3, messages: vec![heartbeat(1, 3, 1).encode_to_vec()] };
    let status = client.stream(futures::stream::iter(vec![batch])).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("member ID mismatch"), "{}", status.message());
    assert!(b.inbox.try_next().is_none(), "nothing delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_dropped_and_the_rest_delivered() {
    let mut b = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut client = PeerClient::connect(b.url.clone()).await.expect("connect");
    let messages = vec![
        heartbeat(1, 2, 1).encode_to_vec(),
        vec![0xff, 0xff, 0xff, 0xff],            // does not decode
        heartbeat(3, 2, 9).encode_to_vec(),      // claims another sender
        snapshot(1, 2, vec![1]).encode_to_vec(), // snapshots have their own call
        heartbeat(1, 2, 2).encode_to_vec(),
    ];
    let batch = PeerBatch { cluster_id: 7, from: 1, to: 2, messages };
    let ack = client.stream(futures::stream::iter(vec![batch])).await.expect("accepted").into_inner();
    assert_eq!(ack.delivered, 2);
    assert_eq!(b.inbox.message().await.commit, 1);
    assert_eq!(b.inbox.message().await.commit, 2);
    assert!(b.inbox.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_less_data_than_announced_is_refused() {
    let mut b = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut client = PeerClient::connect(b.url.clone()).await.expect("connect");
    let header = SnapshotChunk {
        cluster_id: 7,
        from: 1,
        to: 2,
        message: snapshot(1, 2, Vec::new()).encode_to_vec(),
        data_len: 10,
        data: Vec::new(),
    };
    let piece = SnapshotChunk { data: vec![1; 6], ..Default::default() };
    let status = client.snapshot(futures::stream::iter(vec![header, piece])).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(b.inbox.try_next().is_none(), "nothing delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_peer_is_reported_then_reached_once_it_starts() {
    let (mailbox, mut inbox) = detached();
    let mut a = GrpcTransport::with_options(1, 7, mailbox, None, Handle::current(), fast());
    let addr = free_addr().await;
    a.set_peer(2, vec![url(addr)]).expect("set peer");
    a.send(vec![heartbeat(1, 2, 1)]);
    match inbox.next().await {
        Got::Unreachable(2) => {}
        other => panic!("expected peer 2 reported unreachable, got {other:?}"),
    }

    let (b_mailbox, mut b_inbox) = detached();
    let listener = TcpListener::bind(addr).await.expect("bind the same port again");
    let _server = serve(listener, PeerService::new(2, 7, b_mailbox, DEFAULT_MAX_SNAPSHOT_BYTES));
    // Raft would resend; so do we, until one gets through
    let deadline = Instant::now() + WAIT;
    let mut commit = 1;
    let msg = loop {
        assert!(Instant::now() < deadline, "peer 2 never reached after it started");
        commit += 1;
        a.send(vec![heartbeat(1, 2, commit)]);
        if let Some(got) = b_inbox.next_within(Duration::from_millis(100)).await {
            break got;
        }
    };
    let Got::Message(msg) = msg else { panic!("expected a message, got {msg:?}") };
    assert_eq!((msg.from, msg.to), (1, 2));
    // once connected, the stream carries everything, in order
    for c in commit + 1..commit + 50 {
        a.send(vec![heartbeat(1, 2, c)]);
    }
    let mut last = msg.commit;
    while last < commit + 49 {
        let next = b_inbox.message().await.commit;
        assert!(next > last, "in order: {next} after {last}");
        last = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_tried_in_turn() {
    let mut a = member(1, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut b = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let dead = url(free_addr().await);
    a.transport.set_peer(b.id, vec![dead, b.url.clone()]).expect("set peer");
    a.transport.send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(b.inbox.message().await.commit, 1);
    assert!(a.inbox.try_next().is_none(), "nothing reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_address_moves_the_traffic() {
    let mut a = member(1, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut old = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut new = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    a.transport.set_peer(2, vec![old.url.clone()]).expect("set peer");
    a.transport.send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(old.inbox.message().await.commit, 1);

    a.transport.set_peer(2, vec![new.url.clone()]).expect("set peer");
    assert_eq!(a.transport.peers(), [2]);
    // a message queued just as the address changed may still go out on the old stream
    let deadline = Instant::now() + WAIT;
    let mut commit = 1;
    loop {
        assert!(Instant::now() < deadline, "traffic never moved to the new address");
        commit += 1;
        a.transport.send(vec![heartbeat(1, 2, commit)]);
        if let Some(got) = new.inbox.next_within(Duration::from_millis(100)).await {
            assert!(matches!(got, Got::Message(ref m) if m.commit == commit), "{got:?}");
            break;
        }
    }
    while let Some(got) = old.inbox.try_next() {
        assert!(matches!(got, Got::Message(ref m) if m.commit < commit), "{got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_peer_is_no_longer_sent_to() {
    let mut a = member(1, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    let mut b = member(2, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    a.transport.set_peer(b.id, vec![b.url.clone()]).expect("set peer");
    a.transport.send(vec![heartbeat(1, 2, 1)]);
    assert_eq!(b.inbox.message().await.commit, 1);

    assert!(a.transport.remove_peer(2));
    assert!(!a.transport.remove_peer(2), "already removed");
    assert!(a.transport.peers().is_empty());
    a.transport.send(vec![heartbeat(1, 2, 2), snapshot(1, 2, vec![1, 2, 3])]);
    // reported at once, by `send` itself
    let reports: Vec<Got> = std::iter::from_fn(|| a.inbox.try_next()).collect();
    assert!(
        matches!(reports.as_slice(), [Got::Unreachable(2), Got::Snapshot { to: 2, delivered: false }]),
        "{reports:?}"
    );
    // the peer's server sees nothing more: a fresh stream from a third member still works
    // and arrives alone
    let mut c = member(3, 7, DEFAULT_MAX_SNAPSHOT_BYTES).await;
    c.transport.set_peer(2, vec![b.url.clone()]).expect("set peer");
    c.transport.send(vec![heartbeat(3, 2, 9)]);
    let msg = b.inbox.message().await;
    assert_eq!((msg.from, msg.commit), (3, 9));
    assert!(c.inbox.try_next().is_none());
}

/// A runtime nobody drives: tasks spawned on it never run, so queues only fill.
fn idle_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn full_queue_drops_and_reports_once_per_send() {
    let rt = idle_runtime();
    let (mailbox, mut inbox) = detached();
    let options = TransportOptions { queue_len: 4, snapshot_queue_len: 1, ..TransportOptions::default() };
    let mut a = GrpcTransport::with_options(1, 7, mailbox, None, rt.handle().clone(), options);
    a.set_peer(2, vec!["http://127.0.0.1:1".to_owned()]).expect("set peer");
    a.send((1..=4).map(|c| heartbeat(1, 2, c)).collect());
    assert!(inbox.try_next().is_none(), "four fit");
    a.send((5..=10).map(|c| heartbeat(1, 2, c)).collect());
    assert!(matches!(inbox.try_next(), Some(Got::Unreachable(2))));
    assert!(inbox.try_next().is_none(), "one report for the six dropped");
    a.send(vec![snapshot(1, 2, vec![1]), snapshot(1, 2, vec![2])]);
    let reports: Vec<Got> = std::iter::from_fn(|| inbox.try_next()).collect();
    assert!(
        matches!(reports.as_slice(), [Got::Snapshot { to: 2, delivered: false }, Got::Unreachable(2)]),
        "{reports:?}"
    );
}

#[test]
fn unknown_peer_is_reported() {
    let rt = idle_runtime();
    let (mailbox, mut inbox) = detached();
    let mut a = GrpcTransport::new(1, 7, mailbox, None, rt.handle().clone());
    a.send(vec![heartbeat(1, 5, 1), heartbeat(1, 5, 2), heartbeat(1, 6, 1)]);
    let reports: Vec<Got> = std::iter::from_fn(|| inbox.try_next()).collect();
    assert!(matches!(reports.as_slice(), [Got::Unreachable(5), Got::Unreachable(6)]), "{reports:?}");
}

#[test]
fn bad_peer_addresses_are_refused() {
    let rt = idle_runtime();
    let (mailbox, _inbox) = detached();
    let a = GrpcTransport::new(1, 7, mailbox, None, rt.handle().clone());
    assert!(matches!(a.set_peer(0, vec![]), Err(TransportError::ZeroPeerId)));
    assert!(matches!(a.set_peer(2, vec!["ftp://h:1".into()]), Err(TransportError::BadScheme { peer: 2, .. })));
    assert!(matches!(a.set_peer(2, vec!["http://[::1".into()]), Err(TransportError::BadUrl { peer: 2, .. })));
    let https = vec!["http://h:1".to_owned(), "https://h:2".to_owned()];
    assert!(matches!(a.set_peer(2, https), Err(TransportError::NoTls { peer: 2, .. })));
    assert!(a.peers().is_empty(), "nothing added on error");
    let tls = GrpcTransport::new(1, 7, a.shared.ctx.mailbox.clone(), Some(PeerTls::unverified()), rt.handle().clone());
    tls.set_peer(2, vec!["https://h:2".into()]).expect("https with TLS settings");
    assert_eq!(tls.peers(), [2]);
}

fn header(data_len: u64, msg: &Message) -> SnapshotChunk {
    SnapshotChunk { cluster_id: 7, from: 1, to: 2, message: msg.encode_to_vec(), data_len, data: Vec::new() }
}

#[test]
fn reassembly_checks_the_header_and_the_length() {
    let (mailbox, _inbox) = detached();
    let svc = PeerService::new(2, 7, mailbox, 100);
    let snap = snapshot(1, 2, Vec::new());

    let mut r = Reassembly::start(&svc, header(10, &snap)).expect("start");
    r.push(&[1; 4]).expect("piece");
    r.push(&[2; 6]).expect("piece");
    let msg = r.finish().expect("whole");
    let data = msg.snapshot.map(|s| s.data).unwrap_or_default();
    assert_eq!(data, [[1u8; 4].as_slice(), [2u8; 6].as_slice()].concat());

    let mut r = Reassembly::start(&svc, header(10, &snap)).expect("start");
    r.push(&[1; 8]).expect("piece");
    assert!(matches!(r.push(&[1; 3]), Err(ReceiveError::SnapshotSizeMismatch { announced: 10, received: 11 })));
    let r = Reassembly::start(&svc, header(10, &snap)).expect("start");
    assert!(matches!(r.finish(), Err(ReceiveError::SnapshotSizeMismatch { announced: 10, received: 0 })));

    assert!(matches!(
        Reassembly::start(&svc, header(101, &snap)),
        Err(ReceiveError::SnapshotTooLarge { len: 101, max: 100 })
    ));
    assert!(matches!(
        Reassembly::start(&svc, SnapshotChunk { cluster_id: 8, ..header(1, &snap) }),
        Err(ReceiveError::ClusterMismatch { ours: 7, theirs: 8 })
    ));
    assert!(matches!(Reassembly::start(&svc, header(1, &heartbeat(1, 2, 1))), Err(ReceiveError::NotASnapshot(_))));
    assert!(matches!(
        Reassembly::start(&svc, header(1, &snapshot(3, 2, Vec::new()))),
        Err(ReceiveError::SnapshotAddressMismatch { from: 3, .. })
    ));
    assert!(matches!(
        Reassembly::start(&svc, SnapshotChunk { message: vec![0xff; 3], ..header(1, &snap) }),
        Err(ReceiveError::BadSnapshotMessage(_))
    ));
    // data left in the header's message counts against the announced length
    let mut r = Reassembly::start(&svc, header(3, &snapshot(1, 2, vec![9; 2]))).expect("start");
    r.push(&[8]).expect("piece");
    let msg = r.finish().expect("whole");
    assert_eq!(msg.snapshot.map(|s| s.data).unwrap_or_default(), [9, 9, 8]);
}

#[test]
fn refusals_map_to_grpc_codes() {
    use tonic::Code;
    let cases = [
        (ReceiveError::ClusterMismatch { ours: 1, theirs: 2 }, Code::FailedPrecondition),
        (ReceiveError::WrongMember { ours: 1, to: 2 }, Code::FailedPrecondition),
        (ReceiveError::SnapshotTooLarge { len: 2, max: 1 }, Code::ResourceExhausted),
        (ReceiveError::SnapshotSizeMismatch { announced: 2, received: 1 }, Code::InvalidArgument),
        (ReceiveError::NodeStopped, Code::Unavailable),
    ];
    for (error, code) in cases {
        let message = error.to_string();
        let status = tonic::Status::from(error);
        assert_eq!((status.code(), status.message()), (code, message.as_str()));
    }
}
