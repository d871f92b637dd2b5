use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::net::ping_policy::tests::frame;

fn policy() -> Option<PingPolicy> {
    Some(PingPolicy::new(Duration::from_secs(3600)))
}

/// The client's preface, a stream, and four pings at once.
fn abusive_client() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(0x4, 0, 0, b""));
    bytes.extend(frame(0x1, 0x4, 1, b"\x83"));
    for _ in 0..4 {
        bytes.extend(frame(0x6, 0, 0, &[1; 8]));
    }
    bytes
}

#[tokio::test]
async fn goaway_follows_the_frame_hyper_was_writing_then_the_connection_closes() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let mut guard = PingGuard::new(server, policy());
    let data = frame(0x0, 0, 1, &[9; 10]);
    // hyper is half-way through a DATA frame when the fourth ping arrives
    guard.write_all(&data[..12]).await.unwrap();
    let sent = abusive_client();
    client.write_all(&sent).await.unwrap();
    let mut got = vec![0; sent.len()];
    guard.read_exact(&mut got).await.unwrap();
    assert_eq!(got, sent, "the bytes reach hyper unchanged");
    // a flush mid-frame does not send the GOAWAY
    guard.flush().await.unwrap();
    // hyper finishes its frame and writes the PING's ACK; its flush sends the GOAWAY after
    let mut rest = data[12..].to_vec();
    let ack = frame(0x6, 0x1, 0, &[1; 8]);
    rest.extend(&ack);
    guard.write_all(&rest).await.unwrap();
    guard.flush().await.unwrap();
    assert_eq!(guard.write(&ack).await.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    let mut n = [0u8; 1];
    assert_eq!(guard.read(&mut n).await.unwrap(), 0, "hyper reads end-of-file");
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let mut want = data.clone();
    want.extend(&ack);
    want.extend(frame(0x7, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x0btoo_many_pings"));
    assert_eq!(out, want);
}

#[tokio::test]
async fn a_reader_waiting_for_the_goaway_is_woken_and_reads_eof() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let mut guard = PingGuard::new(server, policy());
    let sent = abusive_client();
    client.write_all(&sent).await.unwrap();
    let mut got = vec![0; sent.len()];
    guard.read_exact(&mut got).await.unwrap();
    // nothing to flush: the read after hyper's turn sends the GOAWAY itself
    let mut n = [0u8; 1];
    assert_eq!(guard.read(&mut n).await.unwrap(), 0);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    assert_eq!(&out[3..5], &[0x7, 0]);
    assert!(out.ends_with(b"too_many_pings"));
}

#[tokio::test]
async fn http1_and_unguarded_connections_pass_through() {
    for (policy, prefix) in [(policy(), &b"GET /health HTTP/1.1\r\n\r\n"[..]), (None, PREFACE)] {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut guard = PingGuard::new(server, policy);
        let mut sent = prefix.to_vec();
        sent.extend(frame(0x1, 0x4, 1, b"\x83"));
        for _ in 0..10 {
            sent.extend(frame(0x6, 0, 0, &[1; 8]));
        }
        client.write_all(&sent).await.unwrap();
        let mut got = vec![0; sent.len()];
        guard.read_exact(&mut got).await.unwrap();
        guard.write_all(b"answer").await.unwrap();
        guard.flush().await.unwrap();
        let mut out = [0u8; 6];
        client.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"answer");
    }
}
