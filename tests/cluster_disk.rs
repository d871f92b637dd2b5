//! Disk faults on a three-member cluster (issue 5: the nemesis makes the disk fail).
//!
//! One member's disk is a small tmpfs the test mounts: its whole data dir (once while it
//! follows, once while it leads), or only cairn's `member/raft` (so that the WAL fails, not
//! the store). It is big enough to start (the WAL preallocates its active segment 4 MiB
//! ahead, up to 64 MiB a segment) and full after some MiB of writes. 1 MiB values are written through the healthy members
//! until the member logs `No space left on device`. Then:
//! - writes through the healthy members keep succeeding (they are a quorum), and every
//!   acknowledged write is readable from them;
//! - the full member serves no key or value nobody wrote and does not panic; cairn's logs
//!   that it stopped applying and exits with a failure status, as etcd does (a failed
//!   backend commit is fatal to it): clients and their watches move to healthy members;
//! - restarted on the still-full disk it may refuse to start, but must not panic nor serve
//!   anything uncommitted;
//! - once the disk is grown and the member restarted, it serves every committed write, takes
//!   writes again, and all three members agree on raft index, applied index, revision and
//!   KV hash.
//!
//! Mounting needs root (CI runs the tests as root); without it the tests fail and say so.
//! The target is cairn by default, real etcd with `CAIRN_TEST_TARGET=etcd` (which cannot run
//! the WAL-only case). `cargo test --release --test cluster_disk -- --nocapture`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::cluster::{MemberOptions, ProcCluster, LEADER_TIMEOUT};
use common::{b64decode, etcdctl_command, target_kind, wait_for, Kind};

/// The data dir's disk: room for cairn's first WAL segment (up to 64 MiB) plus 16 MiB;
/// the WAL and the store fill it after some values (either may fail first).
const DATA_DISK_MIB: u64 = 80;
/// The same for etcd, which also preallocates its next segment (2 x 64,000,000 bytes) when
/// it starts: on a smaller disk that takes all the space for a moment, and a backend commit
/// then may fail before the member is even ready.
const ETCD_DATA_DISK_MIB: u64 = 144;
/// The disk of cairn's `member/raft` alone: the first WAL segment and 6 MiB, so the second
/// segment cannot grow far.
const WAL_DISK_MIB: u64 = 70;
/// Size after healing: room for everything the member missed.
const HEALED_DISK_MIB: u64 = 512;
/// Each value: large, below `--max-request-bytes` (1.5 MiB).
const VALUE_BYTES: usize = 1 << 20;
/// Writes through the healthy members after the fault.
const WRITES_AFTER_FAULT: usize = 6;
/// Per-request timeout of a put (longer than an election with etcd's defaults).
const PUT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the healed member may take to serve everything it missed.
const CATCH_UP: Duration = Duration::from_secs(20);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a restart on the still-full disk may take to serve or give up.
const FULL_RESTART_TIMEOUT: Duration = Duration::from_secs(5);
/// The member whose disk fills up.
const FAULTY: usize = 2;
const HEALTHY: [usize; 2] = [0, 1];
const PREFIX: &str = "/disk/";
/// What cairn logs when its write path halts on an I/O error.
const CAIRN_HALTED: &str = "this member stops applying";

