//! The watch benchmarks against a fake server on loopback: creations matched in order,
//! progress rounds that complete, and progress rounds that never do ending at their
//! deadlines instead of hanging.

use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::{open_all, run_progress, Config, Rounds};

/// The fake's revision.
const REV: i64 = 5;

fn header() -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: REV, ..Default::default() })
}

/// Confirms creations in order; answers progress requests only when `answer_progress`.
struct Fake {
    answer_progress: bool,
}

#[tonic::async_trait]
impl Watch for Fake {
    type WatchStream = UnboundedReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inbound = request.into_inner();
        let answer_progress = self.answer_progress;
        tokio::spawn(async move {
            let mut next_id = 0;
            while let Ok(Some(req)) = inbound.message().await {
                let resp = match req.request_union {
                    Some(RequestUnion::CreateRequest(_)) => {
                        next_id += 1;
                        WatchResponse {
                            header: header(),
                            watch_id: next_id,
                            created: true,
                            ..Default::default()
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) if answer_progress => {
                        WatchResponse { header: header(), watch_id: -1, ..Default::default() }
                    }
                    _ => continue,
                };
                if tx.send(Ok(resp)).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Kv for Fake {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse { header: header(), ..Default::default() }))
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Err(Status::unimplemented("put"))
    }
    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }
    async fn compact(&self, _: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

/// Serves a fake on a free loopback port; returns its endpoint.
async fn serve(answer_progress: bool) -> String {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = incoming.local_addr().expect("local address");
    let server = tonic::transport::Server::builder()
        .add_service(WatchServer::new(Fake { answer_progress }))
        .add_service(KvServer::new(Fake { answer_progress }));
    tokio::spawn(server.serve_with_incoming(incoming));
    addr.to_string()
}

fn config() -> Config {
    Config {
        tenants: 7,
        resources: 3,
        server_pid: Some(std::process::id()),
        clients: 1,
        total: 0,
        val_size: 16,
        rate: 0.0,
        timeout: Some(Duration::from_secs(5)),
        wait: Duration::from_secs(10),
        stalled: 0,
    }
}

#[tokio::test]
async fn a_stalled_stream_is_open_once_every_creation_is_answered() {
    let ep = serve(true).await;
    let channels = crate::conn::connect_all(&[ep], 1).await.expect("connect");
    let prefixes = vec![b"/a/".to_vec(), b"/b/".to_vec()];
    let deadline = Instant::now() + Duration::from_secs(5);
    super::stalled::open(channels[0].clone(), &prefixes, 25, deadline).await.expect("25 watches created");
}

#[tokio::test]
async fn creations_are_matched_in_order() {
    let ep = serve(true).await;
    let channels = crate::conn::connect_all(&[ep], 2).await.expect("connect");
    let opened = open_all(&config(), &channels).await.expect("setup");
    assert_eq!(opened.setup.created, 21);
    assert_eq!(opened.setup.conns, 2);
    assert!(opened.setup.bytes_per_watch().is_some(), "RSS of our own pid");
    assert_eq!(opened.prefixes[4], b"/t1/r1/");
}

#[tokio::test]
async fn progress_rounds_complete() {
    let ep = serve(true).await;
    let channels = crate::conn::connect_all(&[ep], 2).await.expect("connect");
    let rounds = Rounds {
        rounds: 5,
        round_timeout: Duration::from_secs(5),
        resend: Duration::from_secs(1),
        gap: Duration::ZERO,
        burst: 0,
    };
    let out = run_progress(&config(), &rounds, &channels, &channels).await.expect("run");
    assert!(out.ok(), "{out:?}");
    assert_eq!(out.waits_us.len(), 5);
    assert_eq!(out.progress_responses, 10);
}

#[tokio::test]
async fn a_burst_times_every_request() {
    let ep = serve(true).await;
    let channels = crate::conn::connect_all(&[ep], 2).await.expect("connect");
    let rounds =
        Rounds { rounds: 3, round_timeout: Duration::from_secs(5), resend: Duration::from_secs(1), gap: Duration::ZERO, burst: 50 };
    let out = run_progress(&config(), &rounds, &channels, &channels).await.expect("run");
    assert!(out.ok(), "{out:?}");
    // 3 rounds x 2 streams x 50 requests, each answered once
    assert_eq!(out.waits_us.len(), 300);
    assert_eq!(out.progress_responses, 300);
}

#[tokio::test]
async fn unanswered_progress_ends_at_the_deadlines() {
    let ep = serve(false).await;
    let channels = crate::conn::connect_all(&[ep], 1).await.expect("connect");
    let rounds = Rounds {
        rounds: 100,
        round_timeout: Duration::from_millis(60),
        resend: Duration::from_millis(20),
        gap: Duration::ZERO,
        burst: 0,
    };
    let started = Instant::now();
    let out = run_progress(&config(), &rounds, &channels, &channels).await.expect("run");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(!out.ok());
    assert_eq!(out.timed_out, 3, "gives up after three rounds in a row");
    assert!(out.waits_us.is_empty());
    assert!(out.resends >= 3, "asked again within each round: {}", out.resends);
    assert!(out.failure.as_deref().unwrap_or("").contains("in a row"), "{:?}", out.failure);
}
