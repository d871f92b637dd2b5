use super::*;
use proptest::prelude::*;

/// One HTTP/2 frame (also used by `ping_guard`'s tests).
pub(crate) fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ping() -> Vec<u8> {
    frame(TYPE_PING, 0, 0, &[7; 8])
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn conn(min_time: Duration) -> ConnPings {
    ConnPings::new(PingPolicy::new(min_time))
}

#[test]
fn the_fourth_early_ping_with_an_open_stream_is_too_many() {
    let t0 = Instant::now();
    let mut c = conn(Duration::from_secs(1));
    assert!(!c.received(&frame(TYPE_HEADERS, 0x4, 1, b"h"), t0));
    for i in 0..3 {
        assert!(!c.received(&ping(), t0 + ms(50 * i)), "ping {i}");
    }
    assert!(c.received(&ping(), t0 + ms(150)));
}

#[test]
fn pings_at_min_time_never_strike() {
    let t0 = Instant::now();
    let mut c = conn(Duration::from_secs(1));
    c.received(&frame(TYPE_HEADERS, 0x4, 1, b""), t0);
    for i in 0..100 {
        assert!(!c.received(&ping(), t0 + ms(1000 * i)), "ping {i}");
    }
}

#[test]
fn headers_or_data_sent_reset_the_strikes() {
    let t0 = Instant::now();
    let mut c = conn(Duration::from_secs(1));
    c.received(&frame(TYPE_HEADERS, 0x4, 1, b""), t0);
    // strikes 0, 1, 2
    for i in 0..3 {
        assert!(!c.received(&ping(), t0 + ms(i)));
    }
    c.sent(&frame(TYPE_DATA, 0, 1, b"event"));
    // not judged (strikes back to 0), then 1, 2: still no GOAWAY
    for i in 3..6 {
        assert!(!c.received(&ping(), t0 + ms(i)), "ping {i}");
    }
    assert!(c.received(&ping(), t0 + ms(6)));
    // other frames the server writes do not reset
    let mut c = conn(Duration::from_secs(1));
    c.received(&frame(TYPE_HEADERS, 0x4, 1, b""), t0);
    for i in 0..3 {
        c.received(&ping(), t0 + ms(i));
        c.sent(&frame(TYPE_PING, FLAG_ACK, 0, &[7; 8]));
        c.sent(&frame(0x8, 0, 0, &[0, 0, 1, 0]));
    }
    assert!(c.received(&ping(), t0 + ms(3)));
}

#[test]
fn without_streams_pings_must_be_two_hours_apart() {
    let t0 = Instant::now();
    let mut c = conn(Duration::from_secs(1));
    for i in 0..3 {
        assert!(!c.received(&ping(), t0 + ms(1500 * i)));
    }
    assert!(c.received(&ping(), t0 + ms(4500)));
    // a stream the server ended (trailers with END_STREAM) no longer counts
    let mut c = conn(Duration::from_secs(1));
    c.received(&frame(TYPE_HEADERS, 0x4, 1, b""), t0);
    c.sent(&frame(TYPE_HEADERS, 0x4 | FLAG_END_STREAM, 1, b""));
    c.received(&ping(), t0);
    c.sent(&frame(TYPE_RST_STREAM, 0, 1, &[0; 4])); // not a reset of the strikes
    for i in 1..3 {
        assert!(!c.received(&ping(), t0 + ms(1500 * i)));
    }
    assert!(c.received(&ping(), t0 + ms(4500)));
    // nor one the client reset
    let mut c = conn(Duration::from_secs(1));
    c.received(&frame(TYPE_HEADERS, 0x4, 3, b""), t0);
    c.received(&frame(TYPE_RST_STREAM, 0, 3, &[0, 0, 0, 8]), t0);
    for i in 0..3 {
        assert!(!c.received(&ping(), t0 + ms(1500 * i)));
    }
    assert!(c.received(&ping(), t0 + ms(4500)));
    // two hours apart is fine without a stream
    let mut c = conn(Duration::from_secs(1));
    for i in 0..10 {
        assert!(!c.received(&ping(), t0 + IDLE_MIN_TIME * i));
    }
}

#[test]
fn acks_and_malformed_pings_are_not_judged() {
    let t0 = Instant::now();
    let mut c = conn(Duration::from_secs(1));
    c.received(&frame(TYPE_HEADERS, 0x4, 1, b""), t0);
    for i in 0..10 {
        assert!(!c.received(&frame(TYPE_PING, FLAG_ACK, 0, &[0; 8]), t0 + ms(i)));
        assert!(!c.received(&frame(TYPE_PING, 0, 1, &[0; 8]), t0 + ms(i)));
        assert!(!c.received(&frame(TYPE_PING, 0, 0, &[0; 4]), t0 + ms(i)));
    }
}

#[test]
fn zero_means_grpc_defaults_five_minutes() {
    assert_eq!(PingPolicy::new(Duration::ZERO).min_time(), Duration::from_secs(300));
    assert_eq!(PingPolicy::new(ms(5000)).min_time(), ms(5000));
}

#[test]
fn goaway_is_grpc_gos() {
    let mut c = conn(Duration::from_secs(1));
    c.received(&frame(TYPE_HEADERS, 0x4, 5, b""), Instant::now());
    let mut want = frame(TYPE_GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0xb]);
    want.extend_from_slice(b"too_many_pings");
    want[2] += 14;
    assert_eq!(c.goaway(), want);
}

#[test]
fn the_scanner_finds_boundaries_in_any_split() {
    let mut stream = frame(TYPE_HEADERS, 0x4, 1, b"abc");
    stream.extend(frame(TYPE_DATA, 0, 1, &[1; 40]));
    stream.extend(ping());
    for split in 0..=stream.len() {
        let mut s = FrameScanner::default();
        let mut kinds = Vec::new();
        s.feed(&stream[..split], |f| kinds.push(f.kind));
        s.feed(&stream[split..], |f| kinds.push(f.kind));
        assert_eq!(kinds, [TYPE_HEADERS, TYPE_DATA, TYPE_PING], "split at {split}");
        assert!(s.at_boundary());
    }
    let mut s = FrameScanner::default();
    s.feed(&stream[..5], |_| {});
    assert!(!s.at_boundary(), "mid-header");
    s.feed(&stream[5..10], |_| {});
    assert!(!s.at_boundary(), "mid-payload");
}

proptest! {
    /// Any bytes, in any chunks: no panic, and the boundaries found do not depend on how
    /// the bytes were split.
    #[test]
    fn any_bytes_any_chunks(bytes in proptest::collection::vec(any::<u8>(), 0..2048), cuts in proptest::collection::vec(0usize..2048, 0..16)) {
        let mut whole = conn(ms(1));
        let t0 = Instant::now();
        let mut whole_heads = Vec::new();
        whole.inbound.feed(&bytes, |f| whole_heads.push(f));
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let mut chunked = FrameScanner::default();
        let mut heads = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            chunked.feed(&bytes[start..cut], |f| heads.push(f));
            start = cut;
        }
        prop_assert_eq!(heads, whole_heads);
        let mut c = conn(ms(1));
        c.received(&bytes, t0);
        c.sent(&bytes);
        let _ = c.goaway();
    }
}
