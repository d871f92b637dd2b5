//! Test harness shared by the integration tests: starts a server process
//! (cairn or the real etcd, with the same etcd-style flags) on fresh loopback
//! addresses with a fresh data directory, waits for it to log
//! `ready to serve client requests`, and stops it on drop.
//!
//! Real etcd/etcdctl are expected at /usr/bin (Debian packages `etcd-server`
//! and `etcd-client`); `scripts/test.sh` installs them.
#![allow(dead_code)]

pub mod cluster;
pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM before it is killed
/// (longer than a server's own 10 s drain of in-flight requests).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The log line a server prints once it serves clients.
pub const READY_MARKER: &str = "ready to serve client requests";

/// What etcd 3.4 logs instead once it serves when started with `--logger=zap`.
pub const ETCD_ZAP_READY_MARKER: &str = "\"msg\":\"serving client traffic ";

/// Which server binary to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cairn,
    Etcd,
}

impl Kind {
    pub fn binary(self) -> PathBuf {
        match self {
            Kind::Cairn => PathBuf::from(env!("CARGO_BIN_EXE_cairn")),
            Kind::Etcd => etcd_bin(),
        }
    }
}

fn tool_path(override_var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(override_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !p.is_file() {
        panic!(
            "{} not found (set {override_var} to override). The integration tests need real \
             etcd 3.4+ and etcdctl: run `bash scripts/test.sh`, which installs them \
             (apt-get install etcd-server etcd-client) and then runs the tests.",
            p.display()
        );
    }
    p
}

/// Starts a server process of `kind` with `args` (and no `ETCD_*`/`ETCDCTL_*` variables:
/// configuration comes from the flags only); its output goes to `log`, and the receiver
/// hears when it logs that it is ready (or its stderr closed).
fn spawn_server(
    kind: Kind,
    args: &[String],
    log: &Arc<Mutex<String>>,
) -> Result<(Child, mpsc::Receiver<Event>), String> {
    let mut cmd = Command::new(kind.binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ETCD_") || k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", kind.binary().display()))?;
    let (tx, rx) = mpsc::channel();
    let (Some(stderr), Some(stdout)) = (child.stderr.take(), child.stdout.take()) else {
        return Err("the child's output pipes are missing".into());
    };
    spawn_reader(stderr, log.clone(), Some(tx));
    spawn_reader(stdout, log.clone(), None);
    Ok((child, rx))
}

/// Path of the real etcd server binary.
pub fn etcd_bin() -> PathBuf {
    tool_path("CAIRN_TEST_ETCD_BIN", "/usr/bin/etcd")
}

/// Path of etcdctl.
pub fn etcdctl_bin() -> PathBuf {
    tool_path("CAIRN_TEST_ETCDCTL_BIN", "/usr/bin/etcdctl")
}

/// The server the single-target suites (etcdctl_kv, rust_client) run
/// against: cairn by default, real etcd with `CAIRN_TEST_TARGET=etcd` (to
/// check the tests themselves).
pub fn target_kind() -> Kind {
    match std::env::var("CAIRN_TEST_TARGET").as_deref() {
        Ok("etcd") => Kind::Etcd,
        Ok("cairn") | Err(_) => Kind::Cairn,
        Ok(other) => panic!("CAIRN_TEST_TARGET must be `cairn` or `etcd`, not {other:?}"),
    }
}

/// A loopback address with a port that was free a moment ago. Each call uses
/// a different 127.x.y.z address (derived from the process id and a counter),
/// so concurrent tests and concurrent test processes practically never race
/// for the same socket; falls back to 127.0.0.1 if the address can't be bound.
pub fn free_addr() -> SocketAddr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = std::process::id()
        .wrapping_mul(97)
        .wrapping_add(n.wrapping_mul(7919));
    let ip = Ipv4Addr::new(
        127,
        1 + (seed >> 16) as u8 % 254,
        (seed >> 8) as u8,
        1 + (seed as u8) % 254,
    );
    for ip in [ip, Ipv4Addr::LOCALHOST] {
        if let Ok(l) = TcpListener::bind((ip, 0)) {
            return l.local_addr().expect("local_addr");
        }
    }
    panic!("cannot bind any loopback address");
}

