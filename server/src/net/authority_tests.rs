//! Tests of the `:authority` rewriter: a client encoder (Huffman, dynamic table) on one side,
//! a second decoder standing in for hyper's on the other, fed in every chunking.

use httlib_hpack::Encoder;
use tokio::io::AsyncReadExt;

use super::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;
/// A frame as (type, flags, payload).
type Frame = (u8, u8, Vec<u8>);

fn fields(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn request(authority: &str) -> Fields {
    fields(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/etcdserverpb.KV/Range"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.26.0"),
        ("te", "trailers"),
    ])
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_frame_header(&mut out, payload.len(), kind, flags, stream_id);
    out.put_slice(payload);
    out.to_vec()
}

/// Encodes like a typical client: Huffman strings, indexing, table references when possible.
fn encode(encoder: &mut Encoder<'_>, list: &Fields) -> Vec<u8> {
    let flags = Encoder::HUFFMAN_NAME
        | Encoder::HUFFMAN_VALUE
        | Encoder::WITH_INDEXING
        | Encoder::BEST_FORMAT;
    let mut block = Vec::new();
    for (name, value) in list {
        encoder
            .encode((name.clone(), value.clone(), flags), &mut block)
            .unwrap();
    }
    block
}

fn headers_frame(encoder: &mut Encoder<'_>, stream_id: u32, list: &Fields) -> Vec<u8> {
    frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        stream_id,
        &encode(encoder, list),
    )
}

/// Runs `input` through the rewriter in chunks of `chunk` bytes.
async fn rewrite(input: &[u8], chunk: usize) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let mut fix = AuthorityFix::new(server);
    let data = input.to_vec();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for piece in data.chunks(chunk) {
            client.write_all(piece).await.unwrap();
            client.flush().await.unwrap();
        }
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 7]; // small reads, to exercise partial delivery
    loop {
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), fix.read(&mut buf));
        match read.await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("rewriter stalled"),
        }
    }
    writer.await.unwrap();
    out
}

/// Parses frames after the preface; decodes header blocks with one decoder, as hyper does.
fn parse(output: &[u8]) -> (Vec<Frame>, Vec<Fields>) {
    assert_eq!(&output[..PREFACE.len()], PREFACE);
    let mut rest = &output[PREFACE.len()..];
    let mut frames = Vec::new();
    let mut blocks = Vec::new();
    let mut decoder = Decoder::with_dynamic_size(HEADER_TABLE_SIZE);
    let mut block = Vec::new();
    while !rest.is_empty() {
        let h = FrameHeader::parse(rest).expect("frame header");
        let payload = rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + h.len].to_vec();
        rest = &rest[FRAME_HEADER_LEN + h.len..];
        if h.kind == TYPE_HEADERS || h.kind == TYPE_CONTINUATION {
            assert!(h.len <= MAX_FRAME_PAYLOAD);
            let (_, fragment) = PendingBlock::fields(&h, &payload).unwrap();
            let fragment = if h.kind == TYPE_HEADERS {
                fragment
            } else {
                &payload[..]
            };
            block.extend_from_slice(fragment);
            if h.flags & FLAG_END_HEADERS != 0 {
                let mut decoded = Vec::new();
                decoder
                    .decode(&mut block, &mut decoded)
                    .expect("hyper's decoder accepts the block");
                blocks.push(decoded.into_iter().map(|(n, v, _)| (n, v)).collect());
                block.clear();
            }
        }
        frames.push((h.kind, h.flags, payload));
    }
    (frames, blocks)
}

fn authority(block: &Fields) -> Option<&[u8]> {
    block
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| v.as_slice())
}

#[tokio::test]
async fn valid_authorities_pass_through_byte_for_byte() {
    let mut enc = Encoder::default();
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    input.extend(headers_frame(&mut enc, 1, &request("127.0.0.1:2379")));
    input.extend(frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 2, 10, 0])); // DATA
    input.extend(headers_frame(&mut enc, 3, &request("127.0.0.1:2379")));
    // RFC 7541 C.4.1: a Huffman-coded request for www.example.com.
    let huffman = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &huffman));
    for chunk in [1, 3, 64, 1 << 16] {
        assert_eq!(rewrite(&input, chunk).await, input, "chunk {chunk}");
    }
}

#[tokio::test]
async fn etcdctl_and_clientv3_authorities_are_repaired() {
    let cases = [
        ("http://127.0.0.1:2379", Some("127.0.0.1:2379")),
        (
            "#initially=[https://a.example:2379;https://b.example:2379]",
            Some("a.example:2379"),
        ),
        ("http://[::1]:2379", Some("[::1]:2379")),
        ("#initially=[]", None),
    ];
    for (bad, fixed) in cases {
        let mut enc = Encoder::default();
        let mut input = PREFACE.to_vec();
        let mut first = request(bad);
        first.push((b"x-custom".to_vec(), b"kept".to_vec())); // enters the dynamic table
        input.extend(headers_frame(&mut enc, 1, &first));
        input.extend(headers_frame(&mut enc, 3, &first)); // now mostly indexed references
        let (_, blocks) = parse(&rewrite(&input, 5).await);
        assert_eq!(blocks.len(), 2);
        for block in &blocks {
            assert_eq!(authority(block), fixed.map(str::as_bytes), "{bad}");
            let rest: Fields = block
                .iter()
                .filter(|(n, _)| n != b":authority")
                .cloned()
                .collect();
            let want: Fields = first
                .iter()
                .filter(|(n, _)| n != b":authority")
                .cloned()
                .collect();
            assert_eq!(rest, want);
        }
    }
}

