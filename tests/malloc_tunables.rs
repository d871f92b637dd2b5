//! The `cairn` binary starts itself again with a larger glibc per-thread cache
//! (`GLIBC_TUNABLES=glibc.malloc.tcache_count=128`, `src/main.rs`), keeping the tunables
//! it was given and an operator's own tcache count. cairn only (etcd is a Go program).

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_addr, wait_for, Kind};

/// A one-member server started with `tunables` as `GLIBC_TUNABLES` (unset: `None`),
/// serving once this returns; killed on drop.
struct Member {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Member {
    fn start(tunables: Option<&str>) -> Member {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_addr(), free_addr());
        let mut cmd = Command::new(Kind::Cairn.binary());
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(format!("http://{client}"))
            .arg("--advertise-client-urls")
            .arg(format!("http://{client}"))
            .arg("--listen-peer-urls")
            .arg(format!("http://{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{peer}"))
            .arg("--initial-cluster")
            .arg(format!("default=http://{peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match tunables {
            Some(t) => cmd.env("GLIBC_TUNABLES", t),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
        let child = cmd.spawn().expect("spawn cairn");
        let mut member = Member { child, _dir: dir };
        wait_for("the member to listen", Duration::from_secs(30), || {
            if let Ok(Some(status)) = member.child.try_wait() {
                panic!("cairn exited: {status}");
            }
            TcpStream::connect(client).ok()
        });
        member
    }

    /// The running process's environment variable `name` (same pid after the restart).
    /// glibc writes a NUL after each tunable's value it parsed in `GLIBC_TUNABLES`'s
    /// original bytes, so only its first tunable is seen here.
    fn env(&self, name: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.child.id())).expect("read environ");
        let prefix = format!("{name}=");
        environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

#[test]
fn the_server_runs_with_a_larger_thread_cache() {
    let m = Member::start(None);
    assert_eq!(m.env("GLIBC_TUNABLES").as_deref(), Some("glibc.malloc.tcache_count=128"));
    assert_eq!(m.env("CAIRN_MALLOC_TUNED").as_deref(), Some("1"), "restarted once");
}

#[test]
fn tunables_it_was_given_come_after_its_own() {
    let m = Member::start(Some("glibc.malloc.check=0"));
    assert_eq!(m.env("GLIBC_TUNABLES").as_deref(), Some("glibc.malloc.tcache_count=128"));
    assert_eq!(m.env("CAIRN_MALLOC_TUNED").as_deref(), Some("1"));
}

#[test]
fn an_operators_tcache_count_wins() {
    let m = Member::start(Some("glibc.malloc.tcache_count=7"));
    assert_eq!(m.env("GLIBC_TUNABLES").as_deref(), Some("glibc.malloc.tcache_count=7"));
    assert_eq!(m.env("CAIRN_MALLOC_TUNED"), None, "not restarted");
}
