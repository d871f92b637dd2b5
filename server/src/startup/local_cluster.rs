//! `cairn cluster --size N [--data-dir DIR]`: a local cluster for trying cairn, N members on
//! loopback started as child processes of this one (member i serves clients on
//! 127.0.0.1:{2379, 12379, 22379, ...} and peers on 127.0.0.1:{2380, 12380, 22380, ...}),
//! each with its data in `DIR/m<i>` (default `cairn-cluster.data`). Ctrl-C or SIGTERM stops
//! every member; when one member exits, the others are stopped too.

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "usage: cairn cluster [--size N] [--data-dir DIR]  (N = 1..=7, default 3)";

/// The client and peer ports of member `i` (0-based).
pub fn ports(i: usize) -> (u16, u16) {
    let base = if i == 0 { 2379 } else { 2379 + 10_000 * i as u16 };
    (base, base + 1)
}

fn parse(args: &[String]) -> Result<(usize, PathBuf), String> {
    let mut size = 3;
    let mut dir = PathBuf::from("cairn-cluster.data");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("{flag} needs a value"));
        match flag {
            "--size" => size = value()?.parse().map_err(|_| "--size takes a number".to_owned())?,
            "--data-dir" => dir = PathBuf::from(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !(1..=7).contains(&size) {
        return Err("--size must be between 1 and 7".into());
    }
    Ok((size, dir))
}

/// The flags of member `i` of an `n`-member local cluster.
pub fn member_args(i: usize, n: usize, dir: &std::path::Path) -> Vec<String> {
    let initial: Vec<String> =
        (0..n).map(|j| format!("m{}=http://127.0.0.1:{}", j + 1, ports(j).1)).collect();
    let (client, peer) = ports(i);
    vec![
        format!("--name=m{}", i + 1),
        format!("--data-dir={}", dir.join(format!("m{}", i + 1)).display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster={}", initial.join(",")),
        "--initial-cluster-token=cairn-local-cluster".into(),
        "--initial-cluster-state=new".into(),
    ]
}

fn stop_all(children: &mut [Child]) {
    for c in children.iter() {
        if let Ok(pid) = i32::try_from(c.id()) {
            // SIGTERM: each member drains and stops cleanly
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

/// Runs the local cluster (see the module docs); `args` follow `cluster`.
pub fn main(args: &[String]) -> ExitCode {
    let (n, dir) = match parse(args) {
        Ok(v) => v,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("cairn cluster: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cairn cluster: cannot find the cairn binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut children = Vec::new();
    for i in 0..n {
        match Command::new(&exe).args(member_args(i, n, &dir)).spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                eprintln!("cairn cluster: cannot start member m{}: {e}", i + 1);
                stop_all(&mut children);
                return ExitCode::FAILURE;
            }
        }
    }
    let endpoints: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", ports(i).0)).collect();
    eprintln!("cairn cluster: {n} members; try  etcdctl --endpoints={} member list", endpoints.join(","));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let signals = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| {
        std::thread::spawn(move || {
            rt.block_on(async {
                let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
                match term {
                    Ok(mut term) => tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    },
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        })
    });
    if signals.is_err() {
        eprintln!("cairn cluster: cannot watch signals; stop the members with kill");
    }
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if children.iter_mut().any(|c| matches!(c.try_wait(), Ok(Some(_)))) {
            eprintln!("cairn cluster: a member exited; stopping the others");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_all(&mut children);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_etcds_procfile() {
        assert_eq!(ports(0), (2379, 2380));
        assert_eq!(ports(1), (12379, 12380));
        assert_eq!(ports(2), (22379, 22380));
    }

    #[test]
    fn flags_name_every_member() {
        let a = member_args(1, 3, std::path::Path::new("/x"));
        assert!(a.contains(&"--name=m2".to_owned()));
        assert!(a.contains(&"--data-dir=/x/m2".to_owned()));
        assert!(a.iter().any(|f| f
            == "--initial-cluster=m1=http://127.0.0.1:2380,m2=http://127.0.0.1:12380,m3=http://127.0.0.1:22380"));
        assert_eq!(parse(&["--size".into(), "5".into()]).unwrap().0, 5);
        assert_eq!(parse(&["--size=1".into()]).unwrap().0, 1);
        assert!(parse(&["--size=0".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