#[tokio::test]
async fn switching_to_rewrite_keeps_the_dynamic_table_consistent() {
    let mut enc = Encoder::default();
    let mut good = request("127.0.0.1:2379");
    good.push((b"x-trace".to_vec(), b"abc".to_vec()));
    let mut bad = request("http://127.0.0.1:2379");
    bad.push((b"x-trace".to_vec(), b"abc".to_vec()));
    let mut no_authority: Fields = good
        .iter()
        .filter(|(n, _)| n != b":authority")
        .cloned()
        .collect();
    no_authority.push((b"x-first".to_vec(), b"1".to_vec()));
    let mut input = PREFACE.to_vec();
    // no authority to judge yet: passed through, adds x-trace and x-first to both tables
    input.extend(headers_frame(&mut enc, 1, &no_authority));
    input.extend(headers_frame(&mut enc, 3, &bad)); // rewritten
    input.extend(headers_frame(&mut enc, 5, &good)); // refers to x-trace by index: rewritten
    let (frames, blocks) = parse(&rewrite(&input, 1).await);
    assert_eq!(frames.len(), 3);
    assert_eq!(blocks[0], no_authority);
    assert_eq!(authority(&blocks[1]), Some(&b"127.0.0.1:2379"[..]));
    assert_eq!(blocks[2], good);
}

#[tokio::test]
async fn a_valid_first_authority_lets_the_connection_through_unparsed() {
    let mut enc = Encoder::default();
    let good = request("127.0.0.1:2379");
    let bad = request("http://127.0.0.1:2379");
    let mut input = PREFACE.to_vec();
    input.extend(headers_frame(&mut enc, 1, &good));
    // Not looked at (hyper judges it): before the first block decided, it was rewritten.
    input.extend(headers_frame(&mut enc, 3, &bad));
    for chunk in [1, 7, 1 << 16] {
        assert_eq!(rewrite(&input, chunk).await, input, "chunk {chunk}");
    }
}

#[tokio::test]
async fn padding_priority_and_continuations_are_understood_and_large_blocks_split() {
    let mut enc = Encoder::default();
    let mut list = request("http://h:1");
    list.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
    let block = encode(&mut enc, &list);
    let (a, rest) = block.split_at(10_000);
    let (b, c) = rest.split_at(20_000);
    let mut first = vec![3u8]; // pad length
    first.extend_from_slice(&[0x80, 0, 0, 1, 15]); // priority: exclusive, depends on 1, weight
    first.extend_from_slice(a);
    first.extend_from_slice(&[0, 0, 0]); // padding
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        7,
        &first,
    ));
    input.extend(frame(TYPE_CONTINUATION, 0, 7, b));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 7, c));
    let (frames, blocks) = parse(&rewrite(&input, 4096).await);
    assert!(
        frames.len() >= 3,
        "40 kB re-encoded needs CONTINUATION frames"
    );
    let (kind, flags, payload) = &frames[0];
    assert_eq!(*kind, TYPE_HEADERS);
    assert_eq!(
        flags & (FLAG_END_STREAM | FLAG_PRIORITY | FLAG_PADDED),
        FLAG_END_STREAM | FLAG_PRIORITY
    );
    assert_eq!(&payload[..5], &[0x80, 0, 0, 1, 15]);
    assert_eq!(
        frames.last().unwrap().1 & FLAG_END_HEADERS,
        FLAG_END_HEADERS
    );
    assert_eq!(authority(&blocks[0]), Some(&b"h:1"[..]));
    assert_eq!(blocks[0].last().unwrap().1.len(), 40_000);
}

#[tokio::test]
async fn anything_else_passes_through() {
    // Not HTTP/2 at all.
    let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(rewrite(&http1, 3).await, http1);
    // A CONTINUATION for the wrong stream: passed on for hyper to reject.
    let mut enc = Encoder::default();
    let block = encode(&mut enc, &request("http://h:1"));
    let mut input = PREFACE.to_vec();
    input.extend(frame(TYPE_HEADERS, 0, 1, &block[..5]));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &block[5..]));
    assert_eq!(rewrite(&input, 2).await, input);
    // Undecodable HPACK (an index past every table).
    let mut input = PREFACE.to_vec();
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0x7f]));
    assert_eq!(rewrite(&input, 100).await, input);
}

#[test]
fn salvage_finds_host_and_port() {
    let s =
        |v: &str| salvage_authority(v.as_bytes()).map(|a| String::from_utf8(a.to_vec()).unwrap());
    assert_eq!(
        s("http://127.0.0.1:2379").as_deref(),
        Some("127.0.0.1:2379")
    );
    assert_eq!(
        s("https://etcd-0.etcd:2379/").as_deref(),
        Some("etcd-0.etcd:2379")
    );
    assert_eq!(
        s("#initially=[http://a:1;http://b:2]").as_deref(),
        Some("a:1")
    );
    assert_eq!(s("unix:///var/run/etcd.sock"), None);
    assert_eq!(s(""), None);
}

#[test]
fn hpack_integers_use_the_seven_bit_prefix() {
    let mut out = Vec::new();
    encode_string(&mut out, &[b'a'; 126]);
    assert_eq!(out[0], 126);
    out.clear();
    encode_string(&mut out, &[b'a'; 127]);
    assert_eq!(&out[..2], &[0x7f, 0x00]);
    out.clear();
    encode_string(&mut out, &[b'a'; 1337]);
    // 1337 - 127 = 1210 = 0b1001_0111010 → 0xba 0x09
    assert_eq!(&out[..3], &[0x7f, 0xba, 0x09]);
}
