//! `--grpc-keepalive-min-time` as grpc-go enforces it on etcd's client connections: the
//! rule itself ([`PingStrikes`]) and the HTTP/2 frame-header tracking it needs
//! ([`FrameScanner`]), both free of I/O; [`crate::net::ping_guard`] feeds them a
//! connection's bytes.
//!
//! grpc-go's rule (`internal/transport/http2_server.go`, `handlePing`), which etcd sets up
//! with `MinTime: --grpc-keepalive-min-time, PermitWithoutStream: false`:
//! - every PING from the client (not a PING ACK) is answered, and its arrival time kept;
//! - if the server has written response HEADERS (headers or trailers) or a DATA frame since
//!   the previous PING, the strikes go back to 0 and this PING is not judged;
//! - otherwise the PING is a strike if it came sooner than `MinTime` after the previous one
//!   while the connection has an active stream, or sooner than 2 hours after it with none
//!   (a client must not keep an idle connection alive with pings). The first PING of a
//!   connection is never a strike;
//! - on the third strike (more than 2) the server sends GOAWAY ENHANCE_YOUR_CALM with debug
//!   data "too_many_pings" and closes the connection.
//!
//! A stream is active from the client's HEADERS that opens it until the server's frame that
//! ends it (END_STREAM on its trailers or last DATA) or a RST_STREAM either way, as grpc-go
//! counts `activeStreams` (a client's half-close does not end it).
//!
//! With `--grpc-keepalive-min-time 0` grpc-go applies its own default, 5 minutes.
//!
//! Worked example, min-time 1 s, one open Watch stream with no traffic:
//!
//! ```text
//!  t=0.00 PING  first ever            strikes 0
//!  t=0.05 PING  0.05 s < 1 s           strikes 1
//!  t=0.10 PING                         strikes 2
//!        (server sends a watch event: DATA → reset pending)
//!  t=0.15 PING  reset: not judged      strikes 0
//!  t=0.20 PING                         strikes 1
//!  t=0.25 PING                         strikes 2
//!  t=0.30 PING                         strikes 3 > 2 → GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
//! ```

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// grpc-go's `maxPingStrikes`: the connection closes on the strike after this many.
const MAX_PING_STRIKES: u8 = 2;
/// grpc-go's `defaultPingTimeout`: the least time between pings on a connection without
/// active streams.
const IDLE_MIN_TIME: Duration = Duration::from_secs(2 * 3600);
/// grpc-go's `defaultKeepalivePolicyMinTime`, used when the flag is 0.
const GRPC_DEFAULT_MIN_TIME: Duration = Duration::from_secs(5 * 60);

/// HTTP/2 frame types and flags this module looks at (RFC 9113 §6).
pub(crate) const FRAME_HEADER_LEN: usize = 9;
pub(crate) const TYPE_DATA: u8 = 0x0;
pub(crate) const TYPE_HEADERS: u8 = 0x1;
pub(crate) const TYPE_RST_STREAM: u8 = 0x3;
pub(crate) const TYPE_PING: u8 = 0x6;
pub(crate) const TYPE_GOAWAY: u8 = 0x7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const PING_PAYLOAD_LEN: usize = 8;
/// RFC 9113 §7: ENHANCE_YOUR_CALM.
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// grpc-go's debug data on the GOAWAY.
pub(crate) const TOO_MANY_PINGS: &[u8] = b"too_many_pings";

/// The enforcement policy of the client listeners (`--grpc-keepalive-min-time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPolicy {
    min_time: Duration,
}

impl PingPolicy {
    /// The policy for `--grpc-keepalive-min-time` = `min_time` (0: grpc-go's 5 minutes).
    pub fn new(min_time: Duration) -> PingPolicy {
        let min_time = if min_time.is_zero() { GRPC_DEFAULT_MIN_TIME } else { min_time };
        PingPolicy { min_time }
    }

    /// The least time between a client's pings while it has an active stream.
    pub fn min_time(&self) -> Duration {
        self.min_time
    }
}

/// One connection's ping strikes.
#[derive(Debug)]
pub(crate) struct PingStrikes {
    policy: PingPolicy,
    last_ping: Option<Instant>,
    strikes: u8,
    /// The server sent HEADERS or DATA since the last PING.
    reset: bool,
}

impl PingStrikes {
    pub(crate) fn new(policy: PingPolicy) -> PingStrikes {
        PingStrikes { policy, last_ping: None, strikes: 0, reset: false }
    }

    /// The server wrote a HEADERS or DATA frame.
    pub(crate) fn on_headers_or_data_sent(&mut self) {
        self.reset = true;
    }

