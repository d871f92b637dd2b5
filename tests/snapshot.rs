//! Backups: `etcdctl snapshot save` against cairn while clients keep writing; the saved
//! file (an etcd db and its SHA-256) verifies and holds a consistent point in time: every
//! write acknowledged before the save began, nothing half-applied. Restored with `cairn
//! snapshot restore` into a new cluster, it gives back every kept revision, the leases,
//! the users and roles and the alarms; a truncated or altered file is refused.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_proto::mvccpb::KeyValue;
use cairn_storage::backend::Bucket;
use cairn_storage::etcd_db::import_snapshot;
use cairn_storage::snapshot::read_snapshot;
use common::cluster::{MemberOptions, ProcCluster};
use common::{Kind, Server};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, GetOptions, PutOptions};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_under_write_load() {
    let s = Server::start(Kind::Cairn);
    let mut c = Client::connect([s.endpoint()], None).await.expect("connect");
    let value = vec![b'v'; 1024];
    for i in 0..3000u64 {
        c.put(format!("/pre/{i:05}"), value.clone(), None).await.expect("put");
    }
    // four writers keep going during the save
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (mut c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                c.put(format!("/load/{w}/{i:06}"), "x", None).await.expect("put under a snapshot");
                acked.fetch_add(1, Ordering::AcqRel);
                i += 1;
            }
        }));
    }
    // let the writers get going
    while acked.load(Ordering::Acquire) < 200 {
        tokio::task::yield_now().await;
    }
    let before = acked.load(Ordering::Acquire);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.db");
    let path = file.to_str().expect("utf-8 path").to_owned();
    let out = {
        let endpoint = s.endpoint();
        let path = path.clone();
        tokio::task::spawn_blocking(move || common::etcdctl_command(&endpoint, &["snapshot", "save", &path]).output()).await.expect("etcdctl task").expect("run etcdctl")
    };
    let after_save = acked.load(Ordering::Acquire);
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.expect("writer");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "etcdctl snapshot save: {out:?}");
    assert!(stdout.contains(&format!("Snapshot saved at {path}")), "{stdout}");
    assert!(after_save > before, "the writers went on during the save ({before} -> {after_save})");

    let data = std::fs::read(&file).expect("read the backup");
    let imported = import_snapshot(data).expect("the saved file verifies");
    assert!(imported.had_hash, "etcd's SHA-256 trailer");
    let entries = read_snapshot(&mut imported.snapshot.as_slice()).expect("the imported stream");
    let mut pre = 0;
    let mut load = 0;
    for (bucket, _, v) in &entries {
        if *bucket != Bucket::Key {
            continue;
        }
        let kv = KeyValue::decode(v.as_slice()).expect("a stored key-value");
        if kv.key.starts_with(b"/pre/") {
            pre += 1;
        } else if kv.key.starts_with(b"/load/") {
            load += 1;
        }
    }
    assert_eq!(pre, 3000, "every write before the load is in the backup");
    assert!(load >= before && load <= acked.load(Ordering::Acquire), "{load} load writes in the backup: at least the {before} acknowledged before the save");
}

/// Every key at `rev` as (key, value, create, mod, version, lease), or the error's text.
async fn all_at(c: &mut Client, rev: i64) -> Result<Vec<(Vec<u8>, Vec<u8>, i64, i64, i64, i64)>, String> {
    let r = c.get("", Some(GetOptions::new().with_prefix().with_revision(rev))).await.map_err(|e| e.to_string())?;
    Ok(r.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.create_revision(), kv.mod_revision(), kv.version(), kv.lease())).collect())
}

async fn leases(c: &mut Client) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for l in c.leases().await.expect("lease list").leases() {
        let ttl = c.lease_time_to_live(l.id(), None).await.expect("time to live");
        out.push((l.id(), ttl.granted_ttl()));
    }
    out.sort();
    out
}

/// Users, roles and alarms as `etcdctl` lists them from member `i`.
fn auth_and_alarms(c: &ProcCluster, i: usize) -> Vec<String> {
    ["user list", "role list", "user get alice", "role get reader", "alarm list"]
        .iter()
        .map(|args| c.ctl_ok(i, &args.split(' ').collect::<Vec<_>>()))
        .collect()
}

