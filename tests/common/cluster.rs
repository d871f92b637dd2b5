//! A cluster of server processes (cairn or the real etcd, with etcd's flags) for the
//! whole-system tests: each member has its own data dir, client URL and peer listener, and
//! advertises the peer URL of a forwarder the test owns ([`super::proxy`]), so a test can
//! partition the members as well as kill -9, restart, pause and resume them.
//!
//! Members are named `m0`, `m1`, ... after their index; indexes never change, a removed
//! member keeps its slot. Everything is blocking: from async code call it on a blocking
//! thread (`tokio::task::spawn_blocking`).
//!
//! Readiness: a member of a multi-member cluster logs `ready to serve client requests` only
//! once a leader has committed its attributes, so [`ProcCluster::start`] launches every
//! member before it waits for any.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::proxy::{CutMode, Links, Stats};
use super::READY_TIMEOUT;
use super::{check_ok, etcdctl_command, free_addr, spawn_server, wait_for, Event, Kind};

/// How long a started cluster may take to agree on a leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// The `--initial-cluster-token` of every test cluster.
pub const TOKEN: &str = "cairn-cluster-test";
/// How long a membership change may be refused because the cluster is not yet healthy
/// (etcd wants every voter connected for 5 s first).
pub const RECONFIG_TIMEOUT: Duration = Duration::from_secs(15);

/// One member process and everything needed to start it again with identical flags.
struct Member {
    name: String,
    client: SocketAddr,
    /// Where the member listens for peers (only its forwarder connects here).
    peer_listen: SocketAddr,
    /// Its forwarder: the peer URL everyone else uses.
    peer_advertised: SocketAddr,
    data_dir: PathBuf,
    /// Where it serves `/health` and `/metrics`, if it does.
    metrics: Option<SocketAddr>,
    extra_args: Vec<String>,
    initial_cluster: String,
    /// `new` for the founding members, `existing` for added ones.
    state: &'static str,
    child: Option<Child>,
    ready: Option<mpsc::Receiver<Event>>,
    log: Arc<Mutex<String>>,
    paused: bool,
    removed: bool,
    /// The member id, once learned (from `member add` or the member's status).
    id: Option<u64>,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls=http://{}", self.peer_listen),
            format!(
                "--initial-advertise-peer-urls=http://{}",
                self.peer_advertised
            ),
            format!("--initial-cluster={}", self.initial_cluster),
            format!("--initial-cluster-state={}", self.state),
            format!("--initial-cluster-token={TOKEN}"),
        ];
        if let Some(m) = self.metrics {
            args.push(format!("--listen-metrics-urls=http://{m}"));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts the process; [`Member::wait_ready`] waits for it to serve.
    fn spawn(&mut self, kind: Kind) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.log.lock().unwrap().clear();
        let (child, rx) = spawn_server(kind, &self.args(), &self.log).unwrap_or_else(|e| panic!("{e}"));
        self.child = Some(child);
        self.ready = Some(rx);
        self.paused = false;
    }

    /// Waits until the process logged that it serves, until `deadline`.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let rx = self.ready.take().ok_or("not started")?;
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Ready) => Ok(()),
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let st = self.child.as_mut().and_then(|c| c.wait().ok());
                self.child = None;
                Err(format!("{} exited before it was ready ({st:?})", self.name))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("{} not ready in time", self.name)),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.ready = None;
        self.paused = false;
    }
}

/// How to set up one member, for [`ProcCluster::start_with`]; the default is what
/// [`ProcCluster::start`] does.
#[derive(Clone, Debug, Default)]
pub struct MemberOptions {
    /// Its data dir (e.g. on a small file system the test mounted) instead of one in the
    /// cluster's temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Also serve `/health` and `/metrics` (`--listen-metrics-urls`) at
    /// [`ProcCluster::metrics_addr`].
    pub metrics: bool,
    /// More flags (e.g. `--snapshot-count=100`), for every start of this member.
    pub extra_args: Vec<String>,
}

/// A member about to start, as [`ProcCluster::start_prepared`] shows it.
pub struct Prepare<'a> {
    pub index: usize,
    pub name: &'a str,
    /// `--initial-cluster` of the whole cluster.
    pub initial_cluster: &'a str,
    /// Its advertised peer URL.
    pub peer_url: &'a str,
    pub data_dir: &'a std::path::Path,
}

