//! [`Coalesce`]: the connection adapter that gathers the server's small writes into one
//! socket write per burst of work, as grpc-go's writer does (it flushes only when no more
//! frames are queued).
//!
//! hyper's HTTP/2 connection task writes and flushes every time it runs. A unary response
//! is finished by the request's own task, which wakes the connection task; tokio runs a task
//! woken that way next on the same worker (its "LIFO slot"), so when the Raft thread answers
//! a batch of puts at once, the connection task ran between every two of them and each
//! response went out in its own `writev` (1.1 per put at 64 clients on 8 connections,
//! BENCHMARKS.md "Write coalescing"). Each costs a syscall, a TCP segment over loopback or
//! the wire, and a wake-up of the client's reader.
//!
//! So a write here only copies the bytes into a buffer, and a flush is put off until the
//! worker thread runs out of ready tasks (`tokio::task::yield_now`'s deferred wake-up: the
//! runtime wakes deferred tasks when its queues are empty, after a zero-timeout poll for
//! I/O, before it would sleep; and at its regular maintenance, every few dozen tasks, so a
//! busy worker holds a flush back only that long). The other responses finished in that
//! burst are then in the buffer too, and one write sends them all. Wake-ups of the
//! connection task meanwhile (each stream's response wakes it) poll it, but its flush keeps
//! waiting for the deferred wake-up:
//!
//! ```text
//!  hyper/h2 ─► AuthorityFix ─► PingGuard ─► Coalesce ─► (TLS) ─► socket
//!              write: copy into the buffer (a large write with nothing buffered goes
//!                     straight through, uncopied)
//!              flush: the first time: ask for the deferred wake-up, Pending; once it
//!                     fired: write it all
//! ```
//!
//! A flush after a large write (one that went straight through) or with 8 KiB or more
//! buffered goes at once: the write is already large, and waiting would only hold back the
//! end of a big response (its last DATA frame and trailers) behind other work, which a few
//! clients reading large pages feel as latency (first pages of 500 keys at 8 clients ran at
//! 0.78–0.89× main's rate before this).
//!
//! When nothing joins a deferred flush (one client, one request at a time: there is
//! nothing to gather, and the wait costs a poll for I/O and a task wake-up), the next
//! flushes go at once, 1, then 3, 7, up to 15 of them while deferring keeps gaining
//! nothing; one that gathers a write makes every flush wait again.
//!
//! A flush completes only after every byte reached the inner stream, so nothing hyper
//! believes flushed is held back. (Yielding instead, to the back of the worker's run queue,
//! was measured too: it wakes the other worker each time, and sent and cost more.) The
//! buffer is freed once written, so an idle connection holds none.

use std::io;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A write at least this large, with nothing buffered, goes to the inner stream uncopied.
const DIRECT_BYTES: usize = 16 << 10;
/// Buffered bytes past which a write first sends what is buffered (a bound on the copy).
const MAX_BUFFERED: usize = 64 << 10;
/// Buffered bytes from which a flush goes at once.
const FLUSH_NOW_BYTES: usize = 8 << 10;
/// The most flushes sent at once after deferred flushes that gathered nothing.
const MAX_SKIP: u8 = 15;

/// A connection whose writes are sent in bursts (see the module docs).
pub struct Coalesce<IO> {
    io: IO,
    /// Bytes accepted from the writer and not yet written to `io`, from `sent` on.
    buf: Vec<u8>,
    /// How much of `buf` is already written.
    sent: usize,
    /// The deferred wake-up the flush under way waits for, once it asked for one.
    deferred: Option<Arc<DeferredWake>>,
    /// A write joined the buffer while the flush waited.
    joined: bool,
    /// A large write went straight through since the last flush.
    wrote_direct: bool,
    /// Flushes still to send at once, and how many the last miss granted (see the module
    /// docs).
    skip: u8,
    backoff: u8,
}

/// Wakes the connection's task and records that it did: the flush it held back may go.
struct DeferredWake {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for DeferredWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl<IO> Coalesce<IO> {
    /// Wraps a freshly accepted (and, for TLS, handshaken) connection.
    pub fn new(io: IO) -> Coalesce<IO> {
        Coalesce { io, buf: Vec::new(), sent: 0, deferred: None, joined: false, wrote_direct: false, skip: 0, backoff: 0 }
    }
}

impl<IO: AsyncWrite + Unpin> Coalesce<IO> {
    /// Writes everything buffered to `io`; `Pending` (with `io`'s waker registered) while
    /// the socket takes no more.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // freed, not kept: thousands of idle connections would each hold one
        self.buf = Vec::new();
        self.sent = 0;
        self.deferred = None;
        Poll::Ready(Ok(()))
    }

    /// Whether the deferred wake-up the flush waits for has fired; asks for one (and
    /// answers false) when none is pending. It stays fired until the drain ends, so a
    /// drain the socket holds up is not put off again.
    fn deferral_over(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(d) = &self.deferred {
            return d.fired.load(Ordering::Acquire);
        }
        let d = Arc::new(DeferredWake { fired: AtomicBool::new(false), task: cx.waker().clone() });
        let waker = Waker::from(d.clone());
        // registers `waker` with the worker's deferred list (outside a runtime: wakes it at
        // once) and answers Pending the first time it is polled
        let mut yielded = pin!(tokio::task::yield_now());
        let _pending = yielded.as_mut().poll(&mut Context::from_waker(&waker));
        self.deferred = Some(d);
        false
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesce<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesce<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.len() + len > MAX_BUFFERED || (len >= DIRECT_BYTES && !this.buf.is_empty()) {
            std::task::ready!(this.poll_drain(cx))?;
        }
        if len >= DIRECT_BYTES {
            this.wrote_direct = true;
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        this.joined |= this.deferred.is_some();
        this.buf.reserve(len);
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let wrote_direct = std::mem::take(&mut this.wrote_direct);
        if this.buf.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if this.deferred.is_none() && (wrote_direct || this.buf.len() >= FLUSH_NOW_BYTES) {
            // large enough already (see the module docs)
        } else if this.deferred.is_none() && this.skip > 0 {
            this.skip -= 1;
        } else if !this.deferral_over(cx) {
            return Poll::Pending;
        }
        let deferred = this.deferred.is_some();
        std::task::ready!(this.poll_drain(cx))?;
        if deferred {
            this.backoff = if this.joined { 0 } else { (this.backoff * 2 + 1).min(MAX_SKIP) };
            this.skip = this.backoff;
            this.joined = false;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Coalesce<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
