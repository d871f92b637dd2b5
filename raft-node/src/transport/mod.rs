//! The peer transport: Raft messages between members over gRPC (tonic), served on the
//! members' peer URLs.
//!
//! * [`GrpcTransport`] is the sending half a [`RaftNode`](crate::RaftNode) owns (it
//!   implements [`Transport`]); clones share one set of peer links, so the server can add,
//!   re-address and remove peers ([`GrpcTransport::set_peer`], [`GrpcTransport::remove_peer`])
//!   from any thread while the node owns a clone.
//! * [`PeerService`] is the receiving half, mounted on the peer listeners
//!   ([`PeerService::into_server`]); it hands what arrives to the node's [`Mailbox`].
//!
//! # Wire format
//! The service is `cairnpb.Peer` (`proto/cairn/peer.proto`), with two client-streaming calls:
//!
//! * `Stream(stream PeerBatch) returns (PeerAck)`: one long-lived call per (sender, receiver)
//!   pair carries every Raft message but snapshots, in the order the sender's Raft produced
//!   them. A `PeerBatch` is `{cluster_id, from, to, repeated bytes messages}`, each entry of
//!   `messages` one raft-rs `eraftpb::Message` encoded with prost 0.11 (raft-rs's codec).
//!   The sender coalesces everything queued for the peer into one batch (up to
//!   [`TransportOptions::max_batch_bytes`]). The receiver refuses a batch from another cluster
//!   or addressed to another member with `FAILED_PRECONDITION`, which ends the call; it drops
//!   (logging at debug) an entry that does not decode, claims another sender than the batch,
//!   or is a snapshot, and delivers the others in order. The call is answered (`PeerAck`, the
//!   number delivered) only when the sender closes it.
//! * `Snapshot(stream SnapshotChunk) returns (SnapshotAck)`: each `MsgSnapshot` goes on a
//!   call of its own, so a large snapshot never holds up heartbeats and appends. The first
//!   chunk carries `cluster_id`, `from`, `to`, the message with `snapshot.data` emptied and
//!   `data_len`, the length of that data; the following chunks carry the data in pieces of
//!   [`TransportOptions::snapshot_chunk_bytes`] (1 MiB). The receiver checks the header as for
//!   batches, refuses an announced length above its cap (`RESOURCE_EXHAUSTED`; default
//!   [`DEFAULT_MAX_SNAPSHOT_BYTES`], 8 GiB) and data longer or shorter than announced
//!   (`INVALID_ARGUMENT`), puts the data back into the message, delivers it once whole, and
//!   only then acks. The sender reports [`Mailbox::report_snapshot`] to its own node: delivered
//!   on the ack, failed (plus [`Mailbox::report_unreachable`]) on any error.
//!
//! The server decodes messages up to [`MAX_PEER_MESSAGE_BYTES`] (64 MiB): a batch stays below
//! it as long as one Raft message is below `64 MiB - max_batch_bytes` (Raft appends are capped
//! near `max_size_per_msg`, 1 MiB by default).
//!
//! # Queues, failures and backoff
//! [`Transport::send`] never blocks: it puts each message on its peer's bounded queue
//! ([`TransportOptions::queue_len`], 4096 messages; snapshots on a separate queue of
//! [`TransportOptions::snapshot_queue_len`]) and returns. A message it cannot queue — the
//! queue is full, or the peer is unknown — is dropped and the peer reported unreachable
//! (once per `send` call and peer; a dropped snapshot is also reported failed). Raft resends
//! what is lost: a follower reported unreachable is probed again.
//!
//! Each peer has two tokio tasks on the runtime given to [`GrpcTransport::new`]:
//!
//! * the stream task connects lazily (on the first message), trying the peer's URLs in turn
//!   (`http://` plain, `https://` with the transport's client TLS config), and then keeps
//!   one `Stream` call open, sending a batch whenever messages are queued. When connecting
//!   fails or the call ends (the peer went away, refused us, or HTTP/2 keepalive timed out),
//!   it reports the peer unreachable once and waits out a backoff — 100 ms, doubling after
//!   each failure up to 1 s ([`TransportOptions::backoff_min`] and `backoff_max`) — while
//!   discarding what is queued (it would be stale; Raft resends). A connection that lived for
//!   at least `backoff_max` resets the backoff to its minimum, and so does a new address.
//!   Then the next message triggers a new attempt.
//! * the snapshot task sends the queued snapshot messages one at a time, each on a fresh
//!   connection, and reports each outcome. There is no overall deadline: a dead peer is
//!   caught by the HTTP/2 keepalive, but a live one that stops reading holds the call (and
//!   that peer's later snapshots; Raft sends it none until it hears the outcome anyway).
//!
//! Warnings are logged when a peer becomes unreachable, debug lines while it stays so, and
//! an info line when a batch goes out again.
//!
//! [`GrpcTransport::set_peer`] on a known peer changes its address in place: the queue is
//! kept and the stream task reconnects to the new URLs. [`GrpcTransport::remove_peer`] drops
//! the queues and aborts both tasks (an unfinished snapshot is then not reported: Raft no
//! longer tracks a removed member).