/// Extra settings for [`Server::start_with`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra command-line flags appended after the standard ones.
    pub extra_args: Vec<String>,
    /// Use this data dir instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
}

/// A running server process. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    kind: Kind,
    child: Option<Child>,
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    log: Arc<Mutex<String>>,
    _tmp: Option<TempDir>,
}

enum Event {
    Ready,
    Eof,
}

impl Server {
    /// Starts `kind` with a fresh data dir.
    pub fn start(kind: Kind) -> Server {
        Server::start_with(kind, Options::default())
    }

    pub fn start_with(kind: Kind, opts: Options) -> Server {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("cairn-test-")
                    .tempdir()
                    .expect("create temp data dir");
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut s = Server {
            kind,
            child: None,
            name: "default".to_string(),
            client: free_addr(),
            peer: free_addr(),
            data_dir,
            extra_args: opts.extra_args,
            log: Arc::new(Mutex::new(String::new())),
            _tmp: tmp,
        };
        s.launch();
        s
    }

    /// Launches the process and waits until it is ready. Retries with new
    /// addresses when a port turned out to be taken.
    fn launch(&mut self) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_launch() {
                Ok(()) => return,
                Err(msg) => {
                    let log = self.log();
                    if attempt < 3 && log.contains("address already in use") {
                        self.client = free_addr();
                        self.peer = free_addr();
                        continue;
                    }
                    panic!(
                        "{:?} server did not become ready: {msg}\ncommand: {}\n--- captured log ---\n{log}",
                        self.kind,
                        self.command_line()
                    );
                }
            }
        }
    }

    fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = format!("http://{}", self.peer);
        let mut a = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}={peer}", self.name),
            "--initial-cluster-state=new".to_string(),
            "--initial-cluster-token=cairn-test".to_string(),
        ];
        a.extend(self.extra_args.iter().cloned());
        a
    }

    fn command_line(&self) -> String {
        let mut s = self.kind.binary().display().to_string();
        for a in self.args() {
            s.push(' ');
            s.push_str(&a);
        }
        s
    }

    fn try_launch(&mut self) -> Result<(), String> {
        self.log.lock().unwrap().clear();
        let (child, rx) = spawn_server(self.kind, &self.args(), &self.log)?;
        self.child = Some(child);

        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Event::Ready) => Ok(()),
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stderr closed: the process is exiting; collect its status.
                let status = self.wait_exit(Duration::from_secs(5));
                self.kill_now();
                Err(format!("process exited before it was ready ({status:?})"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.kill_now();
                Err(format!("not ready within {READY_TIMEOUT:?}"))
            }
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Client URL, e.g. `http://127.3.4.5:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit; kills it if it does not
    /// exit in time. Returns the exit status and whether it exited on its own.
    pub fn stop(&mut self) -> Option<(ExitStatus, bool)> {
        let child = self.child.as_mut()?;
        if let Ok(Some(st)) = child.try_wait() {
            self.child = None;
            return Some((st, true));
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let graceful = self.wait_exit(STOP_TIMEOUT);
        let res = match graceful {
            Some(st) => Some((st, true)),
            None => {
                self.kill_now();
                None
            }
        };
        self.child = None;
        res
    }

    /// Stops the server (gracefully) and starts it again on the same data dir
    /// with the same name and flags; listens on new addresses.
    pub fn restart(&mut self) {
        let stopped = self.stop();
        assert!(
            matches!(stopped, Some((_, true))),
            "{:?} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- log ---\n{}",
            self.kind,
            self.log()
        );
        self.client = free_addr();
        self.peer = free_addr();
        self.launch();
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and starts it again on
    /// the same data dir; listens on new addresses.
    pub fn kill9_and_restart(&mut self) {
        self.kill_now();
        self.client = free_addr();
        self.peer = free_addr();
        self.launch();
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    fn kill_now(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = None;
    }

    fn etcdctl_command(&self, args: &[&str]) -> Command {
        etcdctl_command(&self.endpoint(), args)
    }

    /// Runs `etcdctl --endpoints=<this server> ARGS` (API v3).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_stdin(args, None)
    }

    /// Like [`Server::etcdctl`], feeding `stdin` to the process.
    pub fn etcdctl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.etcdctl_command(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn etcdctl");
        if let Some(input) = stdin {
            let mut w = child.stdin.take().unwrap();
            w.write_all(input.as_bytes()).expect("write etcdctl stdin");
        }
        child.wait_with_output().expect("wait etcdctl")
    }

    /// Runs etcdctl, asserts success and returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        check_ok(args, &out)
    }

    /// Runs etcdctl with stdin, asserts success and returns stdout.
    pub fn ctl_ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.etcdctl_stdin(args, Some(stdin));
        check_ok(args, &out)
    }

    /// Runs etcdctl, asserts failure and returns stderr.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            !out.status.success(),
            "etcdctl {args:?} unexpectedly succeeded\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs etcdctl with `-w json`, asserts success, parses stdout.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        let out = self.ctl_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("etcdctl {a:?}: bad JSON ({e}): {out}"))
    }
}

/// `etcdctl --endpoints=ENDPOINTS ARGS` (API v3, generous timeouts that later flags in
/// `args` override), with no `ETCD*` variables from our environment.
pub fn etcdctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(etcdctl_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ETCDCTL_") || k.starts_with("ETCD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=10s")
        .arg("--command-timeout=30s")
        .args(args);
    cmd
}

fn check_ok(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("etcdctl stdout is UTF-8")
}

fn spawn_reader<R: Read + Send + 'static>(
    r: R,
    log: Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<Event>>,
) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        let mut signalled = false;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line);
                    log.lock().unwrap().push_str(&s);
                    if !signalled && (s.contains(READY_MARKER) || s.contains(ETCD_ZAP_READY_MARKER)) {
                        signalled = true;
                        if let Some(tx) = &ready {
                            let _ = tx.send(Event::Ready);
                        }
                    }
                }
            }
        }
        if let Some(tx) = &ready {
            let _ = tx.send(Event::Eof);
        }
    });
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A server process started with exactly the given flags (none of [`Server`]'s standard
/// ones), e.g. a cluster member with TLS peer URLs or a `--config-file` start. Killed on drop.
pub struct RawServer {
    child: Option<Child>,
    ready: Option<mpsc::Receiver<Event>>,
    log: Arc<Mutex<String>>,
}

impl RawServer {
    /// Starts `kind` with `args`; [`RawServer::wait_ready`] waits until it serves.
    pub fn spawn(kind: Kind, args: &[String]) -> RawServer {
        let log = Arc::new(Mutex::new(String::new()));
        let (child, rx) = spawn_server(kind, args, &log).unwrap_or_else(|e| panic!("{e}"));
        RawServer { child: Some(child), ready: Some(rx), log }
    }

    /// Waits until the process logged that it is ready; panics with its log otherwise.
    pub fn wait_ready(&mut self) {
        let rx = self.ready.take().expect("wait_ready once");
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Event::Ready) => {}
            _ => panic!("server not ready within {READY_TIMEOUT:?}; its log:\n{}", self.log()),
        }
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Decodes standard base64 (as in etcdctl's JSON output).
pub fn b64decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => panic!("invalid base64 character {:?}", c as char),
        }
    }
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let n = chunk.len().saturating_sub(1);
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// `b64decode` as a UTF-8 string.
pub fn b64str(v: &serde_json::Value) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a base64 string: {v}"));
    String::from_utf8(b64decode(s)).expect("utf-8")
}

/// Process signals for the fault-injection suite (tests/linearizability.rs).
impl Server {
    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets open and answers nothing.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }
}

/// One plain HTTP/1.1 `GET path` at `addr` (`/health`, `/metrics`...), answered and closed by
/// the server: (status, head, body). Blocking: async tests call it on a multi-threaded
/// runtime, so the runtime's tasks (their connections) keep running meanwhile.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the HTTP URL");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    (status, head.to_owned(), body)
}

/// The body of a `Transfer-Encoding: chunked` response (Go's servers send large ones so).
fn dechunk(mut raw: &str) -> String {
    let mut body = String::new();
    loop {
        let Some((size, rest)) = raw.split_once("\r\n") else { return body };
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|e| panic!("chunk size {size:?}: {e}"));
        if size == 0 || rest.len() < size {
            return body;
        }
        body.push_str(&rest[..size]);
        raw = rest[size..].trim_start_matches("\r\n");
    }
}