/// A tmpfs the test mounted; unmounted on drop (also when the test panics). Declare it
/// before the cluster using it, so that the members are killed first.
struct Tmpfs {
    path: PathBuf,
    /// Holds the mount point; removed once unmounted.
    _owner: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a `size_mib` tmpfs at `owner/under` (created).
    fn mount(size_mib: u64, owner: tempfile::TempDir, under: &str) -> Tmpfs {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            uid, 0,
            "cluster_disk mounts a small tmpfs to fill a member's disk and needs root \
             (uid is {uid}); run it as root (CI does) or in a container with CAP_SYS_ADMIN"
        );
        let path = owner.path().join(under);
        std::fs::create_dir_all(&path).expect("create the mount point");
        let opts = format!("size={size_mib}M,mode=0700");
        let out = sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(&path));
        assert!(
            out.status.success(),
            "cannot mount a {size_mib} MiB tmpfs on {} (cluster_disk needs `mount -t tmpfs`, \
             i.e. root with CAP_SYS_ADMIN): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            path,
            _owner: owner,
        }
    }

    /// Grows (or shrinks) the file system in place; its files stay.
    fn resize(&self, size_mib: u64) {
        let opts = format!("remount,size={size_mib}M");
        let out = sh(Command::new("mount").args(["-o", &opts]).arg(&self.path));
        assert!(
            out.status.success(),
            "cannot resize the tmpfs at {} to {size_mib} MiB: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Bytes in use and in total, for messages.
    fn describe(&self) -> String {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        assert_eq!(r, 0, "statvfs {}", self.path.display());
        let frsize = st.f_frsize as u64;
        let used = (st.f_blocks - st.f_bfree) as u64 * frsize;
        format!(
            "{} of {} in use",
            mib(used),
            mib(st.f_blocks as u64 * frsize)
        )
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = sh(Command::new("umount").arg(&self.path));
        if !out.status.success() {
            // still busy (a process we could not reap): detach it; it goes when unused
            let lazy = sh(Command::new("umount").arg("-l").arg(&self.path));
            if !lazy.status.success() {
                eprintln!(
                    "cannot unmount the tmpfs at {}: {}",
                    self.path.display(),
                    String::from_utf8_lossy(&lazy.stderr).trim()
                );
            }
        }
    }
}

fn sh(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// The last line a command wrote to stderr (etcdctl's error).
fn last_line(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    s.lines().last().unwrap_or("").to_string()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// One cluster at a time: two clusters writing big values at once would slow each other's
/// elections and fsyncs past the timeouts asserted here.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn key(n: usize) -> String {
    format!("{PREFIX}{n:04}")
}

/// The value written to `key(n)`: `VALUE_BYTES` of letters that differ per key (no two
/// values alike, nothing a compressor could shrink much).
fn value(n: usize) -> Vec<u8> {
    let mut v = format!("value {n}: ").into_bytes();
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// Which `n` a key of ours stands for.
fn key_number(k: &str) -> Option<usize> {
    k.strip_prefix(PREFIX)?.parse().ok()
}

/// One put and what the client was told.
#[derive(Debug)]
struct Write {
    n: usize,
    via: usize,
    /// `Ok`: acknowledged. `Err`: the client saw an error or a timeout (the write may or
    /// may not have been committed).
    outcome: Result<(), String>,
}

/// `etcdctl put key(n)` through member `i`, the value on stdin (too big for an argument).
fn put(c: &ProcCluster, i: usize, n: usize, timeout: Duration) -> Write {
    let k = key(n);
    let t = format!("--command-timeout={}ms", timeout.as_millis());
    let mut cmd = etcdctl_command(&c.endpoint(i), &["put", &k, &t, "--dial-timeout=1s"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn etcdctl");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&value(n)));
    let out = child.wait_with_output().expect("wait for etcdctl");
    let fed = feeder.join().expect("stdin feeder");
    let outcome = if out.status.success() {
        fed.map_err(|e| format!("etcdctl acknowledged a value it could not read: {e}"))
    } else {
        Err(last_line(&out.stderr))
    };
    Write { n, via: i, outcome }
}

fn ctl_json(
    c: &ProcCluster,
    i: usize,
    args: &[&str],
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let t = format!("--command-timeout={}ms", timeout.as_millis());
    let d = format!("--dial-timeout={}ms", timeout.as_millis().min(2_000));
    let mut a = args.to_vec();
    a.extend(["-w", "json", &t, &d]);
    let out = c.ctl(i, &a);
    if !out.status.success() {
        return Err(last_line(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("etcdctl {a:?}: bad JSON: {e}"))
}

fn read_args(mut args: Vec<&str>, serializable: bool) -> Vec<&str> {
    if serializable {
        args.push("--consistency=s");
    }
    args
}

/// Every key under `PREFIX` through member `i`.
fn keys(c: &ProcCluster, i: usize, serializable: bool) -> Result<BTreeSet<String>, String> {
    let args = read_args(vec!["get", PREFIX, "--prefix", "--keys-only"], serializable);
    let v = ctl_json(c, i, &args, READ_TIMEOUT)?;
    let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
    Ok(kvs.iter().map(|kv| common::b64str(&kv["key"])).collect())
}

/// Keys of ours read per request: a response of 16 MiB (one request for all of them would
/// be dozens of MiB, one per key would take seconds).
const READ_CHUNK: usize = 16;

/// Every key `key(n)`, `n` in `range`, with its value, through member `i`.
fn values(
    c: &ProcCluster,
    i: usize,
    serializable: bool,
    range: std::ops::Range<usize>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut all = BTreeMap::new();
    for from in range.clone().step_by(READ_CHUNK) {
        let (a, b) = (key(from), key((from + READ_CHUNK).min(range.end)));
        let v = ctl_json(
            c,
            i,
            &read_args(vec!["get", &a, &b], serializable),
            READ_TIMEOUT,
        )?;
        for kv in v["kvs"].as_array().cloned().unwrap_or_default() {
            let value = b64decode(kv["value"].as_str().expect("a base64 value"));
            all.insert(common::b64str(&kv["key"]), value);
        }
    }
    Ok(all)
}

/// Asserts that every key in `got` is one of ours below `key(written)` and holds the value
/// written to it.
fn assert_written(got: &BTreeMap<String, Vec<u8>>, written: usize, what: &str) {
    for (k, v) in got {
        let n = key_number(k).filter(|&n| n < written);
        let n = n.unwrap_or_else(|| panic!("{what}: a key nobody wrote: {k}"));
        assert!(
            *v == value(n),
            "{what}: {k} holds a value nobody wrote ({} bytes: {:?}...)",
            v.len(),
            String::from_utf8_lossy(&v[..v.len().min(40)])
        );
    }
}

/// `(revision, hash)` of member `i`'s `endpoint hashkv`.
fn hashkv(c: &ProcCluster, i: usize) -> Option<(i64, u64)> {
    let v = ctl_json(c, i, &["endpoint", "hashkv"], Duration::from_secs(2)).ok()?;
    let h = &v[0]["HashKV"];
    Some((h["header"]["revision"].as_i64()?, h["hash"].as_u64()?))
}

/// `GET /health` from member `i`'s metrics URL: (HTTP status, body).
fn health(c: &ProcCluster, i: usize) -> Result<(u16, String), String> {
    let addr = c.metrics_addr(i).expect("started with a metrics URL");
    let get = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        Ok(raw)
    };
    let raw = get().map_err(|e| e.to_string())?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {raw:?}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.trim().to_string()))
}

fn says_disk_full(log: &str) -> bool {
    log.to_ascii_lowercase().contains("no space left on device")
}

/// The faulty member's log lines worth reporting.
fn notable_lines(log: &str) -> String {
    let wanted = [
        "ERROR", "WARN", " E |", " C |", " W |", "panic", "torn", "space",
    ];
    log.lines()
        .filter(|l| wanted.iter().any(|w| l.contains(w)))
        .filter(|l| !l.contains("accepted but ignored") && !l.contains("not cryptographically"))
        .map(|l| format!("    {}\n", l.chars().take(300).collect::<String>()))
        .collect()
}

/// Which of the faulty member's disks is small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SmallDisk {
    /// Its whole data dir.
    DataDir,
    /// Only cairn's `member/raft` (the WAL and Raft snapshots): the WAL fails, not the store.
    CairnWal,
}

/// The whole scenario: the faulty member's `disk` fills up while it follows or leads.
fn disk_fills_up(disk: SmallDisk, faulty_leads: bool) {
    let _serial = one_at_a_time();
    let kind = target_kind();
    let started = Instant::now();
    let owner = tempfile::Builder::new()
        .prefix("cairn-disk-")
        .tempdir()
        .expect("temp dir");
    let data_dir = owner.path().join("data");
    let (fs, size_mib) = match disk {
        SmallDisk::DataDir => {
            let size = match kind {
                Kind::Cairn => DATA_DISK_MIB,
                Kind::Etcd => ETCD_DATA_DISK_MIB,
            };
            (Tmpfs::mount(size, owner, "data"), size)
        }
        SmallDisk::CairnWal => (
            Tmpfs::mount(WAL_DISK_MIB, owner, "data/member/raft"),
            WAL_DISK_MIB,
        ),
    };
    let opts = MemberOptions {
        data_dir: Some(data_dir),
        metrics: true,
        ..Default::default()
    };
    let mut c = ProcCluster::start_with(kind, 3, &[(FAULTY, opts)]);
    c.make_leader(if faulty_leads { FAULTY } else { HEALTHY[0] });
    let role = if faulty_leads { "leader" } else { "follower" };
    let what = format!("{kind:?} {disk:?} {role}");
    eprintln!(
        "{what}: {} started, its disk: {} ({:?})",
        c.name(FAULTY),
        fs.describe(),
        started.elapsed()
    );

    let mut writes = fill(&mut c, &fs, size_mib, faulty_leads, &what);
    after_fault(&mut c, &mut writes, faulty_leads, &what);
    let committed = committed(&c, &writes, &what);
    restart_on_full_disk(&mut c, &committed, &what);
    heal(&mut c, &fs, &committed, &writes, &what);
    eprintln!("{what}: took {:?}", started.elapsed());
}

/// Writes through the healthy members until the faulty member reports a full disk (and
/// cairn's halts); returns the writes.
fn fill(
    c: &mut ProcCluster,
    fs: &Tmpfs,
    size_mib: u64,
    faulty_leads: bool,
    what: &str,
) -> Vec<Write> {
    let started = Instant::now();
    // beyond twice the disk's size the member is not going to fail
    let max_writes = ((2 * size_mib as usize) << 20) / VALUE_BYTES;
    // only what it logs from now on: etcd already complained at startup that it could not
    // preallocate its next WAL segment
    let log_before = c.log(FAULTY).len();
    let new_log = |c: &ProcCluster| c.log(FAULTY).get(log_before..).unwrap_or("").to_string();
    let mut writes: Vec<Write> = Vec::new();
    while !says_disk_full(&new_log(c)) && c.exit_status(FAULTY).is_none() {
        assert!(
            writes.len() < max_writes,
            "{what}: {} reported no full disk after {} writes of {} (disk: {})\n{}",
            c.name(FAULTY),
            writes.len(),
            mib(VALUE_BYTES as u64),
            fs.describe(),
            c.logs()
        );
        let n = writes.len();
        writes.push(put(c, HEALTHY[n % 2], n, PUT_TIMEOUT));
    }
    let took = started.elapsed();
    // before the fault the cluster was healthy: only the write in flight when a faulty
    // leader stopped may have failed
    let last_may_fail = usize::from(faulty_leads);
    for w in &writes[..writes.len() - last_may_fail] {
        assert!(
            w.outcome.is_ok(),
            "{what}: put {} through {} failed with only {}'s disk full: {w:?}\n{}",
            key(w.n),
            c.name(w.via),
            c.name(FAULTY),
            c.logs()
        );
    }
    // let the member's reaction complete: cairn halts its write path, etcd exits (its
    // backend commit failing is fatal); only cairn's is asserted
    match c.kind() {
        Kind::Cairn => wait_for(
            "cairn to log that it stopped applying",
            READ_TIMEOUT,
            || c.log(FAULTY).contains(CAIRN_HALTED).then_some(()),
        ),
        Kind::Etcd => {
            let deadline = Instant::now() + READ_TIMEOUT;
            while c.exit_status(FAULTY).is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let log = new_log(c);
    let exit = c.exit_status(FAULTY);
    assert!(
        says_disk_full(&log),
        "{what}: {} exited without logging a full disk ({exit:?})\n{log}",
        c.name(FAULTY)
    );
    assert!(
        !log.contains("panicked at"),
        "{what}: {} panicked on a full disk:\n{log}",
        c.name(FAULTY)
    );
    eprintln!(
        "{what}: {} reported a full disk after {} writes of {} in {took:?} (disk {}); exit \
         status: {exit:?}; its log:\n{}",
        c.name(FAULTY),
        writes.len(),
        mib(VALUE_BYTES as u64),
        fs.describe(),
        notable_lines(&log)
    );
    writes
}

/// The healthy members are a quorum: writes through them keep succeeding. The full member,
/// while it still runs, serves only what it applied before and (cairn) fails `etcdctl
/// endpoint health`; cairn's exits with a failure status, as etcd's does.
fn after_fault(c: &mut ProcCluster, writes: &mut Vec<Write>, faulty_leads: bool, what: &str) {
    let started = Instant::now();
    wait_for("a healthy member to lead", LEADER_TIMEOUT, || {
        HEALTHY.iter().copied().find(|&i| {
            c.status(i, Duration::from_secs(1))
                .is_some_and(|s| s.leader != 0 && s.leader == s.member_id)
        })
    });
    let took = started.elapsed();
    if faulty_leads {
        eprintln!("{what}: a healthy member leads {took:?} after the fault was seen");
    }
    for _ in 0..WRITES_AFTER_FAULT {
        let n = writes.len();
        let w = put(c, HEALTHY[n % 2], n, PUT_TIMEOUT);
        assert!(
            w.outcome.is_ok(),
            "{what}: put {} through {} failed after {}'s disk filled up (the others are a \
             quorum): {w:?}\n{}",
            key(n),
            c.name(w.via),
            c.name(FAULTY),
            c.logs()
        );
        writes.push(w);
    }
    if c.kind() == Kind::Cairn {
        // it stopped applying: it shuts down (a graceful drain of at most a few seconds)
        let deadline = Instant::now() + READ_TIMEOUT;
        while c.exit_status(FAULTY).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let exit = c.exit_status(FAULTY);
        assert!(
            exit.is_some_and(|s| !s.success()),
            "{what}: cairn's member that stopped applying should exit with a failure status: \
             {exit:?}\n{}",
            c.log(FAULTY)
        );
        return;
    }
    if c.exit_status(FAULTY).is_some() {
        return;
    }
    let w = put(c, FAULTY, writes.len(), Duration::from_secs(2));
    eprintln!("{what}: a put through the full member: {:?}", w.outcome);
    writes.push(w);
    let ctl_health = c.ctl(FAULTY, &["endpoint", "health", "--command-timeout=2s"]);
    eprintln!(
        "{what}: endpoint health of the full member: {}{}",
        String::from_utf8_lossy(&ctl_health.stdout).trim(),
        last_line(&ctl_health.stderr)
    );
    if c.kind() == Kind::Cairn {
        assert!(
            !ctl_health.status.success(),
            "{what}: cairn's halted member says it is healthy:\n{}",
            String::from_utf8_lossy(&ctl_health.stdout)
        );
    }
    let served = check_served(c, writes.len(), what);
    eprintln!(
        "{what}: the full member still serves {} keys (serializable); its status: {:?}",
        served.len(),
        c.status(FAULTY, Duration::from_secs(1))
    );
}

/// What the faulty member serves from its own state (serializable), if it answers: only
/// keys that were written, with the values written. Returns the keys.
fn check_served(c: &ProcCluster, written: usize, what: &str) -> BTreeSet<String> {
    let Ok(served) = keys(c, FAULTY, true) else {
        return BTreeSet::new();
    };
    let all_ours = served
        .iter()
        .all(|k| key_number(k).is_some_and(|n| n < written));
    assert!(
        all_ours,
        "{what}: {} serves keys nobody wrote: {served:?}",
        c.name(FAULTY)
    );
    // the values of the last keys it applied: where a write cut short by the fault would be
    // (all of them in the data dir cases; the WAL case applied dozens before it failed)
    let last = served
        .iter()
        .filter_map(|k| key_number(k))
        .max()
        .map_or(0, |n| n + 1);
    if let Ok(got) = values(c, FAULTY, true, last.saturating_sub(READ_CHUNK)..last) {
        assert_written(
            &got,
            written,
            &format!("{what}: {} (full disk)", c.name(FAULTY)),
        );
    }
    served
}

/// Every acknowledged write is readable from the healthy members (linearizable), and
/// nothing that was not written is there. Returns the keys the cluster holds.
fn committed(c: &ProcCluster, writes: &[Write], what: &str) -> BTreeSet<String> {
    let committed = keys(c, HEALTHY[0], false).expect("list the keys through a healthy member");
    let acked: BTreeSet<String> = writes
        .iter()
        .filter(|w| w.outcome.is_ok())
        .map(|w| key(w.n))
        .collect();
    let lost: Vec<&String> = acked.difference(&committed).collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged writes are lost: {lost:?}"
    );
    // the values through one healthy member; the other must then hold the same history
    let got = values(c, HEALTHY[0], false, 0..writes.len()).expect("read through a healthy member");
    assert_written(
        &got,
        writes.len(),
        &format!("{what}: {}", c.name(HEALTHY[0])),
    );
    let keys0: BTreeSet<String> = got.into_keys().collect();
    assert_eq!(
        keys0,
        committed,
        "{what}: {} holds other keys than it lists",
        c.name(HEALTHY[0])
    );
    let keys1 = keys(c, HEALTHY[1], false).expect("list the keys through a healthy member");
    assert_eq!(
        keys1, committed,
        "{what}: the healthy members hold different keys"
    );
    wait_for(
        "the healthy members to report the same KV hash",
        CATCH_UP,
        || {
            let h: Vec<_> = HEALTHY
                .iter()
                .map(|&i| hashkv(c, i))
                .collect::<Option<_>>()?;
            (h[0] == h[1]).then_some(())
        },
    );
    let unknown: Vec<&Write> = writes.iter().filter(|w| w.outcome.is_err()).collect();
    eprintln!(
        "{what}: {} writes, {} acknowledged, {} committed; not acknowledged: {unknown:?}",
        writes.len(),
        acked.len(),
        committed.len()
    );
    committed
}

/// A restart on the still-full disk: the member may refuse to start or start and halt
/// again, but must not panic nor serve anything that was not committed.
fn restart_on_full_disk(c: &mut ProcCluster, committed: &BTreeSet<String>, what: &str) {
    c.kill9(FAULTY);
    let r = c.try_restart(FAULTY, FULL_RESTART_TIMEOUT);
    let log = c.log(FAULTY);
    assert!(
        !log.contains("panicked at"),
        "{what}: a restart on the full disk panicked:\n{log}"
    );
    if r.is_ok() {
        let served = check_served(c, usize::MAX, what);
        let bogus: Vec<&String> = served.difference(committed).collect();
        assert!(
            bogus.is_empty(),
            "{what}: after a restart on the full disk it serves uncommitted keys {bogus:?}"
        );
    }
    eprintln!(
        "{what}: a restart on the still-full disk: {r:?}; its log:\n{}",
        notable_lines(&log)
    );
    c.kill9(FAULTY);
}

/// A bigger disk and a restart: the member catches up on everything, and all three agree
/// on the raft index, applied index, revision and KV hash.
fn heal(
    c: &mut ProcCluster,
    fs: &Tmpfs,
    committed: &BTreeSet<String>,
    writes: &[Write],
    what: &str,
) {
    let started = Instant::now();
    fs.resize(HEALED_DISK_MIB);
    if let Err(e) = c.try_restart(FAULTY, Duration::from_secs(20)) {
        // nothing tolerated: the page store opens at its last commit whatever ENOSPC cut
        // short (sled could leave its files corrupt; it is no longer the default)
        panic!("{what}: the healed member did not restart: {e}\n{}", c.logs());
    }
    let restarted = started.elapsed();
    wait_for(
        "the healed member to serve every committed key",
        CATCH_UP,
        || (keys(c, FAULTY, true).ok()? == *committed).then_some(()),
    );
    let got = values(c, FAULTY, true, 0..writes.len()).expect("read the healed member");
    assert_written(&got, writes.len(), &format!("{what}: the healed member"));
    let keys: BTreeSet<String> = got.into_keys().collect();
    assert_eq!(
        keys, *committed,
        "{what}: the healed member serves other keys than the cluster"
    );
    let statuses = wait_for(
        "all members to report the same raft and applied index",
        CATCH_UP,
        || {
            let s: Vec<_> = (0..3)
                .map(|i| c.status(i, Duration::from_secs(1)))
                .collect::<Option<_>>()?;
            let same = s.iter().all(|st| {
                st.raft_index == s[0].raft_index
                    && st.raft_applied_index == s[0].raft_index
                    && st.revision == s[0].revision
                    && st.leader == s[0].leader
            });
            same.then_some(s)
        },
    );
    wait_for("all members to report the same KV hash", CATCH_UP, || {
        let h: Vec<_> = (0..3).map(|i| hashkv(c, i)).collect::<Option<_>>()?;
        h.iter().all(|x| *x == h[0]).then_some(())
    });
    let caught_up = started.elapsed();
    // and it takes part in writes again
    let w = put(c, FAULTY, writes.len(), PUT_TIMEOUT);
    assert!(
        w.outcome.is_ok(),
        "{what}: put through the healed member: {w:?}\n{}",
        c.logs()
    );
    assert!(
        values(c, HEALTHY[0], false, w.n..w.n + 1)
            .is_ok_and(|got| got.get(&key(w.n)) == Some(&value(w.n))),
        "{what}: a write through the healed member is not readable elsewhere"
    );
    let log = c.log(FAULTY);
    assert!(
        !log.contains("panicked at"),
        "{what}: the healed member panicked:\n{log}"
    );
    let h = health(c, FAULTY);
    assert!(
        matches!(&h, Ok((200, _))),
        "{what}: /health of the healed member: {h:?}"
    );
    eprintln!(
        "{what}: healed: serving after {restarted:?}, caught up after {caught_up:?} (raft index \
         {}, revision {}, disk {}); its log:\n{}",
        statuses[0].raft_index,
        statuses[0].revision,
        fs.describe(),
        notable_lines(&log)
    );
}

#[test]
fn a_follower_whose_disk_fills_up_halts_and_catches_up_after_healing() {
    disk_fills_up(SmallDisk::DataDir, false);
}

#[test]
fn a_leader_whose_disk_fills_up_is_replaced_and_catches_up_after_healing() {
    disk_fills_up(SmallDisk::DataDir, true);
}

/// cairn only: etcd keeps its WAL in `member/wal`, which it creates by renaming a temporary
/// directory onto it, so that directory cannot be a mount point.
#[test]
fn a_follower_whose_wal_disk_fills_up_halts_and_catches_up_after_healing() {
    let kind = target_kind();
    if kind != Kind::Cairn {
        eprintln!("skipped for {kind:?}: its WAL directory cannot be a mount point");
        return;
    }
    disk_fills_up(SmallDisk::CairnWal, false);
}