pub mod dial;
mod sender;
mod service;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use raft::eraftpb::{Message, MessageType};
use tokio::runtime::Handle;

use crate::node::{Mailbox, Transport};
use sender::{LinkCtx, PeerLink};
pub use dial::{peer_endpoint, Dial, PeerTls};
pub use service::{PeerService, ReceiveError, DEFAULT_MAX_SNAPSHOT_BYTES, MAX_PEER_MESSAGE_BYTES};

/// Why [`GrpcTransport::set_peer`] refused a peer's addresses.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// 0 is not a member id.
    #[error("peer id 0 is not a member id")]
    ZeroPeerId,
    /// A URL that is not `http://host:port` or `https://host:port`.
    #[error("peer {peer}: {url:?} is not an http:// or https:// URL")]
    BadScheme {
        /// The peer.
        peer: u64,
        /// The URL.
        url: String,
    },
    /// A URL that does not parse.
    #[error("peer {peer}: bad URL {url:?}: {source}")]
    BadUrl {
        /// The peer.
        peer: u64,
        /// The URL.
        url: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// An `https://` URL on a transport built without client TLS settings.
    #[error("peer {peer}: {url:?} needs TLS, but the transport has no client TLS settings")]
    NoTls {
        /// The peer.
        peer: u64,
        /// The URL.
        url: String,
    },
}

