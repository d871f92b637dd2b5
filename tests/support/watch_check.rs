//! Checks what a watch delivered against the committed history.
//!
//! A watch is recorded as [`Segment`]s: one per stream, from the start revision it was
//! created with until the stream broke (server killed, connection lost) or the test ended.
//! The recorder re-creates a broken watch from the revision after the last one the segment
//! covered, so the segments together cover `[first start, end]` with no hole.
//!
//! The committed history ([`History`]) is what the clients know happened: every write that
//! was acknowledged (with its revision) and every write a read observed (its value and
//! mod_revision), plus the writes whose outcome is unknown, which may appear once each at a
//! revision nobody else claimed.
//!
//! For each segment with start revision S, covering up to C (the highest revision among
//! its events and progress notifications), the checker requires:
//! - events in strictly increasing (revision, sub-order) order, none below S, none twice
//!   (also across segments), none for a key outside the watched range;
//! - each event equal to the committed write at its revision (kind, key, value), or to one
//!   unused unknown-outcome write when no committed write holds that revision;
//! - no gap: every committed write on a watched key with S ≤ revision ≤ C delivered;
//! - all events of one revision in one response (or in consecutive `fragment` pieces);
//! - a progress notification at revision R is never below S − 1 (etcd #20221) and no event
//!   at a revision ≤ R comes after it on the stream (etcd #15220).
//!
//! Limits: events of unknown-outcome writes are checked for content, not for position
//! among themselves; a watch's `prev_kv` is not checked.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::linearizability::{self as lin, Operation, Output, Rev};

/// PUT or DELETE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Put,
    Delete,
}

/// One event as delivered (a delete's value is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    pub value: String,
    pub mod_revision: Rev,
}

impl Event {
    pub fn put(key: &str, value: &str, rev: Rev) -> Event {
        Event {
            kind: EventKind::Put,
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
        }
    }

    pub fn delete(key: &str, rev: Rev) -> Event {
        Event {
            kind: EventKind::Delete,
            key: key.into(),
            value: String::new(),
            mod_revision: rev,
        }
    }
}

/// One message of a watch stream, in arrival order (creation and cancel confirmations
/// are not recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Events {
        events: Vec<Event>,
        fragment: bool,
    },
    /// A progress notification (periodic or asked for): header revision R, no events.
    Progress {
        revision: Rev,
    },
}

/// What one watch stream delivered.
#[derive(Clone, Debug, Default)]
pub struct Segment {
    pub start_revision: Rev,
    pub responses: Vec<Response>,
    /// Why it ended, for the report.
    pub ended_by: String,
}

impl Segment {
    /// The highest revision this segment claims to have delivered everything up to.
    pub fn covered_to(&self) -> Rev {
        let mut c = self.start_revision - 1;
        for r in &self.responses {
            match r {
                Response::Progress { revision } => c = c.max(*revision),
                Response::Events { events, .. } => {
                    for e in events {
                        c = c.max(e.mod_revision)
                    }
                }
            }
        }
        c
    }
}

/// The keys a watch covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    Key(String),
    /// Every key starting with this.
    Prefix(String),
}

impl Watched {
    pub fn contains(&self, key: &str) -> bool {
        match self {
            Watched::Key(k) => k == key,
            Watched::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// A write known to be committed at `revision`; `sub` orders writes of one revision (a
/// multi-key txn), 0 otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedWrite {
    pub revision: Rev,
    pub sub: u32,
    pub kind: EventKind,
    pub key: String,
    /// Empty for a delete.
    pub value: String,
}

/// A write whose outcome is unknown: it may have been committed at some revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaybeWrite {
    pub kind: EventKind,
    pub key: String,
    pub value: String,
}

/// What the clients know about the writes.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub committed: Vec<CommittedWrite>,
    pub maybe: Vec<MaybeWrite>,
}

