//! Opening a WAL whose segment holds arbitrary bytes, as after a torn write, a bad disk
//! or a foreign file: `Wal::open` returns the records or a typed error (truncating a torn
//! tail), never panics. The segment is written under a valid name
//! (`<seq:016x>-<first_index:016x>.wal`, raft-node/src/wal/segment.rs) with a valid
//! header unless the first byte asks for the raw bytes.
//!
//! With a valid header the rest is read as records (`wal/record.rs`): each is
//! `len u32, kind u8, index u64, data` taken from the input, framed with a correct CRC
//! when the input's flag says so, so replay logic behind the checksum is reached.
#![no_main]

use cairn_raft_node::{Wal, WalOptions};
use libfuzzer_sys::fuzz_target;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A segment from `data`: header, then records built from the input.
fn segment(data: &[u8]) -> Vec<u8> {
    let mut out = b"CAIRNWAL".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut rest = data;
    // each record: flags u8, kind u8, index u8 (small, so order matters), len u8, data
    while rest.len() >= 4 {
        let (flags, kind, index, len) = (rest[0], rest[1], rest[2] as u64, rest[3] as usize);
        rest = &rest[4..];
        let body_len = len.min(rest.len());
        let payload = &rest[..body_len];
        rest = &rest[body_len..];
        if flags & 0x80 != 0 {
            // raw bytes, as a torn or foreign tail
            out.extend_from_slice(payload);
            continue;
        }
        let mut body = vec![kind];
        body.extend_from_slice(&index.to_le_bytes());
        body.extend_from_slice(payload);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = if flags & 1 == 0 { crc32(&body) } else { crc32(&body) ^ 1 };
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 1 { rest.to_vec() } else { segment(rest) };
    let Ok(dir) = tempfile::tempdir() else { return };
    let name = format!("{:016x}-{:016x}.wal", 0, u64::from(mode >> 1));
    if std::fs::write(dir.path().join(name), &bytes).is_err() {
        return;
    }
    let opts = WalOptions { segment_size: 1 << 16, ..Default::default() };
    if let Ok((mut wal, records)) = Wal::open(dir.path(), opts.clone()) {
        // what was accepted reopens to the same records, and the log takes appends above
        // its last index
        let next = wal.last_index() + 1;
        assert!(wal.append(1, next, b"after").is_ok() && wal.sync().is_ok());
        drop(wal);
        let (_, again) = Wal::open(dir.path(), opts).expect("a log that opened reopens");
        assert_eq!(&again[..records.len()], &records[..]);
        assert_eq!(again.len(), records.len() + 1);
    }
});
