use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use cairn_proto::cairnpb::RequestAuth;
use cairn_storage::ApplyResponse;
use parking_lot::Mutex;

use super::*;

const MIN: Duration = Duration::from_secs(60);

#[test]
fn retention_is_parsed_as_etcd_parses_it() {
    let p = |mode: &str, r: &str| Retention::parse(mode, r).map_err(|e| e.to_string());
    assert_eq!(p("periodic", "0"), Ok(None));
    assert_eq!(p("revision", "0"), Ok(None));
    assert_eq!(p("periodic", "1"), Ok(Some(Retention::Periodic(Duration::from_secs(3600)))), "a bare number is hours");
    assert_eq!(p("periodic", "30m"), Ok(Some(Retention::Periodic(30 * MIN))));
    assert_eq!(p("periodic", "1h30m"), Ok(Some(Retention::Periodic(90 * MIN))));
    assert_eq!(p("revision", "1000"), Ok(Some(Retention::Revisions(1000))));
    assert_eq!(p("compact", "1"), Err("unknown auto-compaction-mode \"compact\"".to_owned()));
    assert!(p("periodic", "soon").unwrap_err().starts_with("error parsing CompactionRetention"));
}

#[test]
fn periodic_keeps_the_period_and_then_compacts_every_interval() {
    // 10 minutes: a sample every minute, the first compaction 10 minutes in
    let mut p = Periodic::new(10 * MIN);
    assert_eq!(p.tick(), MIN);
    let mut now = Duration::ZERO;
    let mut compacted = Vec::new();
    for rev in 1..=30 {
        p.sample(rev * 100);
        now += p.tick();
        if let Some(r) = p.due(now) {
            compacted.push((now.as_secs() / 60, r));
            p.succeeded(now);
        }
    }
    // at minute 10 the oldest sample is minute 0's; then every 10 minutes, the sample taken
    // 10 minutes before
    assert_eq!(compacted, vec![(10, 100), (20, 1000), (30, 2000)]);
}

#[test]
fn periodic_retries_a_failed_compaction_at_the_next_wake_up() {
    let mut p = Periodic::new(10 * MIN);
    let mut now = Duration::ZERO;
    for rev in 1..=10 {
        p.sample(rev);
        now += p.tick();
    }
    assert_eq!(p.due(now), Some(1));
    // failed: not marked done; the next wake-up tries again (the window holds period/tick
    // + 1 samples, as etcd's: the oldest is still the first)
    p.sample(11);
    now += p.tick();
    assert_eq!(p.due(now), Some(1));
    p.succeeded(now);
    p.sample(12);
    now += p.tick();
    assert_eq!(p.due(now), None, "the next one is an interval after the success");
}

#[test]
fn a_long_period_compacts_hourly_with_the_whole_period_kept() {
    let mut p = Periodic::new(Duration::from_secs(24 * 3600));
    assert_eq!(p.tick(), 6 * MIN);
    let mut now = Duration::ZERO;
    let mut first = None;
    let mut second = None;
    for rev in 1..=(25 * 10) {
        p.sample(rev);
        now += p.tick();
        if let Some(r) = p.due(now) {
            p.succeeded(now);
            if first.is_none() {
                first = Some((now.as_secs() / 3600, r));
            } else if second.is_none() {
                second = Some((now.as_secs() / 3600, r));
            }
        }
    }
    // 24 h in, the sample from the start (the window holds 24 h of 6-minute samples)
    assert_eq!(first, Some((24, 1)));
    // an hour later, the oldest of the 241 samples kept (24 h of them, one per 6 minutes)
    assert_eq!(second, Some((25, 10)));
}

#[test]
fn by_revision_keeps_the_last_revisions_and_skips_repeats() {
    let mut r = ByRevision::new(1000);
    assert_eq!(r.due(500), None, "not enough history");
    assert_eq!(r.due(1000), None);
    assert_eq!(r.due(1500), Some(500));
    r.succeeded(500);
    assert_eq!(r.due(1500), None, "no write since: nothing new to compact");
    assert_eq!(r.due(1501), Some(501));
}

/// Records the compactions proposed; refuses the first `fail` of them.
#[derive(Default)]
struct Recorder {
    compactions: Mutex<Vec<i64>>,
    fail: AtomicI64,
}

impl Proposer for Recorder {
    async fn propose_as(&self, request: Request, _auth: Option<RequestAuth>) -> Result<ApplyResponse, RequestError> {
        let Request::Compaction(c) = request else { panic!("only compactions are proposed") };
        self.compactions.lock().push(c.revision);
        if self.fail.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Err(RequestError::Timeout);
        }
        Err(RequestError::Storage(StorageError::Compacted))
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_compacts_and_a_failure_is_retried() {
    let proposer = Arc::new(Recorder { fail: AtomicI64::new(1), ..Recorder::default() });
    let revision = Arc::new(AtomicI64::new(1));
    let leading = Arc::new(AtomicBool::new(false));
    let (r, l) = (revision.clone(), leading.clone());
    let compactor = AutoCompactor::new(
        Retention::Periodic(Duration::from_secs(10)),
        proposer.clone(),
        move || r.load(Ordering::SeqCst),
        move || l.load(Ordering::SeqCst),
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(compactor.run(stopped));
    // a write every second for 30 s, as a follower: nothing is proposed
    for rev in 2..=31 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        revision.store(rev, Ordering::SeqCst);
    }
    assert!(proposer.compactions.lock().is_empty(), "a follower does not compact");
    // leading now: the first attempt fails (Timeout), the next wake-up (1 s later) succeeds
    // ("already compacted" counts as done); then one per 10 s
    leading.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = proposer.compactions.lock().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0] < seen[1], "the window moved on between the two: {seen:?}");
    assert!(seen.iter().all(|r| (20..=23).contains(r)), "about 10 s of history kept at revision 31: {seen:?}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(proposer.compactions.lock().len(), 3);
    stop.send(true).expect("stop");
    task.await.expect("loop ends");
}
