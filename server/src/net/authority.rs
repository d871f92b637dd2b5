//! Tolerating the malformed `:authority` values etcd's own clients send.
//!
//! grpc-go puts its dial target's endpoint into HTTP/2's `:authority` pseudo-header, and
//! several etcd clients make that something that is not an authority:
//! - etcdctl 3.4's per-endpoint commands (`endpoint status`, `endpoint health`) dial
//!   `passthrough:///http://127.0.0.1:2379`, sending `http://127.0.0.1:2379`;
//! - clientv3 3.5.0 sends `#initially=[https://a:2379;https://b:2379]`, and up to 3.5.9
//!   still does with several endpoints (etcd issues #13192, PR #16324) — which is what
//!   kube-apiserver built on those clients sends with several `--etcd-servers`.
//!
//! etcd (grpc-go) ignores the value; hyper's HTTP/2 (`h2`) rejects such a request with
//! RST_STREAM(PROTOCOL_ERROR) before any service sees it, and has no option to relax that.
//! So [`AuthorityFix`] sits between the socket (after TLS) and hyper and rewrites the
//! client's header blocks:
//!
//! ```text
//!  client bytes ─► preface ─► frame header ─┬─ HEADERS/CONTINUATION: buffer the whole block,
//!                                           │   HPACK-decode it (our decoder mirrors the
//!                                           │   client's dynamic table), check :authority
//!                                           └─ any other frame: copied through unchanged
//! ```
//!
//! A client puts one authority on every request of a connection: grpc-go (and tonic, and
//! grpc-java) takes it from the channel's dial target, fixed for the channel's life. So the
//! first header block that carries an `:authority` decides for the whole connection:
//! - valid: that block and everything after it go through untouched and unparsed (the
//!   reads then go straight into hyper's buffer). Decoding every block of every connection
//!   cost about a tenth of the server's CPU per single-key range at 64 clients (BENCHMARKS.md
//!   "The authority check, once per connection"). A client that changed to a bad authority
//!   later on the same connection would get hyper's RST_STREAM for those requests, as with
//!   no fix at all;
//! - invalid: from that block on, every header block of the connection is re-encoded with
//!   literal fields only ("without indexing"), so hyper's dynamic table is never referenced
//!   again and cannot get out of step. The bad value is replaced by the `host:port` found
//!   inside it, or dropped.
//!
//! Anything this parser does not understand switches it off for the connection and is
//! passed through for hyper to judge. Server-to-client bytes are never touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use httlib_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tracing::debug;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE; the server never announces a larger one.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// HTTP/2's default SETTINGS_HEADER_TABLE_SIZE, which the server keeps.
const HEADER_TABLE_SIZE: u32 = 4_096;
/// Frame payloads at least this large are read straight into hyper's buffer.
const DIRECT_READ_MIN: usize = 16 * 1024;
/// Bytes read from the socket at a time on the buffered path.
const READ_CHUNK: usize = 16 * 1024;
/// A header block larger than this is passed through for hyper to refuse.
const MAX_HEADER_BLOCK: usize = 1 << 20;

enum State {
    /// Waiting for the 24-byte connection preface.
    Preface,
    /// Waiting for the next 9-byte frame header.
    FrameHeader,
    /// Copying the rest of a frame that is not part of a header block.
    Passthrough { remaining: usize },
    /// Collecting a header block that continues in CONTINUATION frames.
    Continuation(PendingBlock),
    /// Not parsing any more: everything is passed through.
    Disabled,
}

/// A header block being collected.
struct PendingBlock {
    /// The frames exactly as received.
    original: BytesMut,
    stream_id: u32,
    /// END_STREAM from the HEADERS frame.
    end_stream: bool,
    /// The HEADERS frame's priority fields, if it had them.
    priority: Option<[u8; 5]>,
    /// The HPACK fragments, padding removed.
    block: Vec<u8>,
}

/// A client connection whose HTTP/2 header blocks get a valid `:authority`.
pub struct AuthorityFix<IO> {
    io: IO,
    /// Client bytes read and not yet parsed.
    raw: BytesMut,
    /// Parsed bytes ready for hyper.
    ready: BytesMut,
    state: State,
    decoder: Decoder<'static>,
    /// True once a block was re-encoded: from then on all are.
    rewriting: bool,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps a freshly accepted (and, for TLS, handshaken) connection.
    pub fn new(io: IO) -> AuthorityFix<IO> {
        AuthorityFix {
            io,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            state: State::Preface,
            decoder: Decoder::with_dynamic_size(HEADER_TABLE_SIZE),
            rewriting: false,
            eof: false,
        }
    }

