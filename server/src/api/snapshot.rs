//! Maintenance.Snapshot: a consistent backup of the whole store, streamed as etcd streams
//! one (`v3rpc/maintenance.go`): 32 KiB chunks of an etcd db file (bbolt, etcd's buckets:
//! `cairn_storage::etcd_db::EtcdExport`), each telling how many bytes remain after it,
//! then one last message whose blob is the SHA-256 of all the data. Concatenated, the
//! blobs are the file `etcdctl snapshot save` stores, which `etcdctl snapshot
//! status|restore`, etcd itself and `cairn snapshot status|restore` read.
//!
//! The data come from a read view of the backend taken once: applies and reads go on
//! while it is read, and it is scanned twice, on a blocking thread, never holding a
//! store lock: once for the layout of the file's pages, which gives the length etcd
//! announces in `remaining_bytes` (keys and value lengths only, no value copied or
//! checksummed), once to send the pages. Both scans bypass the backend's node cache, so
//! the writers keep theirs (`EtcdExport`). Memory stays bounded by one page (plus the
//! layout: about 1% of the data). A client that goes away stops the scan at the next
//! chunk; a view whose second scan does not match the first fails the stream with an
//! error instead of its checksum, so no client keeps a broken file.

use std::io::Write;
use std::sync::Arc;

use cairn_proto::etcdserverpb::{ResponseHeader, SnapshotResponse};
use cairn_storage::etcd_db::{EtcdExport, Sha256Writer};
use cairn_storage::Store;
use tokio::sync::mpsc;
use tonic::Status;

use crate::api::status::rpc_error;

/// etcd's chunk size (`snapshotSendBufferSize`).
const CHUNK: usize = 32 * 1024;

/// The channel a snapshot is streamed through.
pub type Chunks = mpsc::Sender<Result<SnapshotResponse, Status>>;

/// Sends a backup of `store` through `tx` (see the module docs); runs on a blocking thread.
/// `header` and `version` go on the first message. Errors are sent to the client too.
pub fn send_backup(store: &Store, header: ResponseHeader, version: &str, tx: &Chunks) {
    if let Err(e) = try_send_backup(store, header, version, tx) {
        if let Some(status) = e {
            tracing::warn!(error = %status.message(), "sending a snapshot failed");
            // the client may be gone too: then nobody is left to tell
            let _ = tx.blocking_send(Err(status));
        }
    }
}

/// `Err(None)`: the client went away.
fn try_send_backup(store: &Store, header: ResponseHeader, version: &str, tx: &Chunks) -> Result<(), Option<Status>> {
    let view = store.read_view().map_err(|e| Some(rpc_error(e)))?;
    let export = EtcdExport::plan(view.as_ref()).map_err(|e| Some(rpc_error(cairn_storage::Error::from(e))))?;
    let total = export.db_len();
    tracing::info!(bytes = total, "sending database snapshot to client");
    let sender = ChunkSender { tx, buf: Vec::with_capacity(CHUNK), sent: 0, total, first: Some((header, version.to_owned())) };
    let mut hashing = Sha256Writer::new(sender);
    match export.write(&mut hashing) {
        Ok(()) => {}
        Err(_) if tx.is_closed() => return Err(None),
        Err(e) => return Err(Some(rpc_error(cairn_storage::Error::from(e)))),
    }
    hashing.flush().map_err(|_| None)?;
    let (sha, sender) = hashing.finish();
    if sender.sent != total {
        return Err(Some(Status::internal(format!("cairn: snapshot changed while streamed: {} bytes, announced {total}", sender.sent))));
    }
    tracing::info!(bytes = total, "sending database sha256 checksum to client");
    let last = SnapshotResponse { remaining_bytes: 0, blob: sha.to_vec(), ..Default::default() };
    tx.blocking_send(Ok(last)).map_err(|_| None)
}

/// Cuts what is written into etcd's chunks and sends each.
struct ChunkSender<'a> {
    tx: &'a Chunks,
    buf: Vec<u8>,
    sent: u64,
    total: u64,
    first: Option<(ResponseHeader, String)>,
}

impl ChunkSender<'_> {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let blob = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.sent += blob.len() as u64;
        let (header, version) = self.first.take().map_or((None, String::new()), |(h, v)| (Some(h), v));
        let msg = SnapshotResponse { header, remaining_bytes: self.total.saturating_sub(self.sent), blob, version };
        if self.tx.blocking_send(Ok(msg)).is_err() {
            return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the snapshot client went away"));
        }
        Ok(())
    }
}

impl Write for ChunkSender<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

/// Starts streaming a backup of `store`; the returned receiver yields the messages.
pub fn start(store: Arc<Store>, header: ResponseHeader, version: &'static str) -> mpsc::Receiver<Result<SnapshotResponse, Status>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || send_backup(&store, header, version, &tx));
    rx
}
