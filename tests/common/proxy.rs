//! The network between cluster members, as the test owns it: one TCP forwarder in front of
//! each member's peer listener, so a test can cut and heal the links between members.
//!
//! # Design
//! Every member advertises its forwarder's address as its peer URL (in
//! `--initial-cluster` and `--initial-advertise-peer-urls`), and listens for peers on a
//! private address only its forwarder connects to. So every byte one member sends another
//! goes through the forwarder of the receiving member.
//!
//! A forwarder sees many senders on one address, so it finds out which member opened each
//! connection from the operating system: the accepted socket's remote address is the
//! sender's local address, `/proc/net/tcp` maps that to a socket inode, and the inode is
//! among the open files (`/proc/<pid>/fd`) of exactly one member process. This works for any
//! peer protocol (etcd's HTTP streams, cairn's gRPC) without parsing it. A connection whose
//! sender socket is gone by the time it is accepted (a killed member's last connections sit
//! in the accept queue) is closed and counted in [`Stats::vanished`]; one whose sender is a
//! live process that is not a member is forwarded and counted in [`Stats::unidentified`],
//! so a test can check that none slipped past a partition.
//!
//! Links are undirected: a TCP connection carries both directions, so cutting the link
//! between `a` and `b` cuts every connection a→b and b→a. [`Links::partition`] cuts every
//! link between two groups; [`Links::heal`] restores all of them. A cut closes the link's
//! existing connections at once; new connections on a cut link are, by [`CutMode`], closed
//! right after accept (like a refused connection) or held open and never answered (like a
//! network that drops every packet) until the heal closes them.
//!
//! Plain std threads: an accept thread per forwarder and two copy threads per connection.
//! A cluster has tens of peer connections, and blocking copies keep a cut simple (shut the
//! sockets down and the copies end). Linux only (it reads `/proc`).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a cut link does with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Close it right after accept: the sender sees the connection reset or closed.
    Refuse,
    /// Keep it open, never read from it or answer: the sender's requests time out.
    Blackhole,
}

/// Connection counts since the forwarders started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections forwarded to a member.
    pub forwarded: u64,
    /// Connections closed or held because their link was cut (at accept or later).
    pub cut: u64,
    /// Connections from a live process that is not a member (forwarded).
    pub unidentified: u64,
    /// Connections whose sender had closed its end before it could be identified (closed).
    pub vanished: u64,
}

/// The forwarders of one cluster. Dropping it closes every forwarder and connection.
pub struct Links {
    inner: Arc<Inner>,
}

struct Inner {
    /// Guards everything the forwarders decide on; held only for bookkeeping, never
    /// across a blocking connect or read.
    state: Mutex<State>,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Per member: the forwarder's address, the member's private peer address, its pid.
    members: Vec<MemberLink>,
    /// Cut links as (low, high) member indexes.
    cut: HashSet<(usize, usize)>,
    mode: Option<CutMode>,
    /// Live forwarded connections by id.
    conns: HashMap<u64, Conn>,
    next_id: u64,
    /// Black-holed connections, closed at the heal.
    held: Vec<TcpStream>,
    stats: Stats,
    /// The first unidentified connections, described.
    foreign: Vec<String>,
}

struct MemberLink {
    proxy: SocketAddr,
    target: SocketAddr,
    pid: Option<u32>,
}

struct Conn {
    from: Option<usize>,
    to: usize,
    sockets: [TcpStream; 2],
}