    /// Parses as much of `raw` as is complete, moving the result to `ready`.
    fn process(&mut self) {
        loop {
            match std::mem::replace(&mut self.state, State::Disabled) {
                State::Disabled => {
                    self.ready.extend_from_slice(&self.raw.split());
                    return;
                }
                State::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        continue; // Disabled: not HTTP/2 with prior knowledge.
                    }
                    if n < PREFACE.len() {
                        self.state = State::Preface;
                        return;
                    }
                    self.ready
                        .extend_from_slice(&self.raw.split_to(PREFACE.len()));
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    let Some(header) = FrameHeader::parse(&self.raw) else {
                        self.state = State::FrameHeader;
                        return;
                    };
                    if header.kind != TYPE_HEADERS {
                        // Not a header block (a stray CONTINUATION included: hyper rejects it).
                        self.ready
                            .extend_from_slice(&self.raw.split_to(FRAME_HEADER_LEN));
                        self.state = State::Passthrough {
                            remaining: header.len,
                        };
                        continue;
                    }
                    if self.raw.len() < FRAME_HEADER_LEN + header.len {
                        self.state = State::FrameHeader;
                        return;
                    }
                    let frame = self.raw.split_to(FRAME_HEADER_LEN + header.len);
                    match PendingBlock::start(&header, frame) {
                        Ok(pending) if header.flags & FLAG_END_HEADERS != 0 => {
                            self.state = State::FrameHeader;
                            self.finish(pending);
                        }
                        Ok(pending) => self.state = State::Continuation(pending),
                        // Malformed padding or priority: hyper rejects the frame.
                        Err(frame) => self.disable_with(&frame),
                    }
                }
                State::Passthrough { remaining } => {
                    let n = remaining.min(self.raw.len());
                    self.ready.extend_from_slice(&self.raw.split_to(n));
                    if n < remaining {
                        self.state = State::Passthrough {
                            remaining: remaining - n,
                        };
                        return;
                    }
                    self.state = State::FrameHeader;
                }
                State::Continuation(mut pending) => {
                    let Some(header) = FrameHeader::parse(&self.raw) else {
                        self.state = State::Continuation(pending);
                        return;
                    };
                    if header.kind != TYPE_CONTINUATION
                        || header.stream_id != pending.stream_id
                        || pending.block.len() + header.len > MAX_HEADER_BLOCK
                    {
                        self.disable_with(&pending.original);
                        continue;
                    }
                    if self.raw.len() < FRAME_HEADER_LEN + header.len {
                        self.state = State::Continuation(pending);
                        return;
                    }
                    let frame = self.raw.split_to(FRAME_HEADER_LEN + header.len);
                    pending.block.extend_from_slice(&frame[FRAME_HEADER_LEN..]);
                    pending.original.extend_from_slice(&frame);
                    if header.flags & FLAG_END_HEADERS != 0 {
                        self.state = State::FrameHeader;
                        self.finish(pending);
                    } else {
                        self.state = State::Continuation(pending);
                    }
                }
            }
        }
    }

    /// Passes `original` and everything after it through unparsed.
    fn disable_with(&mut self, original: &[u8]) {
        debug!("HTTP/2 authority fix disabled for this connection: unexpected framing");
        self.ready.extend_from_slice(original);
        self.state = State::Disabled;
    }

    /// Decodes a complete header block and emits it, original or re-encoded.
    fn finish(&mut self, pending: PendingBlock) {
        let mut fields = Vec::with_capacity(16);
        let mut block = pending.block.clone(); // the decoder consumes its input
        if let Err(e) = self.decoder.decode(&mut block, &mut fields) {
            debug!(error = ?e, "HTTP/2 authority fix disabled for this connection: HPACK error");
            self.disable_with(&pending.original);
            return;
        }
        let invalid = fields.iter().any(|(name, value, _)| {
            name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err()
        });
        if !invalid && !self.rewriting {
            self.ready.extend_from_slice(&pending.original);
            if fields.iter().any(|(name, _, _)| name == b":authority") {
                // The connection's authority is valid: nothing more to check (module docs).
                self.state = State::Disabled;
            }
            return;
        }
        if invalid && !self.rewriting {
            debug!("rewriting a malformed HTTP/2 :authority for the rest of this connection");
        }
        self.rewriting = true;
        block.clear();
        block.reserve(pending.block.len() * 2);
        for (name, value, _) in &fields {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                if let Some(fixed) = salvage_authority(value) {
                    encode_literal(&mut block, name, fixed);
                }
            } else {
                encode_literal(&mut block, name, value);
            }
        }
        write_header_frames(&mut self.ready, &pending, &block);
    }
}

struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let h = buf.get(..FRAME_HEADER_LEN)?;
        Some(FrameHeader {
            len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }
}

impl PendingBlock {
    /// Starts a block from a complete HEADERS frame; gives the frame back if its padding or
    /// priority fields do not fit in it.
    fn start(header: &FrameHeader, frame: BytesMut) -> Result<PendingBlock, BytesMut> {
        let Some((priority, block)) = Self::fields(header, &frame[FRAME_HEADER_LEN..]) else {
            return Err(frame);
        };
        Ok(PendingBlock {
            block: block.to_vec(),
            original: frame,
            stream_id: header.stream_id,
            end_stream: header.flags & FLAG_END_STREAM != 0,
            priority,
        })
    }

    /// Splits a HEADERS payload into its priority fields and header block fragment.
    fn fields<'a>(
        header: &FrameHeader,
        mut payload: &'a [u8],
    ) -> Option<(Option<[u8; 5]>, &'a [u8])> {
        if header.flags & FLAG_PADDED != 0 {
            let pad = usize::from(*payload.first()?);
            payload = payload.get(1..payload.len().checked_sub(pad)?)?;
        }
        let mut priority = None;
        if header.flags & FLAG_PRIORITY != 0 {
            priority = Some(payload.get(..5)?.try_into().ok()?);
            payload = &payload[5..];
        }
        Some((priority, payload))
    }
}

/// The `host[:port]` inside a malformed authority such as `http://h:1` or
/// `#initially=[https://h:1;https://g:2]`, if there is a valid one.
fn salvage_authority(value: &[u8]) -> Option<&[u8]> {
    let start = value
        .windows(3)
        .position(|w| w == b"://")
        .map_or(0, |i| i + 3);
    let rest = &value[start..];
    let bracketed = rest.first() == Some(&b'[');
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#' | b';' | b',') || (b == b']' && !bracketed))
        .unwrap_or(rest.len());
    let candidate = &rest[..end];
    (!candidate.is_empty() && http::uri::Authority::try_from(candidate).is_ok())
        .then_some(candidate)
}

/// HPACK "literal header field without indexing, new name", plain (non-Huffman) strings.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    // Length as an HPACK integer with a 7-bit prefix; the H bit (0x80) stays clear.
    let mut len = s.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            out.push((len % 0x80) as u8 | 0x80);
            len /= 0x80;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

/// Writes `block` as one HEADERS frame and as many CONTINUATION frames as needed.
fn write_header_frames(out: &mut BytesMut, pending: &PendingBlock, block: &[u8]) {
    let priority_len = if pending.priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(MAX_FRAME_PAYLOAD - priority_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = if pending.end_stream {
        FLAG_END_STREAM
    } else {
        0
    };
    if pending.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    put_frame_header(
        out,
        first.len() + priority_len,
        TYPE_HEADERS,
        flags,
        pending.stream_id,
    );
    if let Some(p) = pending.priority {
        out.put_slice(&p);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame_header(
            out,
            chunk.len(),
            TYPE_CONTINUATION,
            flags,
            pending.stream_id,
        );
        out.put_slice(chunk);
        rest = tail;
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // An incomplete frame at EOF goes to hyper as it is.
                if !this.raw.is_empty() {
                    this.ready = this.raw.split();
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            // Fast path: large frame payloads and disabled connections go straight to the
            // caller. Small payloads take the buffered path below, whose one read may carry
            // many frames: reading exactly one small payload per call would multiply syscalls.
            if this.raw.is_empty() {
                let limit = match this.state {
                    State::Disabled => Some(buf.remaining()),
                    State::Passthrough { remaining } if remaining >= DIRECT_READ_MIN => {
                        Some(remaining.min(buf.remaining()))
                    }
                    _ => None,
                };
                if let Some(limit) = limit {
                    let mut sub = buf.take(limit);
                    std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut sub))?;
                    let n = sub.filled().len();
                    // SAFETY: `sub` is a window on `buf`'s unfilled part, and `n` bytes of it
                    // were initialised and filled by the read above.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if let State::Passthrough { remaining } = &mut this.state {
                        *remaining -= n;
                        if *remaining == 0 {
                            this.state = State::FrameHeader;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(read.filled());
                this.process();
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