/// What `etcdctl endpoint status` says about one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub member_id: u64,
    /// 0 when the member knows no leader.
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub is_learner: bool,
    /// The server version it reports, e.g. `3.4.23`.
    pub version: String,
}

/// One row of `etcdctl member list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    /// Empty until the member started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A running cluster. Every member is killed (SIGKILL) on drop.
pub struct ProcCluster {
    kind: Kind,
    members: Vec<Member>,
    links: Links,
    tmp: TempDir,
}

impl ProcCluster {
    /// Starts `n` members and waits until each serves and all agree on a leader.
    pub fn start(kind: Kind, n: usize) -> ProcCluster {
        ProcCluster::start_with(kind, n, &[])
    }

    /// Like [`ProcCluster::start`], with member `i` set up as `opts` says for each
    /// `(i, opts)` in `options`; the other members as by [`ProcCluster::start`].
    pub fn start_with(kind: Kind, n: usize, options: &[(usize, MemberOptions)]) -> ProcCluster {
        ProcCluster::start_prepared(kind, n, options, &mut |_| {})
    }

    /// Like [`ProcCluster::start_with`], calling `prepare` for each member once every
    /// member's addresses are known and before any starts (e.g. to build its data folder
    /// with `etcdctl snapshot restore`, which records the cluster's peer URLs).
    pub fn start_prepared(kind: Kind, n: usize, options: &[(usize, MemberOptions)], prepare: &mut dyn FnMut(Prepare<'_>)) -> ProcCluster {
        let tmp = tempfile::Builder::new()
            .prefix("cairn-cluster-")
            .tempdir()
            .expect("create temp dir");
        let mut c = ProcCluster {
            kind,
            members: Vec::new(),
            links: Links::new(),
            tmp,
        };
        for _ in 0..n {
            c.new_member("new");
        }
        for (i, opts) in options {
            let m = &mut c.members[*i];
            if let Some(dir) = &opts.data_dir {
                m.data_dir = dir.clone();
            }
            m.metrics = opts.metrics.then(free_addr);
            m.extra_args = opts.extra_args.clone();
        }
        let initial = c.initial_cluster(0..n);
        for (i, m) in c.members.iter().enumerate() {
            let peer_url = format!("http://{}", m.peer_advertised);
            prepare(Prepare { index: i, name: &m.name, initial_cluster: &initial, peer_url: &peer_url, data_dir: &m.data_dir });
        }
        for i in 0..n {
            c.members[i].initial_cluster = initial.clone();
            c.launch(i);
        }
        c.wait_all_ready(0..n);
        c.wait_leader_agreed(LEADER_TIMEOUT);
        c
    }

    /// Adds a slot: addresses, data dir and forwarder; does not start anything.
    fn new_member(&mut self, state: &'static str) -> usize {
        let i = self.members.len();
        // a "free" address can be taken by someone else before the forwarder binds it (seen
        // once in CI as AddrInUse): take fresh ones then
        let mut attempts = 0;
        let (peer_listen, j) = loop {
            let (peer_listen, proxy) = (free_addr(), free_addr());
            match self.links.add_member(proxy, peer_listen) {
                Ok(j) => break (peer_listen, j),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 5 => attempts += 1,
                Err(e) => panic!("start a peer forwarder: {e}"),
            }
        };
        assert_eq!(i, j, "member and forwarder indexes agree");
        self.members.push(Member {
            name: format!("m{i}"),
            client: free_addr(),
            peer_listen,
            peer_advertised: self.links.proxy_addr(i),
            data_dir: self.tmp.path().join(format!("m{i}")),
            metrics: None,
            extra_args: Vec::new(),
            initial_cluster: String::new(),
            state,
            child: None,
            ready: None,
            log: Arc::new(Mutex::new(String::new())),
            paused: false,
            removed: false,
            id: None,
        });
        i
    }

    fn initial_cluster(&self, members: impl Iterator<Item = usize>) -> String {
        let parts: Vec<String> = members
            .map(|i| {
                format!(
                    "{}=http://{}",
                    self.members[i].name, self.members[i].peer_advertised
                )
            })
            .collect();
        parts.join(",")
    }

    /// Starts member `i`'s process and tells the forwarders its pid (before it can
    /// connect anywhere, so every connection it opens is attributed to it).
    fn launch(&mut self, i: usize) {
        self.members[i].spawn(self.kind);
        self.links.set_pid(i, self.members[i].pid());
    }

    fn wait_all_ready(&mut self, members: impl Iterator<Item = usize>) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for i in members {
            if let Err(e) = self.members[i].wait_ready(deadline) {
                self.members[i].kill9();
                panic!(
                    "{:?} cluster did not start: {e}\n{}",
                    self.kind,
                    self.logs()
                );
            }
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Number of member slots (removed members included).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Indexes of the members not removed.
    pub fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| !self.members[i].removed)
            .collect()
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// Client URLs of the members not removed.
    pub fn endpoints(&self) -> Vec<String> {
        self.live().into_iter().map(|i| self.endpoint(i)).collect()
    }

    /// Where member `i` serves `/health` and `/metrics`, if it was started with
    /// [`MemberOptions::metrics`].
    pub fn metrics_addr(&self, i: usize) -> Option<SocketAddr> {
        self.members[i].metrics
    }

    /// The peer URL member `i` advertises (its forwarder).
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://{}", self.members[i].peer_advertised)
    }

