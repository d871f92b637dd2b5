//! [`PingGuard`]: the connection adapter that enforces `--grpc-keepalive-min-time`
//! (rules in [`crate::net::ping_policy`]). Only plain-text client listeners pass it a
//! policy (`net/serve.rs`: etcd runs no keepalive policy for https clients); elsewhere
//! it forwards bytes untouched.
//!
//! h2 answers a client's PINGs inside its codec, and neither h2 nor hyper lets a server
//! see, count or refuse them. So the guard sits between the socket (after TLS) and hyper's
//! HTTP/2 (under [`crate::net::authority::AuthorityFix`]) and watches both directions'
//! frame headers — never their payloads, never changing a byte:
//!
//! ```text
//!  socket ─► TLS ─► Coalesce ─► PingGuard ─► AuthorityFix ─► hyper/h2
//!                               read:  preface, then frame headers: PING, HEADERS (stream opens),
//!                                      RST_STREAM
//!                               write: frame headers: HEADERS/DATA (strike reset, END_STREAM),
//!                                      RST_STREAM; frame boundaries, where a GOAWAY can go
//! ```
//!
//! On the strike too many, the bytes that carried it still reach hyper, which answers the
//! PING as grpc-go does. The guard then hands hyper no more bytes; at hyper's next flush
//! (or, if it has nothing to flush, its next read) and at a frame boundary of the server's
//! output, it writes grpc-go's GOAWAY after what hyper wrote, flushes and shuts the
//! connection down. From then on hyper reads end-of-file and its writes fail, so it drops
//! the connection and its streams. A connection that does not start with
//! HTTP/2's preface (HTTP/1 requests: probes, scrapers) is passed through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tracing::warn;

use crate::net::ping_policy::{ConnPings, PingPolicy};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose client's pings are held to a [`PingPolicy`].
pub struct PingGuard<IO> {
    io: IO,
    /// `None`: nothing to enforce (no policy, or not HTTP/2).
    state: Option<Box<Guarded>>,
}

struct Guarded {
    pings: ConnPings,
    /// Preface bytes still expected from the client.
    preface_left: usize,
    phase: Phase,
    /// The reader parked while the GOAWAY waits for hyper to finish a frame.
    reader: Option<Waker>,
    /// hyper has had its turn to flush since the GOAWAY became due.
    read_deferred: bool,
}

enum Phase {
    Serving,
    /// The GOAWAY's bytes not written yet.
    GoAway(Vec<u8>),
    Flushing,
    ShuttingDown,
    Closed,
}

impl<IO> PingGuard<IO> {
    /// Wraps a freshly accepted (and, for TLS, handshaken) connection; `None` passes
    /// everything through.
    pub fn new(io: IO, policy: Option<PingPolicy>) -> PingGuard<IO> {
        let state = policy.map(|policy| {
            Box::new(Guarded {
                pings: ConnPings::new(policy),
                preface_left: PREFACE.len(),
                phase: Phase::Serving,
                reader: None,
                read_deferred: false,
            })
        });
        PingGuard { io, state }
    }
}

impl Guarded {
    /// Client bytes read; false if the connection turned out not to be HTTP/2.
    fn received(&mut self, mut bytes: &[u8]) -> bool {
        if self.preface_left > 0 {
            let done = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(bytes.len());
            if bytes[..n] != PREFACE[done..done + n] {
                return false;
            }
            self.preface_left -= n;
            bytes = &bytes[n..];
        }
        if bytes.is_empty() || !matches!(self.phase, Phase::Serving) {
            return true;
        }
        if self.pings.received(bytes, Instant::now()) {
            warn!("closing a client connection: too many pings (GOAWAY ENHANCE_YOUR_CALM too_many_pings)");
            self.phase = Phase::GoAway(self.pings.goaway());
        }
        true
    }

    /// True while the GOAWAY waits for hyper to finish writing a frame.
    fn mid_frame(&self) -> bool {
        matches!(self.phase, Phase::GoAway(_)) && !self.pings.outbound.at_boundary()
    }
}

impl<IO: AsyncWrite + Unpin> PingGuard<IO> {
    /// Moves the GOAWAY and the shutdown along; `Ready` once the connection is closed,
    /// `Pending` (with the waker registered by `io`) while the socket is not ready. The
    /// caller makes sure hyper is not half-way through a frame ([`Guarded::mid_frame`]).
    fn poll_close(io: &mut IO, g: &mut Guarded, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut g.phase {
                Phase::Serving | Phase::Closed => return Poll::Ready(Ok(())),
                Phase::GoAway(bytes) => {
                    let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, bytes))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    bytes.drain(..n);
                    if bytes.is_empty() {
                        g.phase = Phase::Flushing;
                    }
                }
                Phase::Flushing => {
                    std::task::ready!(Pin::new(&mut *io).poll_flush(cx))?;
                    g.phase = Phase::ShuttingDown;
                }
                Phase::ShuttingDown => {
                    std::task::ready!(Pin::new(&mut *io).poll_shutdown(cx))?;
                    g.phase = Phase::Closed;
                    if let Some(reader) = g.reader.take() {
                        reader.wake();
                    }
                }
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "connection closed: too many pings")
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for PingGuard<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(g) = this.state.as_deref_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        match g.phase {
            Phase::Serving => {}
            // hyper gets one turn to write and flush what it has queued (the PING's ACK):
            // its flush sends the GOAWAY; if it does not flush, the next read does
            Phase::GoAway(_) if !g.read_deferred || g.mid_frame() => {
                g.read_deferred = true;
                if g.mid_frame() {
                    g.reader = Some(cx.waker().clone());
                } else {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
            // then hyper reads end-of-file
            _ => {
                std::task::ready!(Self::poll_close(&mut this.io, g, cx))?;
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if !g.received(&buf.filled()[before..]) {
            this.state = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> PingGuard<IO> {
    /// Writes hyper's bytes (`bufs`, of which `write` writes some) while the connection is
    /// open, following their frames.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        write: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(g) = self.state.as_deref_mut() else {
            return write(Pin::new(&mut self.io), cx);
        };
        if !matches!(g.phase, Phase::Serving | Phase::GoAway(_)) {
            std::task::ready!(Self::poll_close(&mut self.io, g, cx))?;
            return Poll::Ready(Err(closed()));
        }
        let n = std::task::ready!(write(Pin::new(&mut self.io), cx))?;
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            g.pings.sent(&b[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        if g.pings.outbound.at_boundary() {
            if let Some(reader) = g.reader.take() {
                reader.wake();
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PingGuard<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, &[io::IoSlice::new(buf)], |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, bufs, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(g) = this.state.as_deref_mut() {
            // the GOAWAY goes after what hyper wrote; mid-frame (hyper flushes whole frames,
            // so not expected) it waits for the next flush or read
            if !matches!(g.phase, Phase::Serving) && !g.mid_frame() {
                return Self::poll_close(&mut this.io, g, cx);
            }
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(g) = this.state.as_deref_mut() {
            if g.mid_frame() {
                // hyper gives up on the frame it was writing: no GOAWAY can follow it
                g.phase = Phase::ShuttingDown;
            }
            if !matches!(g.phase, Phase::Serving) {
                return Self::poll_close(&mut this.io, g, cx);
            }
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for PingGuard<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
#[path = "ping_guard_tests.rs"]
mod tests;
