//! The receiving side: [`PeerService`], the `cairnpb.Peer` gRPC service, which checks what
//! arrives and hands it to the local node's [`Mailbox`]. Everything here reads network input:
//! nothing panics, and what does not check out is refused or dropped.

use cairn_proto::cairnpb::peer_server::{Peer, PeerServer};
use cairn_proto::cairnpb::{PeerAck, PeerBatch, SnapshotAck, SnapshotChunk};
use raft::eraftpb::{Message, MessageType};
use prost::Message as _;
use raft_prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Mailbox;

/// The largest gRPC message a peer server decodes (and a peer client encodes).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

/// The default cap on the data of one snapshot a member accepts (8 GiB).
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 8 << 30;

/// Snapshot buffers are reserved up to this size at once; beyond it they grow as data
/// arrives, so a lying header cannot make us reserve gigabytes.
const MAX_RESERVE: u64 = 64 << 20;

/// Why peer traffic was refused. [`Status::from`] maps each to its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The sender belongs to another cluster (`FAILED_PRECONDITION`).
    #[error("cluster ID mismatch: this member is in cluster {ours:x}, the sender in cluster {theirs:x}")]
    ClusterMismatch {
        /// This member's cluster.
        ours: u64,
        /// The sender's cluster.
        theirs: u64,
    },
    /// The traffic is addressed to another member (`FAILED_PRECONDITION`).
    #[error("member ID mismatch: this member is {ours:x}, the traffic is for {to:x}")]
    WrongMember {
        /// This member's id.
        ours: u64,
        /// The addressee.
        to: u64,
    },
    /// A `Snapshot` call that ended before its header (`INVALID_ARGUMENT`).
    #[error("snapshot call without a header chunk")]
    NoSnapshotHeader,
    /// The header's message does not decode (`INVALID_ARGUMENT`).
    #[error("snapshot header message does not decode: {0}")]
    BadSnapshotMessage(#[source] raft_prost::DecodeError),
    /// The header's message is not a `MsgSnapshot` (`INVALID_ARGUMENT`).
    #[error("snapshot header holds a message of type {0}, not MsgSnapshot")]
    NotASnapshot(i32),
    /// The header's message names other members than the header (`INVALID_ARGUMENT`).
    #[error("snapshot header is from {header_from:x} to {header_to:x}, its message from {from:x} to {to:x}")]
    SnapshotAddressMismatch {
        /// The header's sender.
        header_from: u64,
        /// The header's addressee.
        header_to: u64,
        /// The message's sender.
        from: u64,
        /// The message's addressee.
        to: u64,
    },
    /// The announced data is above this member's cap (`RESOURCE_EXHAUSTED`).
    #[error("snapshot of {len} bytes is above this member's limit of {max} bytes")]
    SnapshotTooLarge {
        /// The announced length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// More or less data arrived than announced (`INVALID_ARGUMENT`).
    #[error("snapshot data of {received} bytes where {announced} were announced")]
    SnapshotSizeMismatch {
        /// The announced length.
        announced: u64,
        /// What arrived (so far, when too much).
        received: u64,
    },
    /// The local node stopped (`UNAVAILABLE`).
    #[error("raft node stopped")]
    NodeStopped,
}

impl From<ReceiveError> for Status {
    fn from(e: ReceiveError) -> Status {
        let message = e.to_string();
        match e {
            ReceiveError::ClusterMismatch { .. } | ReceiveError::WrongMember { .. } => {
                Status::failed_precondition(message)
            }
            ReceiveError::NoSnapshotHeader
            | ReceiveError::BadSnapshotMessage(_)
            | ReceiveError::NotASnapshot(_)
            | ReceiveError::SnapshotAddressMismatch { .. }
            | ReceiveError::SnapshotSizeMismatch { .. } => Status::invalid_argument(message),
            ReceiveError::SnapshotTooLarge { .. } => Status::resource_exhausted(message),
            ReceiveError::NodeStopped => Status::unavailable(message),
        }
    }
}

/// The `cairnpb.Peer` service of one member (see the `transport` module docs).
#[derive(Clone)]
pub struct PeerService {
    local_id: u64,
    cluster_id: u64,
    mailbox: Mailbox,
    max_snapshot_bytes: u64,
}

impl PeerService {
    /// The service of member `local_id` of cluster `cluster_id`, delivering to `mailbox` (the
    /// local node's) and refusing snapshots with more than `max_snapshot_bytes` of data
    /// ([`DEFAULT_MAX_SNAPSHOT_BYTES`] is etcd-like).
    pub fn new(local_id: u64, cluster_id: u64, mailbox: Mailbox, max_snapshot_bytes: u64) -> Self {
        PeerService { local_id, cluster_id, mailbox, max_snapshot_bytes }
    }

    /// The tonic server to mount on the peer listeners, decoding messages up to
    /// [`MAX_PEER_MESSAGE_BYTES`].
    pub fn into_server(self) -> PeerServer<PeerService> {
        PeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }

    /// Refuses traffic from another cluster or for another member.
    fn check(&self, cluster_id: u64, to: u64) -> Result<(), ReceiveError> {
        if cluster_id != self.cluster_id {
            return Err(ReceiveError::ClusterMismatch { ours: self.cluster_id, theirs: cluster_id });
        }
        if to != self.local_id {
            return Err(ReceiveError::WrongMember { ours: self.local_id, to });
        }
        Ok(())
    }

    /// Decodes one entry of a batch from `from`; `None` (logged) if it is to be dropped.
    fn accept(&self, from: u64, bytes: &[u8]) -> Option<Message> {
        let msg = match Message::decode(bytes) {
            Ok(msg) => msg,
            Err(error) => {
                tracing::debug!(from, %error, "dropping a peer message that does not decode");
                return None;
            }
        };
        if msg.from != from || msg.to != self.local_id {
            tracing::debug!(from, msg.from, msg.to, "dropping a peer message addressed unlike its batch");
            return None;
        }
        if msg.msg_type == MessageType::MsgSnapshot as i32 {
            tracing::debug!(from, "dropping a snapshot message sent on the batch stream");
            return None;
        }
        Some(msg)
    }
}

/// A snapshot message being received: the header's message and the data so far.
pub(super) struct Reassembly {
    msg: Message,
    announced: u64,
    data: Vec<u8>,
}

impl Reassembly {
    /// Starts from the header chunk, checked against `svc`.
    pub(super) fn start(svc: &PeerService, header: SnapshotChunk) -> Result<Self, ReceiveError> {
        svc.check(header.cluster_id, header.to)?;
        let mut msg = Message::decode(header.message.as_slice()).map_err(ReceiveError::BadSnapshotMessage)?;
        if msg.msg_type != MessageType::MsgSnapshot as i32 {
            return Err(ReceiveError::NotASnapshot(msg.msg_type));
        }
        if msg.from != header.from || msg.to != header.to {
            return Err(ReceiveError::SnapshotAddressMismatch {
                header_from: header.from,
                header_to: header.to,
                from: msg.from,
                to: msg.to,
            });
        }
        if header.data_len > svc.max_snapshot_bytes {
            return Err(ReceiveError::SnapshotTooLarge { len: header.data_len, max: svc.max_snapshot_bytes });
        }
        let reserve = usize::try_from(header.data_len.min(MAX_RESERVE)).unwrap_or(0);
        // data left in the header's message counts as the first piece
        let early = msg.snapshot.as_mut().map(|s| std::mem::take(&mut s.data)).unwrap_or_default();
        let mut started = Reassembly { msg, announced: header.data_len, data: Vec::with_capacity(reserve) };
        started.push(&early)?;
        started.push(&header.data)?;
        Ok(started)
    }

    /// Appends a piece of data; refuses more than was announced.
    pub(super) fn push(&mut self, piece: &[u8]) -> Result<(), ReceiveError> {
        let received = (self.data.len() as u64).saturating_add(piece.len() as u64);
        if received > self.announced {
            return Err(ReceiveError::SnapshotSizeMismatch { announced: self.announced, received });
        }
        self.data.extend_from_slice(piece);
        Ok(())
    }

    /// The message with its data back in place; refuses less than was announced.
    pub(super) fn finish(mut self) -> Result<Message, ReceiveError> {
        let received = self.data.len() as u64;
        if received != self.announced {
            return Err(ReceiveError::SnapshotSizeMismatch { announced: self.announced, received });
        }
        self.msg.snapshot.get_or_insert_with(Default::default).data = self.data;
        Ok(self.msg)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<PeerBatch>>) -> Result<Response<PeerAck>, Status> {
        let mut incoming = request.into_inner();
        let mut delivered = 0u64;
        while let Some(batch) = incoming.message().await? {
            if let Err(e) = self.check(batch.cluster_id, batch.to) {
                tracing::warn!(from = batch.from, error = %e, "refusing a peer stream");
                return Err(e.into());
            }
            let observer = self.mailbox.observer();
            observer.peer_received(batch.from, batch.encoded_len());
            for bytes in &batch.messages {
                let Some(msg) = self.accept(batch.from, bytes) else { continue };
                if msg.msg_type == MessageType::MsgHeartbeatResponse as i32 {
                    observer.heartbeat_answered(msg.from);
                }
                if !self.mailbox.deliver(msg) {
                    return Err(ReceiveError::NodeStopped.into());
                }
                delivered += 1;
            }
        }
        Ok(Response::new(PeerAck { delivered }))
    }

    async fn snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<SnapshotAck>, Status> {
        let mut incoming = request.into_inner();
        let header = incoming.message().await?.ok_or(ReceiveError::NoSnapshotHeader)?;
        let from = header.from;
        let mut snapshot = Reassembly::start(self, header).map_err(|e| {
            tracing::warn!(from, error = %e, "refusing a snapshot");
            e
        })?;
        while let Some(chunk) = incoming.message().await? {
            snapshot.push(&chunk.data)?;
        }
        let received = snapshot.announced;
        self.mailbox.observer().peer_received(from, usize::try_from(received).unwrap_or(usize::MAX));
        let msg = snapshot.finish()?;
        if !self.mailbox.deliver(msg) {
            return Err(ReceiveError::NodeStopped.into());
        }
        tracing::info!(from, bytes = received, "snapshot received");
        Ok(Response::new(SnapshotAck { received }))
    }
}