    /// Makes `target` the leader (etcdctl move-leader through the current one).
    pub fn make_leader(&mut self, target: usize) {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let leader = self.wait_leader_agreed(LEADER_TIMEOUT);
            if leader == target {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become the leader within {LEADER_TIMEOUT:?}\n{}",
                self.name(target),
                self.logs()
            );
            let id = format!("{:x}", self.member_id(target).expect("ids known after start"));
            let out = self.ctl(leader, &["move-leader", &id]);
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                eprintln!("move-leader {id}: {}", stderr.lines().last().unwrap_or(""));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Member `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> &std::path::Path {
        &self.members[i].data_dir
    }

    /// The lines `etcdctl alarm list` prints through member `i`, sorted.
    pub fn alarm_list(&self, i: usize) -> Vec<String> {
        let mut lines: Vec<String> = self.ctl_ok(i, &["alarm", "list"]).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Member `i`'s id, once known (after start, or after `add_member`).
    pub fn member_id(&self, i: usize) -> Option<u64> {
        self.members[i].id
    }

    /// Index of the member with this id.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == Some(id))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Member `i`'s exit status if its process exited on its own (it still counts as
    /// running for [`ProcCluster::is_running`] until killed or restarted).
    pub fn exit_status(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.members[i].child.as_mut()?.try_wait().ok()?
    }

    /// Everything member `i` logged since it last started.
    pub fn log(&self, i: usize) -> String {
        self.members[i].log.lock().unwrap().clone()
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let cmd = m.args().join(" ");
            s.push_str(&format!("--- {} ({cmd}) ---\n{}\n", m.name, self.log(i)));
        }
        s
    }

    /// The forwarders' connection counts.
    pub fn link_stats(&self) -> Stats {
        self.links.stats()
    }

    /// The first peer connections that came from no member, described.
    pub fn unidentified_links(&self) -> Vec<String> {
        self.links.unidentified()
    }

    /// SIGTERM member `i` and wait (up to `timeout`) until it exits; true if it exited in
    /// time (otherwise it is killed).
    pub fn stop(&mut self, i: usize, timeout: Duration) -> bool {
        self.members[i].signal(libc::SIGTERM);
        let exited = self.wait_exit(i, timeout);
        self.kill9(i);
        exited
    }

    /// Waits (up to `timeout`) until member `i`'s process exits on its own; true if it did
    /// (or none runs).
    fn wait_exit(&mut self, i: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = self.members[i].child.as_mut() else {
                return true;
            };
            if matches!(c.try_wait(), Ok(Some(_))) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Replaces member `i`'s extra flags (from its next start on).
    pub fn set_extra_args(&mut self, i: usize, args: &[&str]) {
        self.members[i].extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// SIGKILL member `i` (no chance to flush anything).
    pub fn kill9(&mut self, i: usize) {
        self.members[i].kill9();
        self.links.set_pid(i, None);
    }

    /// Starts a killed member again with identical flags, on the same data dir and
    /// addresses, and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        self.launch(i);
        self.wait_all_ready(i..i + 1);
    }

    /// Like [`ProcCluster::restart`], but gives up after `timeout` and says why instead of
    /// panicking (the member is killed if it still runs): for a member that may rightly
    /// refuse to start.
    pub fn try_restart(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        self.launch(i);
        let r = self.members[i].wait_ready(Instant::now() + timeout);
        if r.is_err() {
            self.kill9(i);
        }
        r
    }

    pub fn kill9_and_restart(&mut self, i: usize) {
        self.kill9(i);
        self.restart(i);
    }

    /// Kills every live member at once, starts them all again and waits until they serve
    /// and agree on a leader.
    pub fn kill9_all_and_restart(&mut self) {
        let live = self.live();
        for &i in &live {
            self.kill9(i);
        }
        for &i in &live {
            self.launch(i);
        }
        self.wait_all_ready(live.into_iter());
        self.wait_leader_agreed(LEADER_TIMEOUT);
    }

    /// SIGSTOP member `i`: it keeps its sockets and answers nothing.
    pub fn pause(&mut self, i: usize) {
        self.members[i].signal(libc::SIGSTOP);
        self.members[i].paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) {
        self.members[i].signal(libc::SIGCONT);
        self.members[i].paused = false;
    }

    /// Cuts every peer link between member `i` and the others (clients still reach it).
    pub fn isolate(&mut self, i: usize, mode: CutMode) {
        self.links.isolate(i, mode);
    }

    /// Cuts every peer link between a member of `a` and one of `b`.
    pub fn partition(&mut self, a: &[usize], b: &[usize], mode: CutMode) {
        self.links.partition(a, b, mode);
    }

    /// Restores every peer link.
    pub fn heal(&mut self) {
        self.links.heal();
    }

    /// `etcdctl --endpoints=<member i> ARGS`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        run(etcdctl_command(&self.endpoint(i), args))
    }

    /// `etcdctl --endpoints=<members, comma-separated> ARGS`.
    pub fn ctl_on(&self, members: &[usize], args: &[&str]) -> Output {
        let eps: Vec<String> = members.iter().map(|&i| self.endpoint(i)).collect();
        run(etcdctl_command(&eps.join(","), args))
    }

    /// `etcdctl` through member `i`; asserts success, returns stdout.
    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        check_ok(args, &self.ctl(i, args))
    }

    /// `etcdctl -w json` through member `i`; asserts success, parses stdout.
    pub fn ctl_json(&self, i: usize, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        let out = self.ctl_ok(i, &a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("etcdctl {a:?}: bad JSON ({e}): {out}"))
    }

    /// Member `i`'s status, or `None` if it does not answer within `timeout`.
    pub fn status(&self, i: usize, timeout: Duration) -> Option<Status> {
        if !self.is_running(i) || self.members[i].paused {
            return None;
        }
        let t = format!("--command-timeout={}ms", timeout.as_millis());
        let d = format!("--dial-timeout={}ms", timeout.as_millis());
        let out = self.ctl(i, &["endpoint", "status", "-w", "json", &d, &t]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        parse_status(&v[0]["Status"])
    }

    /// Statuses of the running, unpaused members (`None` for the others).
    pub fn statuses(&mut self) -> Vec<Option<Status>> {
        let s: Vec<Option<Status>> = (0..self.len())
            .map(|i| self.status(i, Duration::from_secs(1)))
            .collect();
        for (i, st) in s.iter().enumerate() {
            if let Some(st) = st {
                self.members[i].id = Some(st.member_id);
            }
        }
        s
    }

    /// The member that says it is the leader now, if any answers so.
    pub fn leader_now(&mut self) -> Option<usize> {
        let s = self.statuses();
        s.iter()
            .flatten()
            .find(|st| st.leader != 0 && st.leader == st.member_id)
            .and_then(|st| self.index_of(st.member_id))
    }

    /// Waits (up to [`LEADER_TIMEOUT`]) for a member that says it leads; its index.
    pub fn leader(&mut self) -> usize {
        wait_for("a leader", LEADER_TIMEOUT, || self.leader_now())
    }

    /// Waits until every running, unpaused live member answers its status and all name
    /// the same leader, which names itself; returns that leader's index.
    pub fn wait_leader_agreed(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live();
            let s = self.statuses();
            let up: Vec<&Status> = live
                .iter()
                .filter(|&&i| self.is_running(i) && !self.members[i].paused)
                .filter_map(|&i| s[i].as_ref())
                .collect();
            let expected = live
                .iter()
                .filter(|&&i| self.is_running(i) && !self.members[i].paused)
                .count();
            if up.len() == expected && !up.is_empty() {
                let l = up[0].leader;
                if l != 0
                    && up.iter().all(|st| st.leader == l)
                    && up.iter().any(|st| st.member_id == l)
                {
                    if let Some(i) = self.index_of(l) {
                        return i;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "the members did not agree on a leader within {timeout:?}: {s:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl member list` through member `i`.
    pub fn member_list(&self, i: usize) -> Vec<MemberInfo> {
        let v = self.ctl_json(i, &["member", "list"]);
        let rows = v["members"].as_array().cloned().unwrap_or_default();
        rows.iter().map(parse_member).collect()
    }

    /// Adds a member with `etcdctl member add` (through the live members), starts it with
    /// `--initial-cluster-state=existing` and the initial cluster etcdctl printed, and
    /// waits until it serves. Returns its index.
    pub fn add_member(&mut self, learner: bool) -> usize {
        let i = self.new_member("existing");
        let name = self.members[i].name.clone();
        let peer = self.peer_url(i);
        let peer_flag = format!("--peer-urls={peer}");
        let mut args = vec!["member", "add", name.as_str(), peer_flag.as_str()];
        if learner {
            args.push("--learner");
        }
        // etcd refuses changes until every voter has been connected for 5 s
        // (`--strict-reconfig-check`, "etcdserver: unhealthy cluster"): retry
        let mut out = self.ctl_on(&self.live(), &args);
        let deadline = Instant::now() + RECONFIG_TIMEOUT;
        while !out.status.success() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            out = self.ctl_on(&self.live(), &args);
        }
        let text = check_ok(&args, &out);
        let id = text
            .split_whitespace()
            .skip_while(|w| *w != "Member")
            .nth(1)
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        let initial = text
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("`member add` printed no ETCD_INITIAL_CLUSTER:\n{text}"));
        assert!(
            initial.contains(&format!("{name}={peer}")),
            "`member add` printed an initial cluster without {name}={peer}: {initial}"
        );
        let unnamed = initial
            .split(',')
            .any(|e| e.split_once('=').is_none_or(|(n, _)| n.is_empty()));
        assert!(
            !unnamed,
            "`member add` printed an initial cluster with an unnamed member (the new member \
             could not start from it): {initial}"
        );
        let m = &mut self.members[i];
        m.id = id;
        m.initial_cluster = initial;
        self.launch(i);
        self.wait_all_ready(i..i + 1);
        i
    }

    /// Records that member `i` was removed from the cluster; waits (up to `timeout`) for
    /// its process to exit on its own, then kills it if it did not. True if it exited.
    pub fn forget_removed(&mut self, i: usize, timeout: Duration) -> bool {
        self.members[i].removed = true;
        let exited = self.wait_exit(i, timeout);
        self.kill9(i);
        exited
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run etcdctl")
}