/// How a [`GrpcTransport`] queues, batches and retries (see the module docs).
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Messages queued per peer before new ones are dropped (and the peer reported
    /// unreachable).
    pub queue_len: usize,
    /// Snapshot messages queued per peer.
    pub snapshot_queue_len: usize,
    /// A batch stops growing once its encoded messages reach this many bytes.
    pub max_batch_bytes: usize,
    /// Snapshot data per chunk.
    pub snapshot_chunk_bytes: usize,
    /// The first wait after a failed connection.
    pub backoff_min: Duration,
    /// The longest wait; a connection that lived this long resets the backoff.
    pub backoff_max: Duration,
    /// Time allowed to connect to one URL (TCP, TLS and HTTP/2 handshakes).
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive ping interval on peer connections.
    pub keepalive_interval: Duration,
    /// A connection whose keepalive ping is not answered within this time is closed.
    pub keepalive_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_len: 4096,
            snapshot_queue_len: 4,
            max_batch_bytes: 16 << 20,
            snapshot_chunk_bytes: 1 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// The sending half of the peer transport (see the module docs). Cheap to clone; clones
/// share their peers.
#[derive(Clone)]
pub struct GrpcTransport {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: LinkCtx,
    runtime: Handle,
    /// The peer links by id. Guards only the map: held to route one `send` call or to add,
    /// re-address or remove a peer; never held across an await, and no other lock is taken
    /// while it is held (mailbox reports are made after it is released).
    peers: Mutex<HashMap<u64, PeerLink>>,
}

impl GrpcTransport {
    /// A transport for member `local_id` of cluster `cluster_id`, reporting to `mailbox` (the
    /// local node's), with no peers yet and the default [`TransportOptions`]. `tls` is used
    /// for `https://` peer URLs; the peer tasks run on `runtime`.
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        mailbox: Mailbox,
        tls: Option<PeerTls>,
        runtime: Handle,
    ) -> Self {
        Self::with_options(local_id, cluster_id, mailbox, tls, runtime, TransportOptions::default())
    }

    /// [`GrpcTransport::new`] with other options.
    pub fn with_options(
        local_id: u64,
        cluster_id: u64,
        mailbox: Mailbox,
        tls: Option<PeerTls>,
        runtime: Handle,
        options: TransportOptions,
    ) -> Self {
        let ctx = LinkCtx { local_id, cluster_id, mailbox, tls, options };
        GrpcTransport { shared: Arc::new(Shared { ctx, runtime, peers: Mutex::new(HashMap::new()) }) }
    }

    /// Adds peer `id` at `urls` (tried in turn), or gives a known peer new addresses (its
    /// queue is kept; it reconnects). Checks every URL first and changes nothing on error.
    pub fn set_peer(&self, id: u64, urls: Vec<String>) -> Result<(), TransportError> {
        if id == 0 {
            return Err(TransportError::ZeroPeerId);
        }
        for url in &urls {
            sender::check_url(id, url, self.shared.ctx.tls.is_some())?;
        }
        let mut peers = self.shared.peers.lock();
        match peers.get(&id) {
            Some(link) => link.set_urls(urls),
            None => {
                let link = PeerLink::spawn(id, &self.shared.ctx, urls, &self.shared.runtime);
                peers.insert(id, link);
            }
        }
        Ok(())
    }

    /// Forgets peer `id`: its queued messages are dropped and its tasks stopped; later
    /// messages to it are dropped and reported unreachable. False if it was unknown.
    pub fn remove_peer(&self, id: u64) -> bool {
        // the link's drop aborts its tasks; done after the lock is released
        let removed = self.shared.peers.lock().remove(&id);
        removed.is_some()
    }

    /// The peers known, in id order.
    pub fn peers(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.shared.peers.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// This member's id.
    pub fn local_id(&self) -> u64 {
        self.shared.ctx.local_id
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        // (peer, was a snapshot) for each message that could not be queued
        let mut refused: Vec<(u64, bool)> = Vec::new();
        // heartbeats queued (timed for the round-trip metric) and refused
        let mut heartbeats: Vec<(u64, bool)> = Vec::new();
        {
            let peers = self.shared.peers.lock();
            for msg in msgs {
                let to = msg.to;
                let snapshot = msg.msg_type == MessageType::MsgSnapshot as i32;
                let heartbeat = msg.msg_type == MessageType::MsgHeartbeat as i32;
                let queued = match peers.get(&to) {
                    Some(link) => link.enqueue(msg, snapshot),
                    None => {
                        tracing::debug!(peer = to, "dropping a raft message to an unknown peer");
                        false
                    }
                };
                if heartbeat {
                    heartbeats.push((to, queued));
                }
                if !queued {
                    refused.push((to, snapshot));
                }
            }
        }
        let mailbox = &self.shared.ctx.mailbox;
        for (to, queued) in heartbeats {
            if queued {
                mailbox.observer().heartbeat_sent(to);
            } else {
                mailbox.observer().heartbeat_send_failed();
            }
        }
        let mut reported: Vec<u64> = Vec::new();
        for (to, snapshot) in refused {
            if snapshot {
                mailbox.report_snapshot(to, false);
            }
            if !reported.contains(&to) {
                reported.push(to);
                mailbox.report_unreachable(to);
            }
        }
    }
}