    /// A PING (not an ACK) arrived at `now`; true if it is one strike too many.
    pub(crate) fn on_ping(&mut self, now: Instant, active_streams: bool) -> bool {
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.reset) {
            self.strikes = 0;
            return false;
        }
        let min_time = if active_streams { self.policy.min_time } else { IDLE_MIN_TIME };
        if last.is_some_and(|last| now.saturating_duration_since(last) < min_time) {
            self.strikes = self.strikes.saturating_add(1);
        }
        self.strikes > MAX_PING_STRIKES
    }
}

/// A frame header, as far as this module cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    pub(crate) len: usize,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream_id: u32,
}

impl FrameHead {
    fn parse(h: &[u8; FRAME_HEADER_LEN]) -> FrameHead {
        FrameHead {
            len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        }
    }
}

/// Follows the frame boundaries of one direction of an HTTP/2 connection (after the
/// client's preface), reporting each frame header. It costs one small copy per frame
/// header and nothing per payload byte.
#[derive(Debug, Default)]
pub(crate) struct FrameScanner {
    header: [u8; FRAME_HEADER_LEN],
    /// Bytes of `header` collected (0 between frames).
    have: usize,
    /// Payload bytes of the current frame not seen yet.
    remaining: usize,
}

impl FrameScanner {
    /// Takes the next bytes of the direction, calling `on_frame` for each complete header.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                self.remaining -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER_LEN {
                self.have = 0;
                let head = FrameHead::parse(&self.header);
                self.remaining = head.len;
                on_frame(head);
            }
        }
    }

    /// True between two frames: bytes written now start a frame of their own.
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// What one connection's frames mean for the policy: both directions' boundaries, the
/// active streams, the strikes.
#[derive(Debug)]
pub(crate) struct ConnPings {
    strikes: PingStrikes,
    /// Client-to-server frames (after the preface).
    pub(crate) inbound: FrameScanner,
    /// Server-to-client frames.
    pub(crate) outbound: FrameScanner,
    /// Streams the client opened and the server has not ended.
    active: HashSet<u32>,
    /// The highest stream id the client opened (GOAWAY's last-stream-id).
    max_stream_id: u32,
}

impl ConnPings {
    pub(crate) fn new(policy: PingPolicy) -> ConnPings {
        ConnPings {
            strikes: PingStrikes::new(policy),
            inbound: FrameScanner::default(),
            outbound: FrameScanner::default(),
            active: HashSet::new(),
            max_stream_id: 0,
        }
    }

    /// Client bytes (after the preface) received at `now`; true once the client pinged
    /// too often.
    pub(crate) fn received(&mut self, bytes: &[u8], now: Instant) -> bool {
        let mut too_many = false;
        let (strikes, active, max_stream_id) = (&mut self.strikes, &mut self.active, &mut self.max_stream_id);
        self.inbound.feed(bytes, |f| match f.kind {
            TYPE_PING if f.flags & FLAG_ACK == 0 && f.stream_id == 0 && f.len == PING_PAYLOAD_LEN => {
                too_many |= strikes.on_ping(now, !active.is_empty());
            }
            TYPE_HEADERS if f.stream_id > *max_stream_id => {
                *max_stream_id = f.stream_id;
                active.insert(f.stream_id);
            }
            TYPE_RST_STREAM => {
                active.remove(&f.stream_id);
            }
            _ => {}
        });
        too_many
    }

    /// Server bytes written to the client.
    pub(crate) fn sent(&mut self, bytes: &[u8]) {
        let (strikes, active) = (&mut self.strikes, &mut self.active);
        self.outbound.feed(bytes, |f| match f.kind {
            TYPE_HEADERS | TYPE_DATA => {
                strikes.on_headers_or_data_sent();
                if f.flags & FLAG_END_STREAM != 0 {
                    active.remove(&f.stream_id);
                }
            }
            TYPE_RST_STREAM => {
                active.remove(&f.stream_id);
            }
            _ => {}
        });
    }

    /// The GOAWAY frame grpc-go sends: ENHANCE_YOUR_CALM, "too_many_pings".
    pub(crate) fn goaway(&self) -> Vec<u8> {
        let len = 8 + TOO_MANY_PINGS.len();
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + len);
        frame.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[TYPE_GOAWAY, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&self.max_stream_id.to_be_bytes());
        frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        frame.extend_from_slice(TOO_MANY_PINGS);
        frame
    }
}

#[cfg(test)]
#[path = "ping_policy_tests.rs"]
pub(crate) mod tests;
