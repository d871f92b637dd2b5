//! One watch as the hub stores it, and the slab that holds every watch of the hub.
//!
//! The record is kept small on purpose (56 bytes on 64-bit targets plus the key bytes):
//! a hub may hold millions of idle watches. Its key and range end share one allocation;
//! the intrusive `prev`/`next` links chain the watches of one key (or one prefix) in the
//! index, so the index's hash tables hold a single `u32` per distinct key.

/// "No slot": the end of an intrusive list.
pub(crate) const NIL: u32 = u32::MAX;

/// Where a watch is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// In the index: `publish` delivers its events (those at or above `rev`).
    Synced,
    /// Out of the index, waiting for the catch-up task: every event below `rev` is
    /// enqueued, the ones from `rev` on are read back from history.
    Unsynced,
    /// Cancelled by compaction. Kept (as etcd keeps it) until the client cancels it or
    /// closes the stream, so its ID stays taken; it gets nothing more.
    Dead,
}

/// The shape of the watched keys, which decides where the index keeps the watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Exactly one key (empty range end).
    Single,
    /// Every key starting with `key` (`range_end` is the prefix end of `key`).
    Prefix,
    /// `[key, end)`, or every key ≥ `key` when there is no end.
    Range,
}

// Flag bits.
pub(crate) const NO_PUT: u16 = 1;
pub(crate) const NO_DELETE: u16 = 1 << 1;
pub(crate) const PREV_KV: u16 = 1 << 2;
pub(crate) const FRAGMENT: u16 = 1 << 3;
pub(crate) const PROGRESS_NOTIFY: u16 = 1 << 4;
/// Events were enqueued since the last periodic progress tick.
pub(crate) const EVENTS_SINCE_TICK: u16 = 1 << 5;
/// Created with a start revision in the future: counted in its stream's `starts`.
pub(crate) const FUTURE: u16 = 1 << 6;
const STATE_SHIFT: u16 = 8;
const KIND_SHIFT: u16 = 10;
const TWO_BITS: u16 = 0b11;

/// One watch.
pub(crate) struct Watch {
    /// The key, followed by the range end for a bounded [`Kind::Range`].
    bytes: Box<[u8]>,
    key_len: u32,
    /// Slot of the owning stream in the hub's stream slab.
    pub stream: u32,
    /// Changes with every creation in the hub: tells a reused slot from the watch a
    /// catch-up round claimed.
    pub gen: u32,
    /// The watch ID on its stream.
    pub id: i64,
    /// [`State::Synced`]: the first revision it accepts (its start revision, or the
    /// revision after the one it was synced at). [`State::Unsynced`]: the next revision
    /// to deliver.
    pub rev: i64,
    /// Neighbours among the watches of the same index bucket ([`NIL`] at the ends).
    pub prev: u32,
    pub next: u32,
    flags: u16,
}

