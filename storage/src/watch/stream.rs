//! [`WatchStream`]: one client's watch stream (one gRPC Watch call), the handle through
//! which the server feeds it requests and takes its responses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};

use super::hub::CreateCtx;
use super::queue::{Refusal, StreamQueue};
use super::response;
use super::Shared;

/// Items taken from the queue per [`WatchStream::next`] call.
const POP_BATCH: usize = 256;

/// How many answers to requests (created, cancelled, progress) may wait for the client
/// before [`WatchStream::accepting`] holds the next request back.
pub const MAX_UNANSWERED: usize = 1024;

/// One watch stream. Every request method returns at once: answers come, in order,
/// from [`WatchStream::next`]. Dropping the handle (or [`WatchStream::close`]) removes the
/// stream and all its watches.
pub struct WatchStream {
    pub(super) shared: Arc<Shared>,
    pub(super) slot: u32,
    pub(super) queue: Arc<StreamQueue>,
    pub(super) closed: AtomicBool,
}

impl WatchStream {
    fn open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// A create request (etcd's `WatchCreateRequest`, unchanged from the client). Its
    /// `created` answer (or refusal) is queued before anything else of the watch.
    pub fn create(&self, req: &WatchCreateRequest) {
        if !self.open() {
            return;
        }
        let ctx = CreateCtx { compact_rev: self.shared.store.compact_revision() };
        let needs_catchup = self.shared.state.lock().create_locked(self.slot, req, &ctx);
        if needs_catchup {
            self.shared.wake_catchup();
        }
    }

    /// Refuses a create request the server's access control denied, in order with the
    /// stream's other answers (etcd: a created-and-canceled response, watch ID -1).
    pub fn refuse_create(&self) {
        if self.open() {
            self.shared.state.lock().refuse_locked(self.slot, Refusal::PermissionDenied);
        }
    }

    /// A cancel request; unknown IDs are ignored, as etcd does.
    pub fn cancel(&self, watch_id: i64) {
        if self.open() {
            self.shared.state.lock().cancel_locked(self.slot, watch_id);
        }
    }

    /// A RequestProgress: answered (watch_id −1) once every watch of the stream has been
    /// sent every event up to a revision at least as new as the current one (see
    /// `progress.rs` for the exact invariant).
    pub fn request_progress(&self) {
        if self.open() {
            let committed = self.shared.store.revision();
            self.shared.state.lock().request_progress_locked(self.slot, committed);
        }
    }

    /// The periodic progress tick (`--watch-progress-notify-interval`); the caller owns
    /// the clock.
    pub fn progress_tick(&self) {
        if self.open() {
            self.shared.state.lock().tick_locked(self.slot);
        }
    }

    /// Waits until the stream takes another request: while [`MAX_UNANSWERED`] answers
    /// wait to be sent, the caller should not read the client's next request, so that
    /// HTTP/2 flow control slows a client that sends faster than it reads (the queue of
    /// answers stays bounded). Returns at once once the stream is closed.
    pub async fn accepting(&self) {
        self.queue.control_room(MAX_UNANSWERED).await
    }

    /// The next responses, in order; waits until there are some. `None` once the stream
    /// is closed.
    pub async fn next(&self) -> Option<Vec<WatchResponse>> {
        loop {
            self.queue.ready().await;
            match self.take() {
                Some(out) if !out.is_empty() => return Some(out),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// The responses ready now (possibly none); `None` once the stream is closed.
    pub fn try_next(&self) -> Option<Vec<WatchResponse>> {
        self.take()
    }

    fn take(&self) -> Option<Vec<WatchResponse>> {
        let (items, wake, closed) = self.queue.pop(POP_BATCH);
        if wake {
            self.shared.wake_catchup();
        }
        if closed && items.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        response::build(items, &self.shared.store, self.shared.cfg.max_request_bytes, &mut out);
        Some(out)
    }

    /// Items waiting in the stream's queue (for tests and stats).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Removes the stream and its watches; later calls do nothing and `next` ends.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.shared.state.lock().close_stream_locked(self.slot);
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.close();
    }
}
