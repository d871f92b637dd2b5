//! Continue tokens of paged lists.
//!
//! A token is opaque to callers. Layout before base64url (no padding):
//! `[1u8 version][revision: i64 big-endian][next key relative to the list prefix]`.
//! The next key is the last returned key + `\0`, so the next page starts right after it; it
//! is stored relative to the list's prefix so a token can never reach outside the prefix it
//! is used with (a tenant cannot read another tenant's keys with a crafted token).

use super::error::TokenError;

const VERSION: u8 = 1;

/// What a continue token carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Continue {
    /// The revision every page of the list is read at.
    pub revision: i64,
    /// The first key of the next page, without the list prefix.
    pub next_key: Vec<u8>,
}

impl Continue {
    /// The token for the page after `last_key` (absolute, starting with `prefix`).
    pub(crate) fn after(prefix: &[u8], last_key: &[u8], revision: i64) -> Continue {
        let mut next_key = last_key.get(prefix.len()..).unwrap_or_default().to_vec();
        next_key.push(0);
        Continue { revision, next_key }
    }

    pub(crate) fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(9 + self.next_key.len());
        raw.push(VERSION);
        raw.extend_from_slice(&self.revision.to_be_bytes());
        raw.extend_from_slice(&self.next_key);
        b64_encode(&raw)
    }

    pub(crate) fn decode(token: &str) -> Result<Continue, TokenError> {
        let raw = b64_decode(token).ok_or(TokenError::Encoding)?;
        if raw.len() < 9 || raw[0] != VERSION {
            return Err(TokenError::Format);
        }
        let mut rev = [0u8; 8];
        rev.copy_from_slice(&raw[1..9]);
        let revision = i64::from_be_bytes(rev);
        if revision <= 0 {
            return Err(TokenError::Revision(revision));
        }
        Ok(Continue { revision, next_key: raw[9..].to_vec() })
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|p| p as u32);
    let bytes = s.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= sextet(*c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            assert_eq!(b64_decode(&b64_encode(&data)), Some(data));
        }
        assert_eq!(b64_encode(b"\xfb\xff"), "-_8");
    }

    #[test]
    fn token_round_trips_and_is_relative() {
        let c = Continue::after(b"/t/1/pods/", b"/t/1/pods/a", 42);
        assert_eq!(c.next_key, b"a\0");
        assert_eq!(Continue::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Continue::decode("!!!!"), Err(TokenError::Encoding));
        assert_eq!(Continue::decode("AQ"), Err(TokenError::Format));
        let zero = Continue { revision: 0, next_key: vec![] }.encode();
        assert_eq!(Continue::decode(&zero), Err(TokenError::Revision(0)));
    }
}