impl History {
    /// From a client history of single-key operations: acknowledged writes, writes seen
    /// by reads, and unknown-outcome writes.
    pub fn from_operations(ops: &[Operation]) -> History {
        let mut h = History::default();
        let mut seen: HashSet<(Rev, String)> = HashSet::new();
        let mut commit = |h: &mut History, rev: Rev, kind: EventKind, key: &str, value: &str| {
            if seen.insert((rev, key.to_string())) {
                h.committed.push(CommittedWrite {
                    revision: rev,
                    sub: 0,
                    kind,
                    key: key.into(),
                    value: value.into(),
                });
            }
        };
        for op in ops {
            if op.acknowledged_write() {
                let rev = op.header_revision().expect("acknowledged");
                match op.written_value() {
                    Some(v) => commit(&mut h, rev, EventKind::Put, &op.key, v),
                    None => commit(&mut h, rev, EventKind::Delete, &op.key, ""),
                }
            }
            if let Output::Get { kv: Some(kv), .. }
            | Output::Txn {
                else_kv: Some(Some(kv)),
                ..
            } = &op.output
            {
                commit(&mut h, kv.mod_revision, EventKind::Put, &op.key, &kv.value);
            }
        }
        for op in ops.iter().filter(|o| o.output == Output::Unknown) {
            let kind = match (&op.input, op.written_value()) {
                (_, Some(_)) => EventKind::Put,
                (
                    lin::Input::Delete
                    | lin::Input::Txn {
                        then: lin::Then::Delete,
                        ..
                    },
                    None,
                ) => EventKind::Delete,
                _ => continue,
            };
            // a write seen by a read is already committed
            let value = op.written_value().unwrap_or("").to_string();
            if kind == EventKind::Put
                && h.committed
                    .iter()
                    .any(|c| c.key == op.key && c.value == value)
            {
                continue;
            }
            h.maybe.push(MaybeWrite {
                kind,
                key: op.key.clone(),
                value,
            });
        }
        h.committed.sort_by_key(|c| (c.revision, c.sub));
        h
    }
}

/// Counts for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSummary {
    pub segments: usize,
    pub events: usize,
    pub progress_notifications: usize,
    /// Events of writes whose outcome the client did not learn.
    pub unknown_writes_seen: usize,
    pub covered_to: Rev,
}

const MAX_REPORTED: usize = 25;