fn parse_status(v: &serde_json::Value) -> Option<Status> {
    Some(Status {
        member_id: v["header"]["member_id"].as_u64()?,
        leader: v["leader"].as_u64().unwrap_or(0),
        raft_term: v["raftTerm"].as_u64().unwrap_or(0),
        raft_index: v["raftIndex"].as_u64().unwrap_or(0),
        raft_applied_index: v["raftAppliedIndex"].as_u64().unwrap_or(0),
        revision: v["header"]["revision"].as_i64().unwrap_or(0),
        is_learner: v["isLearner"].as_bool().unwrap_or(false),
        version: v["version"].as_str().unwrap_or("").to_string(),
    })
}

fn parse_member(v: &serde_json::Value) -> MemberInfo {
    let strings = |f: &str| -> Vec<String> {
        v[f].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    MemberInfo {
        id: v["ID"]
            .as_u64()
            .unwrap_or_else(|| panic!("member without ID: {v}")),
        name: v["name"].as_str().unwrap_or("").to_string(),
        peer_urls: strings("peerURLs"),
        client_urls: strings("clientURLs"),
        is_learner: v["isLearner"].as_bool().unwrap_or(false),
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        // SIGKILL: fastest, and the data dirs are thrown away anyway
        for m in &mut self.members {
            m.kill9();
        }
    }
}
