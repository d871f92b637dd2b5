//! The WAL's record framing.
//!
//! ```text
//! offset  size  field
//! 0       4     len: u32 LE, bytes after this 8-byte header (kind + index + data), > 0
//! 4       4     crc: u32 LE, CRC-32 (IEEE) of those `len` bytes
//! 8       1     kind: what the record is (the caller's namespace; 0 is invalid)
//! 9       8     index: u64 LE, the log index the record belongs to
//! 17      len-9 data
//! ```
//! A zero `len` marks the end of the written part of a segment (segments are preallocated
//! with zeros). A record is valid only if its length fits and its CRC matches.



/// Bytes before the checksummed body.
pub const HEADER_LEN: usize = 8;
/// Bytes of `kind` and `index` at the start of the body.
pub const BODY_PREFIX_LEN: usize = 9;
/// Largest body accepted (a guard against reading garbage as a huge length).
pub const MAX_BODY_LEN: usize = 256 << 20;

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// The caller's record type (never 0).
    pub kind: u8,
    /// The log index the record belongs to.
    pub index: u64,
    /// The payload.
    pub data: Vec<u8>,
}

/// Appends the framed record to `out`.
pub fn encode(kind: u8, index: u64, data: &[u8], out: &mut Vec<u8>) {
    let len = BODY_PREFIX_LEN + data.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What is at some offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record and its total framed length.
    Record(WalRecord, usize),
    /// Zeros: nothing was written here.
    End,
    /// Not a valid record: torn, or corrupt.
    Invalid,
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER_LEN {
        return if buf.iter().all(|&b| b == 0) { Decoded::End } else { Decoded::Invalid };
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return if crc == 0 { Decoded::End } else { Decoded::Invalid };
    }
    if !(BODY_PREFIX_LEN..=MAX_BODY_LEN).contains(&len) || buf.len() < HEADER_LEN + len {
        return Decoded::Invalid;
    }
    let body = &buf[HEADER_LEN..HEADER_LEN + len];
    if crc32fast::hash(body) != crc || body[0] == 0 {
        return Decoded::Invalid;
    }
    let index = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
    Decoded::Record(WalRecord { kind: body[0], index, data: body[9..].to_vec() }, HEADER_LEN + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_end_marker() {
        let mut buf = Vec::new();
        encode(3, 42, b"hello", &mut buf);
        let n = buf.len();
        buf.extend_from_slice(&[0; 32]);
        let Decoded::Record(r, len) = decode(&buf) else { panic!() };
        assert_eq!((r.kind, r.index, r.data.as_slice(), len), (3, 42, &b"hello"[..], n));
        assert_eq!(decode(&buf[n..]), Decoded::End);
    }

    #[test]
    fn any_damage_is_invalid() {
        let mut buf = Vec::new();
        encode(1, 7, b"payload bytes", &mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(!matches!(decode(&bad), Decoded::Record(..)), "flip at {i}");
            assert!(!matches!(decode(&buf[..i]), Decoded::Record(..)), "cut at {i}");
        }
    }
}
