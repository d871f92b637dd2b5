//! The page store's meta decoder on arbitrary bytes: never a panic. The first byte says
//! whether the checksum is made valid (so the field checks behind it are reached).
#![no_main]

use cairn_storage::pagestore::fuzzing::{decode_meta, with_meta_crc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else { return };
    let mut buf = rest.to_vec();
    if flag & 1 == 1 {
        with_meta_crc(&mut buf);
    }
    let _ = decode_meta(&buf);
});
