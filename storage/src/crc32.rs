//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), which checksums page-store nodes
//! and snapshot streams; and CRC-32C (Castagnoli, reflected, polynomial 0x82F63B78, table
//! driven), which etcd's WAL records carry ([`crc32c_update`]).

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

static TABLE_C: [u32; 256] = make_table(0x82F6_3B78);

/// CRC-32C of `data` continued from the checksum `prev` of the bytes before it (0 for
/// none): Go's `crc32.Update(prev, castagnoliTable, data)`, which etcd's WAL chains
/// across records and files.
pub fn crc32c_update(prev: u32, data: &[u8]) -> u32 {
    let mut c = !prev;
    for &b in data {
        c = TABLE_C[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// A running CRC-32 (IEEE), computed by `crc32fast` (carry-less multiply where the CPU
/// has it): every page-store node read checks one, so the table-driven loop was a third of
/// a start-up's CPU at millions of keys.
#[derive(Clone, Debug)]
pub struct Crc32(crc32fast::Hasher);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

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
    use super::{crc32c_update, Crc32};

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
}
