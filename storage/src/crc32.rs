//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), which checksums page store
//! nodes and snapshot streams: `crc32fast`, which uses the CPU's carry-less multiply
//! (PCLMULQDQ) where there is one, far faster than tables (0.6% of a backup's samples, see
//! BENCHMARKS.md); and CRC-32C
//! (Castagnoli, reflected, polynomial 0x82F63B78), which etcd's WAL records carry
//! ([`crc32c_update`]): slicing-by-8, eight tables letting each step fold eight bytes
//! (table `k` holds the register after a byte and `k` zero bytes).

const fn make_table(poly: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// `make_table` and its seven shifted copies: `t[k][b]` is the CRC register after byte
/// `b` and then `k` zero bytes.
const fn make_tables(poly: u32) -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    t[0] = make_table(poly);
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            k += 1;
        }
        i += 1;
    }
    t
}

static TABLES_C: [[u32; 256]; 8] = make_tables(0x82F6_3B78);

/// Feeds `data` to the (inverted) register `c`, eight bytes per step.
fn update(t: &[[u32; 256]; 8], mut c: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xFF) as usize]
            ^ t[2][((hi >> 8) & 0xFF) as usize]
            ^ t[1][((hi >> 16) & 0xFF) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

/// CRC-32C of `data` continued from the checksum `prev` of the bytes before it (0 for
/// none): Go's `crc32.Update(prev, castagnoliTable, data)`, which etcd's WAL chains
/// across records and files.
pub fn crc32c_update(prev: u32, data: &[u8]) -> u32 {
    !update(&TABLES_C, !prev, data)
}

/// A running CRC-32.
#[derive(Clone, Debug, Default)]
pub struct Crc32(crc32fast::Hasher);

impl Crc32 {
    /// A fresh checksum.
    pub fn new() -> Self {
        Crc32(crc32fast::Hasher::new())
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The checksum of everything fed so far.
    pub fn finish(&self) -> u32 {
        self.0.clone().finalize()
    }

    /// The checksum of `data`.
    pub fn of(data: &[u8]) -> u32 {
        crc32fast::hash(data)
    }
}

#[cfg(test)]
mod tests {
    use super::{crc32c_update, make_table, Crc32};

    #[test]
    fn castagnoli_vectors_and_chaining() {
        assert_eq!(crc32c_update(0, b""), 0);
        assert_eq!(crc32c_update(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_update(crc32c_update(0, b"1234"), b"56789"), 0xE306_9283);
    }

    #[test]
    fn known_vectors() {
        assert_eq!(Crc32::of(b""), 0);
        assert_eq!(Crc32::of(b"123456789"), 0xCBF4_3926);
        assert_eq!(Crc32::of(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    /// The byte-at-a-time definition, against which the sliced one is checked.
    fn bytewise(poly: u32, data: &[u8]) -> u32 {
        let t = make_table(poly);
        !data.iter().fold(!0u32, |c, &b| t[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
    }

    #[test]
    fn sliced_matches_bytewise_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                let d = &data[start..end];
                assert_eq!(Crc32::of(d), bytewise(0xEDB8_8320, d), "ieee {start}..{end}");
                assert_eq!(crc32c_update(0, d), bytewise(0x82F6_3B78, d), "castagnoli {start}..{end}");
            }
        }
        let mut c = Crc32::new();
        c.update(&data[..5]);
        c.update(&data[5..]);
        assert_eq!(c.finish(), Crc32::of(&data));
    }
}
