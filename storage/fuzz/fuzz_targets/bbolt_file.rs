//! The bbolt reader (etcd's db files, imported by `cairn snapshot restore` and
//! `migrate`) on arbitrary bytes: never a panic, never a hang; every bucket is walked.
//! The first byte says whether the meta pages' FNV checksums are made valid (bbolt's
//! layout: a 16-byte page header, then the meta; the checksum covers the meta's first 56
//! bytes and follows them), so the page walk behind them is reached.
#![no_main]

use cairn_storage::bbolt::{BboltFile, BucketRef, Entry};
use libfuzzer_sys::fuzz_target;

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn fix_meta(buf: &mut [u8], page: usize) {
    let meta = page + 16;
    if buf.len() >= meta + 64 {
        let sum = fnv1a64(&buf[meta..meta + 56]);
        buf[meta + 56..meta + 64].copy_from_slice(&sum.to_le_bytes());
    }
}

fn walk(bucket: BucketRef<'_>, depth: usize) {
    if depth > 64 {
        return;
    }
    let _ = bucket.for_each(&mut |_k, entry| {
        if let Entry::Bucket(b) = entry {
            walk(b, depth + 1);
        }
        Ok(true)
    });
    let _ = bucket.load();
}

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else { return };
    let mut buf = rest.to_vec();
    if flag & 1 == 1 {
        fix_meta(&mut buf, 0);
        // the second meta is at page 1; its size is the first meta's page size field
        let page_size = buf.get(24..28).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if let Some(p) = page_size.filter(|p| (1024..=65536).contains(p)) {
            fix_meta(&mut buf, p);
        }
    }
    let Ok(file) = BboltFile::from_bytes(buf) else { return };
    let _ = file.free_pages();
    walk(file.root(), 0);
});
