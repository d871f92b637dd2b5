//! A stalled stream (`watch --stalled N`): one more connection whose single Watch stream
//! creates N watches over the measured prefixes (watch `i` on prefix `i % W`, so every
//! put also makes events for it), reads until every creation is answered, then never
//! reads again while the measured streams receive their events. It shows whether one
//! client that stops reading delays everyone else: the server has to set that stream
//! aside (its HTTP/2 window is full within the first events) rather than wait for it.

use std::time::Instant;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

/// The stalled stream, held open (and unread) until dropped.
pub struct Stalled {
    _responses: Streaming<WatchResponse>,
    _requests: mpsc::UnboundedSender<WatchRequest>,
}

/// Opens the stream on `channel`, creates `n` watches over `prefixes` back to back and
/// reads until all are created (by `deadline`).
pub async fn open(channel: Channel, prefixes: &[Vec<u8>], n: usize, deadline: Instant) -> Result<Stalled, String> {
    let (requests, rx) = mpsc::unbounded_channel();
    for p in prefixes.iter().cycle().take(n) {
        let create = WatchCreateRequest { key: p.clone(), range_end: super::prefix_end(p), ..Default::default() };
        // the receiver is alive: it is in this scope
        let _queued = requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) });
    }
    let mut responses = WatchClient::new(channel)
        .watch(UnboundedReceiverStream::new(rx))
        .await
        .map_err(|e| format!("stalled stream: {e}"))?
        .into_inner();
    let mut created = 0;
    while created < n {
        match tokio::time::timeout_at(deadline.into(), responses.message()).await {
            Ok(Ok(Some(r))) if r.created => created += 1,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err(format!("stalled stream ended after {created} creations")),
            Ok(Err(e)) => return Err(format!("stalled stream after {created} creations: {e}")),
            Err(_) => return Err(format!("stalled stream: {created} of {n} created by the deadline")),
        }
    }
    Ok(Stalled { _responses: responses, _requests: requests })
}