impl Watch {
    /// A new watch. `end` is `None` for "every key ≥ key" and for the single and prefix
    /// kinds (whose end is implied).
    pub fn new(key: &[u8], end: Option<&[u8]>, kind: Kind, stream: u32, id: i64, rev: i64, flags: u16) -> Watch {
        let mut bytes = Vec::with_capacity(key.len() + end.map_or(0, <[u8]>::len));
        bytes.extend_from_slice(key);
        if kind == Kind::Range {
            if let Some(e) = end {
                bytes.extend_from_slice(e);
            }
        }
        let kind_bits = match kind {
            Kind::Single => 0,
            Kind::Prefix => 1,
            Kind::Range => 2,
        };
        Watch {
            bytes: bytes.into_boxed_slice(),
            key_len: key.len() as u32,
            stream,
            gen: 0,
            id,
            rev,
            prev: NIL,
            next: NIL,
            flags: (flags & 0xff) | (kind_bits << KIND_SHIFT),
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// The exclusive end of a [`Kind::Range`] watch; `None` means unbounded.
    pub fn range_end(&self) -> Option<&[u8]> {
        let end = &self.bytes[self.key_len as usize..];
        (!end.is_empty()).then_some(end)
    }

    pub fn kind(&self) -> Kind {
        match (self.flags >> KIND_SHIFT) & TWO_BITS {
            0 => Kind::Single,
            1 => Kind::Prefix,
            _ => Kind::Range,
        }
    }

    pub fn state(&self) -> State {
        match (self.flags >> STATE_SHIFT) & TWO_BITS {
            0 => State::Synced,
            1 => State::Unsynced,
            _ => State::Dead,
        }
    }

    pub fn set_state(&mut self, s: State) {
        let bits = match s {
            State::Synced => 0,
            State::Unsynced => 1,
            State::Dead => 2,
        };
        self.flags = (self.flags & !(TWO_BITS << STATE_SHIFT)) | (bits << STATE_SHIFT);
    }

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    pub fn set(&mut self, flag: u16, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// The span as a standalone copy (for the catch-up task, which reads without the lock).
    pub fn span(&self) -> Span {
        Span { bytes: self.bytes.clone(), key_len: self.key_len, kind: self.kind() }
    }
}

/// A copy of a watch's keys.
#[derive(Clone, Debug)]
pub(crate) struct Span {
    bytes: Box<[u8]>,
    key_len: u32,
    pub kind: Kind,
}

impl Span {
    pub fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// The exclusive end of a [`Kind::Range`] span (`None`: unbounded).
    pub fn range_end(&self) -> Option<&[u8]> {
        let end = &self.bytes[self.key_len as usize..];
        (!end.is_empty()).then_some(end)
    }

    #[cfg(test)]
    pub fn contains(&self, k: &[u8]) -> bool {
        match self.kind {
            Kind::Single => k == self.key(),
            Kind::Prefix => k.starts_with(self.key()),
            Kind::Range => k >= self.key() && self.range_end().is_none_or(|e| k < e),
        }
    }
}

/// etcd's prefix end of `key` (`clientv3.GetPrefixRangeEnd`): the key with its last byte
/// below 0xff incremented and everything after it dropped; `None` when every byte is 0xff
/// (then the prefix is "every key ≥ key").
pub(crate) fn prefix_end(key: &[u8]) -> Option<Vec<u8>> {
    let i = key.iter().rposition(|&b| b < 0xff)?;
    let mut end = key[..=i].to_vec();
    end[i] += 1;
    Some(end)
}

/// A vector of optional items addressed by `u32` slots, reusing freed slots.
pub(crate) struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { items: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, item: T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(slot) => {
                self.items[slot as usize] = Some(item);
                slot
            }
            None => {
                self.items.push(Some(item));
                (self.items.len() - 1) as u32
            }
        }
    }

    pub fn remove(&mut self, slot: u32) -> Option<T> {
        let item = self.items.get_mut(slot as usize)?.take()?;
        self.len -= 1;
        self.free.push(slot);
        if self.len == 0 {
            // everything is gone: give the memory back
            self.items = Vec::new();
            self.free = Vec::new();
        }
        Some(item)
    }

    pub fn get(&self, slot: u32) -> Option<&T> {
        self.items.get(slot as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.items.get_mut(slot as usize).and_then(Option::as_mut)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every occupied slot with its item, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items.iter().enumerate().filter_map(|(i, item)| item.as_ref().map(|t| (i as u32, t)))
    }
}

impl Slab<Watch> {
    /// The watch in `slot`, which the caller knows is occupied (it came from the index or
    /// a stream's table, both kept in step with the slab under the hub lock).
    pub fn at(&self, slot: u32) -> &Watch {
        match self.get(slot) {
            Some(w) => w,
            None => panic!("watch slab: slot {slot} referenced by the index is empty"),
        }
    }

    pub fn at_mut(&mut self, slot: u32) -> &mut Watch {
        match self.get_mut(slot) {
            Some(w) => w,
            None => panic!("watch slab: slot {slot} referenced by the index is empty"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_record_is_small() {
        assert!(std::mem::size_of::<Watch>() <= 56, "{}", std::mem::size_of::<Watch>());
        assert_eq!(std::mem::size_of::<Option<Watch>>(), std::mem::size_of::<Watch>());
    }

    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn flags_state_and_kind_are_independent() {
        let mut w = Watch::new(b"k", Some(b"z"), Kind::Range, 3, 7, 10, PREV_KV | NO_PUT);
        assert_eq!((w.kind(), w.state()), (Kind::Range, State::Synced));
        w.set_state(State::Dead);
        w.set(EVENTS_SINCE_TICK, true);
        assert_eq!((w.kind(), w.state()), (Kind::Range, State::Dead));
        assert!(w.has(PREV_KV) && w.has(NO_PUT) && !w.has(NO_DELETE) && w.has(EVENTS_SINCE_TICK));
        assert_eq!((w.key(), w.range_end()), (&b"k"[..], Some(&b"z"[..])));
        let s = Watch::new(b"k", None, Kind::Range, 0, 0, 0, 0).span();
        assert!(s.contains(b"k") && s.contains(b"zzz") && !s.contains(b"a"));
    }
}