impl Conn {
    fn close(&self) {
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn link(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl State {
    fn is_cut(&self, from: Option<usize>, to: usize) -> bool {
        from.is_some_and(|f| self.cut.contains(&link(f, to)))
    }
}

impl Default for Links {
    fn default() -> Self {
        Links::new()
    }
}

impl Links {
    pub fn new() -> Links {
        Links {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Starts a forwarder for a new member whose peer listener is (or will be) at
    /// `target`; returns the member's index and the forwarder's address (the peer URL the
    /// member must advertise). The forwarder listens on `proxy`.
    pub fn add_member(&self, proxy: SocketAddr, target: SocketAddr) -> io::Result<usize> {
        let listener = TcpListener::bind(proxy)?;
        let proxy = listener.local_addr()?;
        let member = {
            let mut st = self.inner.state.lock().unwrap();
            st.members.push(MemberLink {
                proxy,
                target,
                pid: None,
            });
            st.members.len() - 1
        };
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name(format!("proxy-m{member}"))
            .spawn(move || accept_loop(inner, listener, member))?;
        Ok(member)
    }

    /// The address member `m`'s forwarder listens on.
    pub fn proxy_addr(&self, m: usize) -> SocketAddr {
        self.inner.state.lock().unwrap().members[m].proxy
    }

    /// Records which process is member `m` now (`None` while it is down).
    pub fn set_pid(&self, m: usize, pid: Option<u32>) {
        self.inner.state.lock().unwrap().members[m].pid = pid;
    }

    /// Cuts every link between a member of `a` and a member of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize], mode: CutMode) {
        let mut st = self.inner.state.lock().unwrap();
        for &x in a {
            for &y in b {
                if x != y {
                    st.cut.insert(link(x, y));
                }
            }
        }
        st.mode = Some(mode);
        let doomed: Vec<u64> = st
            .conns
            .iter()
            .filter(|(_, c)| st.is_cut(c.from, c.to))
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            if let Some(c) = st.conns.remove(&id) {
                c.close();
                st.stats.cut += 1;
            }
        }
    }

    /// Cuts every link between `m` and the other members.
    pub fn isolate(&self, m: usize, mode: CutMode) {
        let others: Vec<usize> = {
            let n = self.inner.state.lock().unwrap().members.len();
            (0..n).filter(|&x| x != m).collect()
        };
        self.partition(&[m], &others, mode);
    }

    /// Restores every link; closes the black-holed connections (their senders reconnect).
    pub fn heal(&self) {
        let mut st = self.inner.state.lock().unwrap();
        st.cut.clear();
        st.mode = None;
        for s in st.held.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// The links cut now, as (low, high) member index pairs.
    pub fn cut_links(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self
            .inner
            .state
            .lock()
            .unwrap()
            .cut
            .iter()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// The first few connections counted in [`Stats::unidentified`], described.
    pub fn unidentified(&self) -> Vec<String> {
        self.inner.state.lock().unwrap().foreign.clone()
    }

    pub fn stats(&self) -> Stats {
        self.inner.state.lock().unwrap().stats
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let mut st = self.inner.state.lock().unwrap();
        for (_, c) in st.conns.drain() {
            c.close();
        }
        for s in st.held.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // wake each accept loop so it sees `closed` and drops its listener
        for m in &st.members {
            let _ = TcpStream::connect_timeout(&m.proxy, Duration::from_millis(200));
        }
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener, to: usize) {
    for stream in listener.incoming() {
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let inner = inner.clone();
        // identifying the sender reads /proc: not on the accept thread
        let _ = std::thread::Builder::new()
            .name(format!("proxy-m{to}-conn"))
            .spawn(move || handle(inner, stream, to));
    }
}

fn handle(inner: Arc<Inner>, client: TcpStream, to: usize) {
    let target = inner.state.lock().unwrap().members[to].target;
    let from = match (client.peer_addr(), client.local_addr()) {
        (Ok(peer), Ok(local)) => sender(&inner, peer, local),
        _ => Sender::Gone,
    };
    let from = match from {
        Sender::Member(m) => Some(m),
        Sender::Foreign(what) => {
            let mut st = inner.state.lock().unwrap();
            st.stats.unidentified += 1;
            if st.foreign.len() < 20 {
                st.foreign.push(format!("to m{to}: {what}"));
            }
            None
        }
        Sender::Gone => {
            inner.state.lock().unwrap().stats.vanished += 1;
            return;
        }
    };
    {
        let mut st = inner.state.lock().unwrap();
        if st.is_cut(from, to) {
            st.stats.cut += 1;
            if st.mode == Some(CutMode::Blackhole) {
                st.held.push(client);
            }
            return;
        }
    }
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return; // the member is down: the sender sees the connection closed
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let clones = (|| Ok::<_, io::Error>((client.try_clone()?, upstream.try_clone()?)))();
    let Ok((client2, upstream2)) = clones else {
        return;
    };
    let id = {
        let mut st = inner.state.lock().unwrap();
        // the link may have been cut while we connected
        if st.is_cut(from, to) || inner.closed.load(Ordering::SeqCst) {
            st.stats.cut += 1;
            return;
        }
        st.stats.forwarded += 1;
        let id = st.next_id;
        st.next_id += 1;
        let sockets = [client.try_clone(), upstream.try_clone()];
        if let [Ok(a), Ok(b)] = sockets {
            st.conns.insert(
                id,
                Conn {
                    from,
                    to,
                    sockets: [a, b],
                },
            );
        }
        id
    };
    let inner2 = inner.clone();
    let _ = std::thread::Builder::new()
        .name(format!("proxy-m{to}-up"))
        .spawn(move || pump(inner2, id, client, upstream));
    pump(inner, id, upstream2, client2);
}

/// Copies `from` into `to` until either ends, then closes both (which ends the other
/// direction's copy too) and forgets the connection.
fn pump(inner: Arc<Inner>, id: u64, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    inner.state.lock().unwrap().conns.remove(&id);
}

/// Who opened a connection.
enum Sender {
    Member(usize),
    /// A live socket no member process has open (described).
    Foreign(String),
    /// No live socket at the other end any more (closed, or its process died).
    Gone,
}

/// Which member opened the connection that reached `local` from `peer`: finds the
/// socket whose local end is `peer` in /proc/net/tcp{,6} and the member process that has
/// it open. Retried a few times over ~60 ms with fresh pids: the table can lag a
/// just-established connection, and a member being killed loses its fd table a moment
/// before its sockets close (then the socket is gone on the next try).
fn sender(inner: &Inner, peer: SocketAddr, local: SocketAddr) -> Sender {
    let mut foreign = None;
    for attempt in 0..4u64 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(10 * attempt));
        }
        let pids: Vec<(usize, u32)> = {
            let st = inner.state.lock().unwrap();
            let live = st.members.iter().enumerate();
            live.filter_map(|(i, m)| m.pid.map(|p| (i, p))).collect()
        };
        let Some(inode) = socket_inode(peer, local) else {
            foreign = None;
            continue;
        };
        let needle = format!("socket:[{inode}]");
        for &(member, pid) in &pids {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in dir.flatten() {
                if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == needle.as_str()) {
                    return Sender::Member(member);
                }
            }
        }
        foreign = Some(format!("{peer} (socket inode {inode}; members {pids:?})"));
    }
    match foreign {
        Some(what) => Sender::Foreign(what),
        None => Sender::Gone,
    }
}

fn socket_inode(local_end: SocketAddr, remote_end: SocketAddr) -> Option<u64> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            if parse_proc_addr(f[1]) == Some(local_end) && parse_proc_addr(f[2]) == Some(remote_end)
            {
                return f[9].parse().ok().filter(|&i| i != 0);
            }
        }
    }
    None
}

/// Parses `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6) as the kernel prints
/// them: each 32-bit word in host byte order. IPv4-mapped IPv6 becomes IPv4.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