/// Checks `segments` (in order) of a watch on `watched`; with `until`, the last segment
/// must have covered that revision. `Err` lists the violations (the first 25).
pub fn check_watch(
    watched: &Watched,
    history: &History,
    segments: &[Segment],
    until: Option<Rev>,
) -> Result<WatchSummary, Vec<String>> {
    let mut v: Vec<String> = Vec::new();
    let report = |v: &mut Vec<String>, msg: String| {
        if v.len() < MAX_REPORTED {
            v.push(msg)
        }
    };
    let mut committed: BTreeMap<Rev, Vec<&CommittedWrite>> = BTreeMap::new();
    for c in &history.committed {
        let at = committed.entry(c.revision).or_default();
        if let Some(other) = at.iter().find(|o| o.key == c.key) {
            report(
                &mut v,
                format!(
                    "the history itself has two writes of {:?} at revision {}: {other:?} and {c:?}",
                    c.key, c.revision
                ),
            );
        }
        at.push(c);
    }
    let mut maybe: HashMap<(EventKind, &str, &str), usize> = HashMap::new();
    for m in history.maybe.iter().filter(|m| watched.contains(&m.key)) {
        *maybe
            .entry((m.kind, m.key.as_str(), m.value.as_str()))
            .or_default() += 1;
    }

    let mut summary = WatchSummary {
        segments: segments.len(),
        ..Default::default()
    };
    let mut delivered: HashSet<(Rev, &str)> = HashSet::new();
    let mut last: Option<(Rev, u32)> = None;
    let mut prev_covered: Option<Rev> = None;
    for (si, seg) in segments.iter().enumerate() {
        let start = seg.start_revision;
        let at = |ri: usize| format!("segment {si} (from revision {start}), response {ri}");
        if let Some(c) = prev_covered {
            if start > c + 1 {
                report(&mut v, format!("segment {si} starts at revision {start} but the one before covered only up to {c}: revisions {}..={} were never watched", c + 1, start - 1));
            }
        }
        let mut max_progress: Option<Rev> = None;
        let mut in_segment: HashSet<(Rev, &str)> = HashSet::new();
        let mut prev_event: Option<(Rev, usize, bool)> = None;
        for (ri, resp) in seg.responses.iter().enumerate() {
            let (events, fragment) = match resp {
                Response::Progress { revision } => {
                    summary.progress_notifications += 1;
                    if *revision < start - 1 {
                        report(&mut v, format!("{}: progress notification at revision {revision}, below the watch's start revision {start} minus one", at(ri)));
                    }
                    max_progress = max_progress.max(Some(*revision));
                    continue;
                }
                Response::Events { events, fragment } => (events, *fragment),
            };
            for e in events {
                summary.events += 1;
                let rev = e.mod_revision;
                if !watched.contains(&e.key) {
                    report(
                        &mut v,
                        format!(
                            "{}: event for {:?}, outside the watched {watched:?}: {e:?}",
                            at(ri),
                            e.key
                        ),
                    );
                }
                if rev < start {
                    report(
                        &mut v,
                        format!(
                            "{}: event at revision {rev}, below the start revision {start}: {e:?}",
                            at(ri)
                        ),
                    );
                }
                if let Some(p) = max_progress.filter(|&p| rev <= p) {
                    report(&mut v, format!("{}: event at revision {rev} after a progress notification claimed everything up to {p} was delivered: {e:?}", at(ri)));
                }
                let sub = match committed.get(&rev) {
                    Some(ws) => match ws.iter().find(|w| w.key == e.key) {
                        Some(w) => {
                            if w.kind != e.kind || (w.kind == EventKind::Put && w.value != e.value)
                            {
                                report(&mut v, format!("{}: event {e:?} differs from the write committed at revision {rev}: {w:?}", at(ri)));
                            }
                            w.sub
                        }
                        None => {
                            report(
                                &mut v,
                                format!(
                                    "{}: event {e:?}, but revision {rev} committed {ws:?}",
                                    at(ri)
                                ),
                            );
                            0
                        }
                    },
                    None => {
                        let value = if e.kind == EventKind::Put {
                            e.value.as_str()
                        } else {
                            ""
                        };
                        match maybe.get_mut(&(e.kind, e.key.as_str(), value)) {
                            Some(n) if *n > 0 => {
                                *n -= 1;
                                summary.unknown_writes_seen += 1;
                            }
                            _ => report(&mut v, format!("{}: event {e:?} matches no write any client issued (or one delivered twice)", at(ri))),
                        }
                        0
                    }
                };
                if !delivered.insert((rev, e.key.as_str())) {
                    report(
                        &mut v,
                        format!(
                            "{}: duplicate event: revision {rev} of {:?} was delivered before",
                            at(ri),
                            e.key
                        ),
                    );
                } else if last.is_some_and(|l| (rev, sub) <= l) {
                    report(&mut v, format!("{}: event at revision {rev} (sub {sub}) after revision {:?}: out of order", at(ri), last.unwrap()));
                }
                last = last.max(Some((rev, sub)));
                if let Some((prev_rev, prev_ri, prev_fragment)) = prev_event {
                    if prev_rev == rev && prev_ri != ri && !(prev_fragment && prev_ri + 1 == ri) {
                        report(&mut v, format!("{}: events of revision {rev} split across responses {prev_ri} and {ri}", at(ri)));
                    }
                }
                prev_event = Some((rev, ri, fragment));
                in_segment.insert((rev, e.key.as_str()));
            }
        }
        let covered = seg.covered_to();
        // a segment that covered nothing yet (covered < start) has no committed write to
        // check; BTreeMap::range panics on an inverted range
        let checked = if covered >= start { committed.range(start..=covered) } else { committed.range(start..start) };
        for (rev, ws) in checked {
            for w in ws.iter().filter(|w| watched.contains(&w.key)) {
                if !in_segment.contains(&(*rev, w.key.as_str())) {
                    report(&mut v, format!("segment {si} (from revision {start}, covering up to {covered}, ended by {}): gap, the committed write {w:?} was not delivered", seg.ended_by));
                }
            }
        }
        prev_covered = Some(covered);
        summary.covered_to = covered;
    }
    if let Some(until) = until {
        if summary.covered_to < until {
            report(
                &mut v,
                format!(
                    "the watch covered only up to revision {} of {until}",
                    summary.covered_to
                ),
            );
        }
    }
    if v.is_empty() {
        Ok(summary)
    } else {
        Err(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: Rev, key: &str, value: &str) -> CommittedWrite {
        CommittedWrite {
            revision: rev,
            sub: 0,
            kind: EventKind::Put,
            key: key.into(),
            value: value.into(),
        }
    }

    /// k: a@2 b@3 c@4 deleted@5, z (not watched)@7, k: d@8.
    fn history() -> History {
        let mut committed = vec![put(2, "k", "a"), put(3, "k", "b"), put(4, "k", "c")];
        committed.push(CommittedWrite {
            revision: 5,
            sub: 0,
            kind: EventKind::Delete,
            key: "k".into(),
            value: String::new(),
        });
        committed.extend([put(7, "z", "x"), put(8, "k", "d")]);
        History {
            committed,
            maybe: vec![MaybeWrite {
                kind: EventKind::Put,
                key: "k".into(),
                value: "e".into(),
            }],
        }
    }

    fn ev(events: Vec<Event>) -> Response {
        Response::Events {
            events,
            fragment: false,
        }
    }

    fn seg(start: Rev, responses: Vec<Response>) -> Segment {
        Segment {
            start_revision: start,
            responses,
            ended_by: "test".into(),
        }
    }

    fn k() -> Watched {
        Watched::Key("k".into())
    }

    fn good_stream() -> Vec<Response> {
        vec![
            ev(vec![Event::put("k", "a", 2)]),
            ev(vec![Event::put("k", "b", 3)]),
            Response::Progress { revision: 3 },
            ev(vec![Event::put("k", "c", 4)]),
            ev(vec![Event::delete("k", 5)]),
            Response::Progress { revision: 7 },
            ev(vec![Event::put("k", "d", 8)]),
        ]
    }

    fn violations(segments: &[Segment], until: Option<Rev>) -> Vec<String> {
        check_watch(&k(), &history(), segments, until)
            .err()
            .unwrap_or_default()
    }

    fn assert_violation(segments: &[Segment], needle: &str) {
        let v = violations(segments, None);
        assert!(
            v.iter().any(|m| m.contains(needle)),
            "expected {needle:?} among {v:#?}"
        );
    }

    #[test]
    fn good_stream_passes() {
        let s = check_watch(&k(), &history(), &[seg(2, good_stream())], Some(8)).unwrap();
        assert_eq!(
            s,
            WatchSummary {
                segments: 1,
                events: 5,
                progress_notifications: 2,
                unknown_writes_seen: 0,
                covered_to: 8
            }
        );
        // from a later start revision, the earlier writes are not expected
        let late: Vec<Response> = good_stream().into_iter().skip(3).collect();
        assert!(check_watch(&k(), &history(), &[seg(4, late)], Some(8)).is_ok());
    }

    #[test]
    fn restarted_watch_segments_pass() {
        let s = good_stream();
        let segments = [
            seg(2, s[..2].to_vec()),
            seg(4, s[3..5].to_vec()),
            seg(6, s[5..].to_vec()),
        ];
        assert_eq!(
            check_watch(&k(), &history(), &segments, Some(8))
                .unwrap()
                .segments,
            3
        );
        // a progress notification moves the restart point
        let segments = [seg(2, s[..3].to_vec()), seg(4, s[3..].to_vec())];
        assert!(check_watch(&k(), &history(), &segments, Some(8)).is_ok());
    }

    #[test]
    fn gap_is_reported() {
        let mut s = good_stream();
        s.remove(1); // b@3
        assert_violation(&[seg(2, s)], "gap");
        // a hole between segments
        let s = good_stream();
        assert_violation(
            &[seg(2, s[..1].to_vec()), seg(4, s[3..].to_vec())],
            "never watched",
        );
        // and a watch that stopped short
        let v = violations(&[seg(2, good_stream()[..4].to_vec())], Some(8));
        assert!(
            v.iter()
                .any(|m| m.contains("covered only up to revision 4")),
            "{v:#?}"
        );
    }

    #[test]
    fn duplicate_is_reported() {
        let mut s = good_stream();
        s.insert(2, ev(vec![Event::put("k", "b", 3)]));
        assert_violation(&[seg(2, s)], "duplicate");
        // delivered again by the next segment
        let s = good_stream();
        assert_violation(
            &[seg(2, s[..2].to_vec()), seg(3, s[1..].to_vec())],
            "duplicate",
        );
    }

    #[test]
    fn out_of_order_is_reported() {
        let mut s = good_stream();
        s.swap(1, 3);
        assert_violation(&[seg(2, s)], "out of order");
    }

    #[test]
    fn wrong_content_is_reported() {
        let mut s = good_stream();
        s[1] = ev(vec![Event::put("k", "x", 3)]);
        assert_violation(&[seg(2, s)], "differs from the write committed");
        let mut s = good_stream();
        s[4] = ev(vec![Event::put("k", "", 5)]);
        assert_violation(&[seg(2, s)], "differs from the write committed");
    }

    #[test]
    fn events_outside_the_watch_or_below_start_are_reported() {
        let mut s = good_stream();
        s.insert(6, ev(vec![Event::put("z", "x", 7)]));
        assert_violation(&[seg(2, s)], "outside the watched");
        assert_violation(&[seg(3, good_stream())], "below the start revision");
    }

    #[test]
    fn phantom_and_unknown_outcome_events() {
        // e@6 was a write whose client never got an answer: allowed once
        let mut s = good_stream();
        s.insert(5, ev(vec![Event::put("k", "e", 6)]));
        let sum = check_watch(&k(), &history(), &[seg(2, s.clone())], None).unwrap();
        assert_eq!(sum.unknown_writes_seen, 1);
        // ... not twice
        let mut twice = s.clone();
        twice.insert(6, ev(vec![Event::put("k", "e", 6)]));
        assert!(!violations(&[seg(2, twice)], None).is_empty());
        // nobody wrote f
        let mut s = good_stream();
        s.insert(5, ev(vec![Event::put("k", "f", 6)]));
        assert_violation(&[seg(2, s)], "matches no write");
    }

    #[test]
    fn revision_split_across_responses_is_reported() {
        // a txn wrote two keys at revision 10
        let mut h = History::default();
        h.committed.push(put(10, "p/1", "x"));
        h.committed.push(CommittedWrite {
            sub: 1,
            ..put(10, "p/2", "y")
        });
        let w = Watched::Prefix("p/".into());
        let (e1, e2) = (Event::put("p/1", "x", 10), Event::put("p/2", "y", 10));
        assert!(check_watch(
            &w,
            &h,
            &[seg(10, vec![ev(vec![e1.clone(), e2.clone()])])],
            Some(10)
        )
        .is_ok());
        let split = vec![ev(vec![e1.clone()]), ev(vec![e2.clone()])];
        let v = check_watch(&w, &h, &[seg(10, split)], None).unwrap_err();
        assert!(v[0].contains("split across responses"), "{v:?}");
        // fragments are how a big revision is allowed to arrive in pieces
        let fragments = vec![
            Response::Events {
                events: vec![e1.clone()],
                fragment: true,
            },
            ev(vec![e2.clone()]),
        ];
        assert!(check_watch(&w, &h, &[seg(10, fragments)], Some(10)).is_ok());
        // and sub-order counts: p/2 before p/1 is out of order
        let v = check_watch(&w, &h, &[seg(10, vec![ev(vec![e2, e1])])], None).unwrap_err();
        assert!(v[0].contains("out of order"), "{v:?}");
    }

    #[test]
    fn progress_overtaking_events_is_reported() {
        let mut s = good_stream();
        s[2] = Response::Progress { revision: 4 }; // claims c@4 was delivered, but it comes next
        assert_violation(&[seg(2, s)], "after a progress notification");
        // a progress notification below the start revision (etcd #20221)
        let s: Vec<Response> = std::iter::once(Response::Progress { revision: 1 })
            .chain(good_stream().into_iter().skip(3))
            .collect();
        assert_violation(&[seg(4, s)], "below the watch's start revision");
    }

    #[test]
    fn history_from_operations() {
        use super::lin::{Input, Kv, Then};
        let op = |key: &str, input: Input, output: Output| Operation {
            client: 0,
            key: key.into(),
            call: 0,
            ret: (output != Output::Unknown).then_some(1),
            input,
            output,
        };
        let ops = vec![
            op(
                "k",
                Input::Put { value: "a".into() },
                Output::Put { revision: 2 },
            ),
            op("k", Input::Put { value: "b".into() }, Output::Unknown),
            op(
                "k",
                Input::Get,
                Output::Get {
                    kv: Some(Kv {
                        value: "b".into(),
                        mod_revision: 3,
                    }),
                    header_revision: 3,
                },
            ),
            op("k", Input::Put { value: "c".into() }, Output::Unknown),
            op(
                "k",
                Input::Delete,
                Output::Delete {
                    deleted: true,
                    header_revision: 5,
                },
            ),
            op(
                "k",
                Input::Txn {
                    compare: lin::Compare::ModRevision(5),
                    then: Then::Delete,
                    else_get: true,
                },
                Output::Unknown,
            ),
        ];
        let h = History::from_operations(&ops);
        let revs: Vec<(Rev, EventKind)> =
            h.committed.iter().map(|c| (c.revision, c.kind)).collect();
        assert_eq!(
            revs,
            [
                (2, EventKind::Put),
                (3, EventKind::Put),
                (5, EventKind::Delete)
            ]
        );
        let maybe: Vec<(EventKind, &str)> =
            h.maybe.iter().map(|m| (m.kind, m.value.as_str())).collect();
        assert_eq!(maybe, [(EventKind::Put, "c"), (EventKind::Delete, "")]);
    }
}
