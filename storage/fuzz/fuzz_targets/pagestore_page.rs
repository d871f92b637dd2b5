//! The page store's node decoder on arbitrary bytes: never a panic, and an accepted node
//! is one the decoder's own checks allow. The first 13 bytes choose the span the node is
//! read from and the file's high-water mark, and whether the checksum is made valid (so
//! the parsing behind it is reached).
#![no_main]

use cairn_storage::pagestore::fuzzing::{decode_page, with_page_crc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let start = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as u64;
    let pages = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) % 64;
    let limit = u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as u64;
    let fix_crc = data[12] & 1 == 1;
    let mut buf = data[13..].to_vec();
    if fix_crc {
        with_page_crc(&mut buf);
    }
    let _ = decode_page(&buf, start, pages, limit);
});