/// A three-member cluster's history (puts, deletes, a lease with keys, a compaction,
/// users and roles, a NOSPACE alarm) is saved with etcdctl, restored with `cairn snapshot
/// restore` into three new data folders, and a new three-member cluster started on them
/// answers every kept revision and lists the lease, the users, roles and the alarm exactly
/// as the old one; a truncated or altered file is refused, leaving no data folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_a_three_member_backup_into_a_new_cluster() {
    let old = ProcCluster::start(Kind::Cairn, 3);
    let mut c = Client::connect([old.endpoint(0)], None).await.expect("connect");
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    c.put("a", "1", None).await.expect("put");
    c.put("b", "1", None).await.expect("put");
    c.put("c", "1", Some(PutOptions::new().with_lease(lease))).await.expect("put");
    c.put("a", "2", None).await.expect("put");
    c.delete("b", None).await.expect("delete");
    let compact = c.put("d", "1", None).await.expect("put").header().expect("header").revision();
    c.put("a", "3", None).await.expect("put");
    c.compact(compact, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    c.put("e", "1", Some(PutOptions::new().with_lease(lease))).await.expect("put");
    c.delete("c", None).await.expect("delete");
    let last = c.put("a", "4", None).await.expect("put").header().expect("header").revision();
    for args in [
        &["user", "add", "alice", "--new-user-password=secret"][..],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "a", "--prefix=true"],
        &["user", "grant-role", "alice", "reader"],
    ] {
        old.ctl_ok(0, args);
    }
    let mut alarm = AlarmOptions::new();
    alarm.with_member(old.member_id(0).expect("member id"));
    c.alarm(AlarmAction::Activate, AlarmType::Nospace, Some(alarm)).await.expect("raise an alarm");
    let auth_before = auth_and_alarms(&old, 0);
    assert!(auth_before[4].contains("NOSPACE"), "{auth_before:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.db");
    let path = file.to_str().expect("utf-8 path");
    let out = old.ctl_ok(1, &["snapshot", "save", path]);
    assert!(out.contains("Snapshot saved at"), "{out}");

    let restore = |file: &str, data_dir: &std::path::Path| {
        std::process::Command::new(Kind::Cairn.binary())
            .args(["snapshot", "restore", file, "--data-dir", data_dir.to_str().expect("utf-8 path")])
            .output()
            .expect("run cairn snapshot restore")
    };
    // a truncated or altered backup is refused and leaves nothing behind
    let data = std::fs::read(&file).expect("read the backup");
    let bad = dir.path().join("bad.db");
    let bad_dir = dir.path().join("bad");
    for broken in [data[..data.len() - 100].to_vec(), { let mut d = data.clone(); d[40] ^= 1; d }] {
        std::fs::write(&bad, &broken).expect("write");
        let out = restore(bad.to_str().expect("utf-8 path"), &bad_dir);
        assert!(!out.status.success(), "a broken backup is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("SHA-256") || err.contains("truncated"), "a clear error: {err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert!(!bad_dir.exists() && left.len() == 2, "no data folder, no temporary folder: {left:?}");
    }

    let mut options = Vec::new();
    for i in 0..3 {
        let data_dir = dir.path().join(format!("new{i}"));
        let out = restore(path, &data_dir);
        assert!(out.status.success(), "cairn snapshot restore: {out:?}");
        options.push((i, MemberOptions { data_dir: Some(data_dir), ..Default::default() }));
    }
    let new = ProcCluster::start_with(Kind::Cairn, 3, &options);
    assert_ne!(new.member_id(0), old.member_id(0), "a new membership");
    let mut before = Client::connect([old.endpoint(0)], None).await.expect("connect");
    for i in 0..3 {
        let mut after = Client::connect([new.endpoint(i)], None).await.expect("connect");
        for rev in compact..=last {
            assert_eq!(all_at(&mut after, rev).await, all_at(&mut before, rev).await, "member {i} at revision {rev}");
        }
        let compacted = all_at(&mut after, compact - 1).await.expect_err("below the compaction");
        assert!(compacted.contains("required revision has been compacted"), "{compacted}");
        assert_eq!(leases(&mut after).await, leases(&mut before).await, "member {i}'s leases");
        assert_eq!(auth_and_alarms(&new, i), auth_before, "member {i}'s users, roles and alarms");
    }
    new.ctl_ok(0, &["alarm", "disarm"]);
    // the new cluster takes writes after the restored history
    let next = Client::connect([new.endpoint(2)], None).await.expect("connect").put("f", "1", None).await.expect("put");
    assert_eq!(next.header().expect("header").revision(), last + 1);
}

/// Runs `cmd` to its end with its output in files; returns whether it succeeded, its
/// stdout and stderr, and its peak resident set in bytes.
///
/// The peak is `ru_maxrss` from `wait4`, the kernel's high-water mark of the child's RSS
/// taken when it exits (no sample can miss it), unless that number may be ours: the
/// child is started with `vfork` (`posix_spawn`), and `exec` records the high-water mark
/// of the memory it leaves, the test process's, in the child's `ru_maxrss` too. After a
/// panic elsewhere in this binary had symbolized a backtrace (the test process at 131 MB),
/// every child "peaked" at that. So when `ru_maxrss` is not above our own high-water mark,
/// the peak is the child's own `VmHWM`, read from /proc every 5 ms while it runs.
fn run_with_peak_rss(cmd: &mut std::process::Command, dir: &std::path::Path) -> (bool, String, String, u64) {
    let (out, err) = (dir.join("cmd.out"), dir.join("cmd.err"));
    let child = cmd
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let (done, sampled) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, sampled) = (done.clone(), sampled.clone());
        let status = format!("/proc/{}/status", child.id());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if let Some(hwm) = std::fs::read_to_string(&status).ok().as_deref().and_then(vm_hwm) {
                    sampled.fetch_max(hwm, Ordering::AcqRel);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, wait4 writes it for our own child
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child's, not yet waited for; both pointers are valid
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    done.store(true, Ordering::Release);
    sampler.join().expect("sampler");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let read = |p| std::fs::read_to_string(p).expect("read output");
    let maxrss = usage.ru_maxrss as u64 * 1024;
    let ours = std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(vm_hwm).unwrap_or(u64::MAX);
    let peak = if maxrss > ours { maxrss } else { sampled.load(Ordering::Acquire) };
    // a child that ran long enough to be measured holds some memory: no sample at all
    // would make every bound pass
    assert!(peak > 0, "no RSS sample of the child (ru_maxrss {maxrss}, ours {ours})");
    (ok, read(&out), read(&err), peak)
}

/// The `VmHWM` (peak resident set) of a /proc/PID/status text, in bytes.
fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `cairn snapshot status` and `restore` of a ~200 MB backup stay in bounded memory:
/// their peak RSS stays under 120 MiB, well under the file (measured 2026-12-05: ~7 MB for
/// status, ~32 MB for restore) (they verify the SHA-256 a
/// MiB at a time, read bbolt pages as the walk reaches them and commit the new store
/// every 8 MiB); the restored member serves the last value and revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_restore_of_a_large_backup_in_bounded_memory() {
    const VALUES: u64 = 192;
    const VALUE_SIZE: usize = 1 << 20;
    let s = Server::start(Kind::Cairn);
    let c = Client::connect([s.endpoint()], None).await.expect("connect");
    // incompressible values (xorshift), four writers
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let mut c = c.clone();
        writers.push(tokio::spawn(async move {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ w;
            for i in (w..VALUES).step_by(4) {
                let value: Vec<u8> = (0..VALUE_SIZE / 8)
                    .flat_map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x.to_le_bytes()
                    })
                    .collect();
                c.put(format!("/big/{i:04}"), value, None).await.expect("put");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let last = c.clone().get("/big/0191", None).await.expect("get");
    let last_value = last.kvs()[0].value().to_vec();
    let revision = last.header().expect("header").revision();

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("big.db");
    let path = file.to_str().expect("utf-8 path").to_owned();
    let out = s.etcdctl(&["snapshot", "save", &path]);
    assert!(out.status.success(), "etcdctl snapshot save: {out:?}");
    let size = std::fs::metadata(&file).expect("the backup").len();
    assert!(size > VALUES * VALUE_SIZE as u64, "a backup of {size} bytes");
    // a few MiB of the command's own, plus what the new store holds when it opens: its
    // page store's node cache (up to 64 MiB) and key index; the whole file was 2x before
    let bound = 120 << 20;
    assert!(bound < size * 2 / 3);

    let (ok, stdout, stderr, peak) =
        run_with_peak_rss(std::process::Command::new(Kind::Cairn.binary()).args(["snapshot", "status", &path, "-w", "json"]), dir.path());
    assert!(ok, "cairn snapshot status: {stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("json status");
    assert_eq!(status["revision"], revision, "{stdout}");
    assert!(peak < bound, "snapshot status of {size} bytes peaked at {peak} bytes of RSS");
    eprintln!("snapshot status: {size}-byte file, peak RSS {peak} bytes");

    let data_dir = dir.path().join("restored");
    let (ok, _, stderr, peak) = run_with_peak_rss(
        std::process::Command::new(Kind::Cairn.binary()).args(["snapshot", "restore", &path, "--data-dir", data_dir.to_str().expect("utf-8 path")]),
        dir.path(),
    );
    assert!(ok, "cairn snapshot restore: {stderr}");
    assert!(peak < bound, "snapshot restore of {size} bytes peaked at {peak} bytes of RSS");
    eprintln!("snapshot restore: {size}-byte file, peak RSS {peak} bytes");

    let restored = Server::start_with(Kind::Cairn, common::Options { data_dir: Some(data_dir), ..Default::default() });
    let mut c = Client::connect([restored.endpoint()], None).await.expect("connect");
    let got = c.get("/big/0191", None).await.expect("get");
    assert_eq!(got.header().expect("header").revision(), revision);
    assert!(got.kvs()[0].value() == last_value.as_slice(), "the last value, restored");
    assert_eq!(c.get("/big/", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count").count(), VALUES as i64);
}
