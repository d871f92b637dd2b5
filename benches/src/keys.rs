//! Key and value generation.
//!
//! Keys follow the scheme of etcd's benchmark tool: a zero-filled buffer of
//! `key_size` bytes whose prefix holds the key index as a zig-zag varint (the
//! encoding of Go's `binary.PutVarint`). With a key space of 1 every request
//! uses the same key.

use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `n` as a zig-zag varint into the front of `buf`; returns the bytes used.
/// Panics if `buf` is too small (callers check with [`varint_len`] first).
pub fn put_varint(buf: &mut [u8], n: i64) -> usize {
    let mut ux = (n as u64) << 1;
    if n < 0 {
        ux = !ux;
    }
    let mut i = 0;
    while ux >= 0x80 {
        buf[i] = (ux as u8) | 0x80;
        ux >>= 7;
        i += 1;
    }
    buf[i] = ux as u8;
    i + 1
}

/// Number of bytes [`put_varint`] needs for `n`.
pub fn varint_len(n: i64) -> usize {
    let mut buf = [0u8; 10];
    put_varint(&mut buf, n)
}

/// Small, fast, non-cryptographic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix-style scrambling so that small seeds still diverge quickly.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    /// Seeds from the clock and a per-process counter.
    pub fn from_entropy() -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(t ^ SEQ.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish value in `[0, n)`; `n` must be non-zero.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// Chooses keys for requests.
#[derive(Debug, Clone)]
pub struct KeyGen {
    key_size: usize,
    key_space: u64,
    sequential: bool,
}

impl KeyGen {
    pub fn new(key_size: usize, key_space: u64, sequential: bool) -> Result<Self, String> {
        if key_space == 0 {
            return Err("key space must be at least 1".into());
        }
        let need = varint_len((key_space - 1) as i64);
        if need > key_size {
            return Err(format!(
                "--key-size {key_size} is too small for --key-space {key_space} (needs {need} bytes)"
            ));
        }
        Ok(KeyGen { key_size, key_space, sequential })
    }

    pub fn key_space(&self) -> u64 {
        self.key_space
    }

    /// The encoded key with index `idx` (taken modulo the key space).
    pub fn key_at(&self, idx: u64) -> Vec<u8> {
        let mut k = vec![0u8; self.key_size];
        put_varint(&mut k, (idx % self.key_space) as i64);
        k
    }

    /// The key for the `seq`-th request of the run.
    pub fn key_for(&self, seq: u64, rng: &mut Rng) -> Vec<u8> {
        if self.key_space == 1 {
            return self.key_at(0);
        }
        let idx = if self.sequential { seq % self.key_space } else { rng.below(self.key_space) };
        self.key_at(idx)
    }
}

/// A random value of `size` bytes.
pub fn random_value(size: usize, rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![0u8; size];
    rng.fill(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_matches_go_put_varint() {
        let mut b = [0u8; 10];
        assert_eq!(put_varint(&mut b, 0), 1);
        assert_eq!(b[0], 0);
        assert_eq!(put_varint(&mut b, 1), 1);
        assert_eq!(b[0], 2);
        assert_eq!(put_varint(&mut b, -1), 1);
        assert_eq!(b[0], 1);
        assert_eq!(put_varint(&mut b, 64), 2);
        assert_eq!(&b[..2], &[0x80, 0x01]);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(i64::MAX), 10);
    }

    #[test]
    fn keys_are_fixed_size_and_distinct() {
        let g = KeyGen::new(8, 1000, true).unwrap();
        let mut rng = Rng::new(1);
        let a = g.key_for(1, &mut rng);
        let b = g.key_for(2, &mut rng);
        assert_eq!(a.len(), 8);
        assert_ne!(a, b);
        assert_eq!(g.key_for(1001, &mut rng), a);
        assert!(KeyGen::new(1, 1000, false).is_err());
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            assert!(rng.below(13) < 13);
        }
    }
}
