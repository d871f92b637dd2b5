//! Key permissions of one user, merged: the READ and WRITE key sets every role of the user
//! grants, each a sorted list of disjoint intervals (etcd: `range_perm_cache.go`).
//!
//! A permission `(key, range_end)` covers, as a Range request with the same fields would:
//! * `range_end` empty: the single key `key`, i.e. the interval `[key, key + "\0")`;
//! * `range_end == "\0"`: every key from `key` on, `[key, ∞)` (with `key` empty: all keys);
//! * otherwise `[key, range_end)`; an empty interval (`range_end <= key`) covers nothing.
//!
//! Worked example: a role with READ on prefix `a/` (`["a/", "a0")`) and READ on the key `a0`
//! (`["a0", "a0\0")`), and a role with READ from `b` on (`["b", ∞)`), merge into the READ set
//! `["a/", "a0\0")`, `["b", ∞)`: a range `["a/x", "a0\0")` is allowed (inside the first
//! interval), `["a/", "b")` is not (`"a0\0"..."b"` is not covered), `["c", "\0")` is.
//!
//! A request is allowed only if one interval contains it whole; intervals that touch
//! (`[a, b)` and `[b, c)`) are merged, so no request is refused for spanning two grants.

use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::authpb::Permission;

/// The end of an interval: a key (exclusive) or no end.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    /// Exclusive end key.
    Key(Vec<u8>),
    /// Every key from the start on.
    Unbounded,
}

/// A half-open key interval `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Inclusive start.
    pub start: Vec<u8>,
    /// Exclusive end.
    pub end: End,
}

impl Interval {
    /// The keys `(key, range_end)` names, with etcd's range conventions (module docs);
    /// `None` when it names no key.
    pub fn of(key: &[u8], range_end: &[u8]) -> Option<Interval> {
        let end = match range_end {
            [] => {
                let mut e = key.to_vec();
                e.push(0);
                End::Key(e)
            }
            [0] => End::Unbounded,
            e if e <= key => return None,
            e => End::Key(e.to_vec()),
        };
        Some(Interval { start: key.to_vec(), end })
    }
}

/// A sorted set of disjoint, non-touching intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalSet {
    intervals: Vec<Interval>,
}

impl IntervalSet {
    /// Merges `intervals` (any order, overlapping or not).
    pub fn merge(mut intervals: Vec<Interval>) -> IntervalSet {
        intervals.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.end.cmp(&b.end)));
        let mut out: Vec<Interval> = Vec::with_capacity(intervals.len());
        for iv in intervals {
            if let Some(last) = out.last_mut() {
                let touches = match &last.end {
                    End::Unbounded => true,
                    End::Key(e) => iv.start <= *e,
                };
                if touches {
                    if iv.end > last.end {
                        last.end = iv.end;
                    }
                    continue;
                }
            }
            out.push(iv);
        }
        IntervalSet { intervals: out }
    }

    /// True when one interval contains all of `req`.
    pub fn contains(&self, req: &Interval) -> bool {
        // the last interval starting at or before req.start is the only candidate
        let i = self.intervals.partition_point(|iv| iv.start <= req.start);
        if i == 0 {
            return false;
        }
        let iv = &self.intervals[i - 1];
        match (&iv.end, &req.end) {
            (End::Unbounded, _) => true,
            (End::Key(_), End::Unbounded) => false,
            (End::Key(e), End::Key(r)) => r <= e,
        }
    }

    /// The intervals, sorted.
    pub fn intervals(&self) -> &[Interval] {
        &self.intervals
    }
}

/// What one user may read and write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPerms {
    /// Keys the user may read.
    pub read: IntervalSet,
    /// Keys the user may write.
    pub write: IntervalSet,
}

impl UserPerms {
    /// Merges the permissions of every role of a user.
    pub fn build<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> UserPerms {
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for p in perms {
            let Some(iv) = Interval::of(&p.key, &p.range_end) else { continue };
            match PermType::try_from(p.perm_type) {
                Ok(PermType::Read) => read.push(iv),
                Ok(PermType::Write) => write.push(iv),
                Ok(PermType::Readwrite) => {
                    read.push(iv.clone());
                    write.push(iv);
                }
                // an unknown type grants nothing
                Err(_) => {}
            }
        }
        UserPerms { read: IntervalSet::merge(read), write: IntervalSet::merge(write) }
    }

    /// May the user read `(key, range_end)` (Range conventions)? A request naming no key
    /// (`range_end <= key`) is allowed: it reads nothing.
    pub fn can_read(&self, key: &[u8], range_end: &[u8]) -> bool {
        Interval::of(key, range_end).is_none_or(|iv| self.read.contains(&iv))
    }

    /// May the user write `(key, range_end)`?
    pub fn can_write(&self, key: &[u8], range_end: &[u8]) -> bool {
        Interval::of(key, range_end).is_none_or(|iv| self.write.contains(&iv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &[u8]) -> Permission {
        Permission { perm_type: t as i32, key: key.into(), range_end: end.to_vec() }
    }

    #[test]
    fn single_key() {
        let p = UserPerms::build(&[perm(PermType::Read, "a", b"")]);
        assert!(p.can_read(b"a", b""));
        assert!(!p.can_read(b"a0", b""));
        assert!(!p.can_read(b"", b""));
        assert!(p.can_read(b"a", b"a\0"), "the range of exactly one key");
        assert!(!p.can_read(b"a", b"b"));
        assert!(!p.can_write(b"a", b""), "read does not grant write");
    }

    #[test]
    fn prefix_and_range() {
        // prefix "foo/" is ["foo/", "foo0")
        let p = UserPerms::build(&[perm(PermType::Readwrite, "foo/", b"foo0")]);
        assert!(p.can_read(b"foo/", b""));
        assert!(p.can_write(b"foo/bar", b""));
        assert!(p.can_read(b"foo/", b"foo0"));
        assert!(p.can_read(b"foo/a", b"foo/b"));
        assert!(!p.can_read(b"foo", b""));
        assert!(!p.can_read(b"foo0", b""));
        assert!(!p.can_read(b"foo/", b"foo1"), "past the end");
        assert!(!p.can_read(b"foo/", b"\0"), "from-key is wider than the prefix");
        assert!(!p.can_read(b"fo", b"foo/a"), "starts before");
    }

    #[test]
    fn from_key() {
        let p = UserPerms::build(&[perm(PermType::Write, "m", b"\0")]);
        assert!(p.can_write(b"m", b""));
        assert!(p.can_write(b"zzz", b""));
        assert!(p.can_write(b"m", b"\0"));
        assert!(p.can_write(b"n", b"\0"));
        assert!(!p.can_write(b"l", b"\0"));
        assert!(!p.can_write(b"a", b"n"));
        assert!(!p.can_read(b"m", b""));
        let all = UserPerms::build(&[perm(PermType::Read, "", b"\0")]);
        assert!(all.can_read(b"", b"\0"));
        assert!(all.can_read(b"\0", b""));
    }

    #[test]
    fn grants_of_several_roles_merge() {
        let p = UserPerms::build(&[
            perm(PermType::Read, "b", b"c"),
            perm(PermType::Read, "a", b"b"),
            perm(PermType::Read, "c", b""),
            perm(PermType::Read, "x", b"\0"),
            perm(PermType::Read, "y", b"z"),
        ]);
        assert_eq!(
            p.read.intervals(),
            &[
                Interval { start: b"a".to_vec(), end: End::Key(b"c\0".to_vec()) },
                Interval { start: b"x".to_vec(), end: End::Unbounded },
            ]
        );
        assert!(p.can_read(b"a", b"c\0"), "spans three touching grants");
        assert!(!p.can_read(b"a", b"c\0\0"));
        assert!(!p.can_read(b"d", b""));
        assert!(p.can_read(b"y", b"\0"));
    }

    #[test]
    fn overlapping_and_nested_grants() {
        let p = UserPerms::build(&[
            perm(PermType::Write, "a", b"z"),
            perm(PermType::Write, "b", b"c"),
            perm(PermType::Write, "k", b""),
            perm(PermType::Write, "y", b"zz"),
        ]);
        assert_eq!(p.write.intervals(), &[Interval { start: b"a".to_vec(), end: End::Key(b"zz".to_vec()) }]);
        assert!(p.can_write(b"a", b"zz"));
        assert!(!p.can_write(b"a", b"zz\0"));
    }

    #[test]
    fn empty_ranges_read_nothing_and_are_allowed() {
        let p = UserPerms::default();
        assert!(p.can_read(b"b", b"a"));
        assert!(!p.can_read(b"a", b""));
        assert!(Interval::of(b"b", b"b").is_none());
    }

    #[test]
    fn readwrite_grants_both_and_unknown_types_nothing() {
        let p = UserPerms::build(&[
            perm(PermType::Readwrite, "k", b""),
            Permission { perm_type: 7, key: b"q".to_vec(), range_end: vec![] },
        ]);
        assert!(p.can_read(b"k", b"") && p.can_write(b"k", b""));
        assert!(!p.can_read(b"q", b"") && !p.can_write(b"q", b""));
    }
}
